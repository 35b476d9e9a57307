//! `POST /api/v1/leads/{lead_id}/refresh`: enrich one lead again, bypassing every tier.
//!
//! The handler validates the id and calls [`crate::admin::leads::refresh`], which queues the
//! lead's latest stored lead event again as a refresh.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use crate::domain::LeadId;
use crate::event::Source;
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;

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
    let event_id = crate::admin::leads::refresh(&state, Source::C2s, &lead).await?;
    Ok((StatusCode::ACCEPTED, Json(Queued { event_id })))
}
