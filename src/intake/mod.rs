//! Intake: authenticate, parse, store durably, answer. Nothing else.
//!
//! The order is the contract: the secret is checked before the body is read; a body that is
//! not the contract's shape leaves nothing behind; an event is committed to the inbox before
//! the 2xx, and if the database cannot take it the answer is 503 so the sender retries.
//! Processing happens later, in the workers, which intake only wakes.

pub mod c2s;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;

use crate::http::auth::{query_param, secret_matches};
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::InsertOutcome;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/webhooks/c2s", post(c2s_webhook))
}

/// Proof that the request carried the C2S secret (header `X-Webhook-Token` or query `token`),
/// or that none is configured. Runs before the body extractor, so a rejected request's body
/// is never read.
pub struct C2sAuthorized;

impl FromRequestParts<AppState> for C2sAuthorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let Some(expected) = &state.settings.webhooks.c2s_token else {
            return Ok(C2sAuthorized);
        };
        let given = parts
            .headers
            .get("x-webhook-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| query_param(parts.uri.query(), "token"));
        match given {
            Some(given) if secret_matches(expected, &given) => Ok(C2sAuthorized),
            _ => {
                tracing::warn!(source = "c2s", "webhook rejected: missing or wrong token");
                Err(ApiError::Unauthorized)
            }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct IntakeResponse {
    pub events: Vec<EventReceipt>,
}

#[derive(Debug, Serialize)]
pub struct EventReceipt {
    pub lead_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: time::OffsetDateTime,
    /// `accepted` or `duplicate`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<i64>,
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Reads at most `limit` bytes of body; larger bodies are refused without reading them all.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> ApiResult<bytes::Bytes> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(_) => Err(ApiError::BadRequest(
            "the request body could not be read".into(),
        )),
    }
}

#[tracing::instrument(name = "intake.c2s", skip_all, fields(events = tracing::field::Empty))]
async fn c2s_webhook(
    State(state): State<AppState>,
    _auth: C2sAuthorized,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<IntakeResponse>)> {
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = read_limited(&headers, body, state.settings.server.body_limit_bytes).await?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        // serde_json's syntax errors give a position, never the input.
        ApiError::BadRequest(format!("body is not valid JSON: {e}"))
    })?;
    let events = c2s::parse_body(&value).map_err(|e| ApiError::Unprocessable {
        field: e.field,
        problem: e.problem.to_owned(),
    })?;
    tracing::Span::current().record("events", events.len());

    let outcomes = state.store.insert_events(&events).await.map_err(|e| {
        tracing::error!(error = %e, "webhook not stored; answering 503");
        ApiError::Unavailable
    })?;
    state.wake_workers();

    let receipts: Vec<EventReceipt> = events
        .iter()
        .zip(outcomes)
        .map(|(e, outcome)| EventReceipt {
            lead_id: e.lead_id.as_str().to_owned(),
            updated_at: e.event_at,
            status: match outcome {
                InsertOutcome::Accepted(_) => "accepted",
                InsertOutcome::Duplicate => "duplicate",
            },
            event_id: match outcome {
                InsertOutcome::Accepted(id) => Some(id),
                InsertOutcome::Duplicate => None,
            },
        })
        .collect();
    for r in &receipts {
        tracing::info!(lead = %r.lead_id, status = r.status, "webhook event received");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(IntakeResponse { events: receipts }),
    ))
}
