//! `/api/v1/events`: list inbox events by state and put dead ones back in the queue.
//!
//! A replayed event keeps its rendered message, so it posts the same text without paying the
//! providers again, and it still posts at most once: only dead events (never delivered) can
//! be replayed.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, unavailable};
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::{EventRecord, EventState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(replay_one))
        .routes(routes!(replay_all))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// pending, processing, done or dead; all when absent.
    pub state: Option<String>,
    /// At most this many, newest first (default 50, at most 500).
    pub limit: Option<u32>,
}

/// One inbox event as operators see it (no payload: it holds personal data).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    pub source: String,
    pub lead_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub event_at: OffsetDateTime,
    pub action: String,
    pub state: String,
    pub attempts: i32,
    pub outcome: Option<String>,
    /// Why the last attempt failed, or why the event is dead.
    pub reason: Option<String>,
    pub delivered: bool,
}

impl From<EventRecord> for EventView {
    fn from(e: EventRecord) -> Self {
        EventView {
            id: e.id,
            source: e.source,
            lead_id: e.lead_id,
            event_at: e.event_at,
            action: e.action,
            state: e.state.to_string(),
            attempts: e.attempts,
            outcome: e.outcome.map(|o| o.to_string()),
            reason: e.last_error,
            delivered: e.delivered,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
}

/// Inbox events by state, newest first, with reasons and attempt counts.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(ListQuery), security(("admin" = [])),
    responses((status = 200, body = EventList), (status = 401), (status = 404), (status = 422)))]
async fn list(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<EventList>> {
    let wanted = match q.state.as_deref().map(str::parse::<EventState>).transpose() {
        Ok(wanted) => wanted,
        Err(_) => {
            return Err(ApiError::Unprocessable {
                field: "state".into(),
                problem: "must be pending, processing, done or dead".into(),
            });
        }
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let events = state
        .store
        .events(wanted, limit)
        .await
        .map_err(unavailable)?;
    Ok(Json(EventList {
        events: events.into_iter().map(EventView::from).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    pub replayed: u64,
}

/// Puts one dead event back in the queue.
#[utoipa::path(post, path = "/api/v1/events/{id}/replay", tag = "events", params(("id" = i64, Path)), security(("admin" = [])),
    responses((status = 202, body = Replayed), (status = 401), (status = 404), (status = 409, description = "the event is not dead")))]
async fn replay_one(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<(StatusCode, Json<Replayed>)> {
    crate::admin::events::replay(&state, id).await?;
    Ok((StatusCode::ACCEPTED, Json(Replayed { replayed: 1 })))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ReplayQuery {
    /// Must be `dead`: only dead events can be replayed.
    pub state: String,
}

/// Puts every dead event back in the queue.
#[utoipa::path(post, path = "/api/v1/events/replay", tag = "events", params(ReplayQuery), security(("admin" = [])),
    responses((status = 202, body = Replayed), (status = 401), (status = 404), (status = 422)))]
async fn replay_all(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<ReplayQuery>,
) -> ApiResult<(StatusCode, Json<Replayed>)> {
    if !matches!(q.state.parse(), Ok(EventState::Dead)) {
        return Err(ApiError::Unprocessable {
            field: "state".into(),
            problem: "only dead events can be replayed".into(),
        });
    }
    let replayed = crate::admin::events::replay_dead(&state).await?;
    Ok((StatusCode::ACCEPTED, Json(Replayed { replayed })))
}
