//! The operators' surface: cache control, events, erasure, forced refresh (all behind the
//! admin token) and the metrics endpoint on its own port.
//!
//! Without a configured admin token the admin routes answer 404, as if absent: never open.
//! Handlers here are thin: they validate input, call the operation in [`crate::admin`] (which
//! the command line and tests call too) and shape its answer, printing personal data masked
//! unless asked to reveal it.

pub mod cache;
pub mod events;
pub mod leads;
pub mod parties;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

use crate::http::auth::secret_matches;
use crate::http::error::{ApiError, ApiResult};
use crate::metrics::Snapshot;
use crate::state::AppState;

/// Every admin route, with its OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(cache::router())
        .merge(events::router())
        .merge(parties::router())
        .merge(leads::router())
}

/// Proof that the request carried the admin bearer token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let Some(expected) = &state.settings.admin.token else {
            // Disabled, not open: indistinguishable from a route that does not exist.
            return Err(ApiError::NotFound);
        };
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(token) if secret_matches(expected, token) => Ok(Admin),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// The metrics port's router: `GET /metrics` only.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Prometheus text exposition, with gauges read from their sources at scrape time.
async fn metrics(State(state): State<AppState>) -> Response {
    let (cache_entries, cache_weighted_bytes) = state.resolver.cache_usage().await;
    // A scrape during a database outage still answers, with the inbox gauges at zero.
    let inbox = state.store.event_counts().await.unwrap_or_default();
    let negative_entries = state.store.count_negatives().await.unwrap_or_default();
    let text = state.metrics.render(&Snapshot {
        cache_entries,
        cache_weighted_bytes,
        negative_entries,
        inbox,
        circuits: state
            .guards
            .iter()
            .map(|g| (g.provider(), g.state().as_str()))
            .collect(),
    });
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// An admin route's answer to a store failure: logged here, a bare 503 to the client.
pub(crate) fn unavailable(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store error in an admin route");
    ApiError::Unavailable
}

/// An operator action's failure as the client sees it; store details are logged, not sent.
impl From<crate::admin::AdminError> for ApiError {
    fn from(e: crate::admin::AdminError) -> ApiError {
        match e {
            crate::admin::AdminError::NotFound => ApiError::NotFound,
            crate::admin::AdminError::Conflict(why) => ApiError::Conflict(why),
            crate::admin::AdminError::Store(e) => unavailable(e),
        }
    }
}

/// Masks a name for display: first letter of each word.
pub(crate) fn mask_name(name: &str) -> String {
    name.split_whitespace()
        .map(|w| {
            let first: String = w.chars().take(1).collect();
            format!("{first}***")
        })
        .collect::<Vec<_>>()
        .join(" ")
}
