//! `POST /api/v1/leads/{lead_id}/refresh`: enrich one lead again, bypassing every tier.
//!
//! Queues a refresh event carrying the lead's latest payload; the workers then buy fresh
//! answers from the providers, store them, and post a new message, with the same ordering,
//! retry and once-per-event guarantees as any webhook event.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, unavailable};
use crate::domain::LeadId;
use crate::http::error::{ApiError, ApiResult};
use crate::intake::c2s::{REFRESH_ACTION, SOURCE};
use crate::state::AppState;
use crate::store::{InsertOutcome, NewEvent};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(refresh))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    /// The inbox event that will carry the refresh.
    pub event_id: i64,
}

/// Re-enriches one lead bypassing every cache tier, and posts a fresh message.
#[utoipa::path(post, path = "/api/v1/leads/{lead_id}/refresh", tag = "leads", params(("lead_id" = String, Path)), security(("admin" = [])),
    responses((status = 202, body = Queued), (status = 401), (status = 404, description = "no event known for this lead")))]
async fn refresh(
    _: Admin,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let lead = LeadId::parse(&raw).map_err(|e| ApiError::Unprocessable {
        field: "lead_id".into(),
        problem: e.to_string(),
    })?;
    let payload = state
        .store
        .latest_event_payload(SOURCE, lead.as_str())
        .await
        .map_err(unavailable)?
        .ok_or(ApiError::NotFound)?;
    let event = NewEvent {
        source: SOURCE,
        lead_id: lead.clone(),
        event_at: time::OffsetDateTime::now_utc(),
        action: REFRESH_ACTION.to_owned(),
        payload,
    };
    match state
        .store
        .insert_events(&[event])
        .await
        .map_err(unavailable)?
        .first()
    {
        Some(InsertOutcome::Accepted(id)) => {
            tracing::info!(lead = %lead, event = id, "refresh queued by an operator");
            state.wake_workers();
            Ok((StatusCode::ACCEPTED, Json(Queued { event_id: *id })))
        }
        _ => Err(ApiError::Conflict(
            "a refresh for this lead was queued at this same instant".into(),
        )),
    }
}
