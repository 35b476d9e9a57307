//! HTTP edge: routes from every resource module merged into one router, the layers every
//! request passes through, the probes, and the OpenAPI document.
//!
//! Every public and admin route is registered through `utoipa_axum`, so the router and the
//! OpenAPI document come from the same declarations and cannot drift. Request logs carry the
//! method, the route's path and a request id, never the query string (it may hold the
//! webhook token) nor sensitive headers.

pub mod auth;
pub mod error;
pub mod server;

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{MatchedPath, State};
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ApiError;
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Enricher",
        description = "Enriches CRM leads with person data, paying each provider at most once per person. \
                       Metrics are served separately, on the metrics port, at GET /metrics."
    ),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // The webhook secret is required, in the header or the query: two alternatives,
        // never "none" (an empty requirement would read as optional).
        components.add_security_scheme(
            "webhook_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Webhook-Token"))),
        );
        components.add_security_scheme(
            "webhook_token_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("token"))),
        );
    }
}

/// The routes and their OpenAPI document, from the same declarations. The sandbox route is
/// documented always; it answers 404 when the sandbox is off.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(sandbox_messages))
        .merge(crate::intake::router())
        .merge(crate::operators::router())
        .split_for_parts()
}

/// The OpenAPI document of every public and admin route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.settings.server.request_timeout_secs);
    let (routes, doc) = routes();
    let doc = std::sync::Arc::new(doc);
    routes
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response()
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let path = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "unmatched".to_owned());
                let id = req
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                tracing::info_span!("request", method = %req.method(), path, request_id = id)
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_unusable_request_id))
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::header::COOKIE,
            HeaderName::from_static("x-webhook-token"),
        ]))
}

/// Longest client `x-request-id` kept; longer ones are replaced by a generated id.
const MAX_REQUEST_ID: usize = 128;

/// Drops a client's `x-request-id` that is too long or holds characters beyond
/// `[A-Za-z0-9._:-]`, so the id layer generates one: the id is echoed and written in every
/// log line of the request, and a 60 KB or line-breaking id must not be.
async fn drop_unusable_request_id<B>(mut req: Request<B>) -> Request<B> {
    let usable = req.headers().get(&REQUEST_ID).is_none_or(|v| {
        let v = v.as_bytes();
        !v.is_empty()
            && v.len() <= MAX_REQUEST_ID
            && v.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
    });
    if !usable {
        req.headers_mut().remove(&REQUEST_ID);
    }
    req
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/health", tag = "probes", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Postgres: whether this instance hears other instances' cache invalidations
    /// (`listening`) or is subscribing again after losing them (`reconnecting`, its memory
    /// dropped meanwhile); absent on SQLite, which serves one instance only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalidations: Option<&'static str>,
    /// Providers whose circuit breaker is not closed, with its state (`open`, `half_open`):
    /// work for them is parked, not failed. Informational: readiness depends on the
    /// database only, so an outage of a provider does not take the service out of rotation.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub circuits: std::collections::BTreeMap<&'static str, &'static str>,
}

/// Ready: the database answers and every migration is applied.
#[utoipa::path(get, path = "/ready", tag = "probes",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let circuits: std::collections::BTreeMap<_, _> = state
        .guards
        .iter()
        .map(|g| (g.provider(), g.state()))
        .filter(|(_, s)| *s != crate::providers::guard::BreakerState::Closed)
        .map(|(p, s)| (p, s.as_str()))
        .collect();
    let not_ready = |reason| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "not_ready",
                database: None,
                reason: Some(reason),
                invalidations: None,
                circuits: circuits.clone(),
            }),
        )
    };
    match state.store.ready().await {
        Ok(true) => (
            StatusCode::OK,
            Json(Readiness {
                status: "ready",
                database: Some(state.store.backend()),
                reason: None,
                invalidations: match state.resolver.listener().get() {
                    crate::resolution::invalidation::ListenerState::Off => None,
                    other => Some(other.as_str()),
                },
                circuits,
            }),
        ),
        Ok(false) => not_ready("migrations not applied"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            not_ready("database unreachable")
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxMessages {
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<crate::providers::sandbox::SandboxMessage>,
}

/// What the simulated CRM received, oldest first; 404 unless the sandbox runs.
#[utoipa::path(get, path = "/sandbox/messages", tag = "sandbox",
    responses((status = 200, body = SandboxMessages), (status = 404, description = "the sandbox is off")))]
async fn sandbox_messages(
    State(state): State<AppState>,
) -> Result<Json<SandboxMessages>, ApiError> {
    let sandbox = state.sandbox.as_ref().ok_or(ApiError::NotFound)?;
    Ok(Json(SandboxMessages {
        messages: sandbox.messages(),
    }))
}
