//! Intake: authenticate, parse, store durably, answer. Nothing else.
//!
//! The order is the contract: the secret is checked before the body is read; a body that is
//! not the contract's shape leaves nothing behind; an event is committed to the inbox before
//! the 2xx, and if the database cannot take it the answer is 503 so the sender retries.
//! Processing happens later, in the workers, which intake only wakes.

pub mod c2s;
pub mod google_ads;
pub mod group_commit;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::event::{Action, LeadEvent, REFRESH_ACTION};
use crate::http::auth::{query_param, secret_matches};
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::{InsertOutcome, Store, StoreError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(c2s_webhook))
        .routes(routes!(google_ads_webhook))
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
                state
                    .metrics
                    .webhook(c2s::SOURCE, "rejected", "unauthorized");
                Err(ApiError::Unauthorized)
            }
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntakeResponse {
    pub events: Vec<EventReceipt>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventReceipt {
    pub lead_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
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

/// One C2S webhook event as documented (the body may also be an array of them). Fields not
/// listed are kept in the stored payload.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct C2sEventDoc {
    /// The C2S lead id.
    pub id: String,
    /// `on_create_lead` (default), `on_update_lead`, `on_close_lead`; `hook_` prefix accepted.
    pub hook_action: Option<String>,
    /// `updated_at` (RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff] +zzzz` or naive UTC), `customer`
    /// `{name, email, phone}`, and anything else.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
}

/// Receives C2S lead events; each is stored before the answer says `accepted` or `duplicate`.
#[utoipa::path(post, path = "/api/v1/webhooks/c2s", tag = "webhooks",
    request_body(content = C2sEventDoc, description = "one event, or an array of events", content_type = "application/json"),
    params(("token" = Option<String>, Query, description = "the webhook secret, when not sent in X-Webhook-Token")),
    security(("webhook_token" = []), ("webhook_token_query" = [])),
    responses(
        (status = 202, body = IntakeResponse),
        (status = 400, description = "not JSON"),
        (status = 401, description = "missing or wrong secret"),
        (status = 413, description = "body over the byte limit, or more events than the batch cap"),
        (status = 415, description = "not application/json"),
        (status = 422, description = "JSON of the wrong shape; `field` names the problem"),
        (status = 503, description = "the database cannot take the write; retry"),
    ))]
async fn c2s_webhook(
    State(state): State<AppState>,
    _auth: C2sAuthorized,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<IntakeResponse>)> {
    let result = accept_c2s(&state, headers, body).await;
    match &result {
        Ok((_, Json(response))) => {
            for receipt in &response.events {
                state.metrics.webhook(c2s::SOURCE, receipt.status, "none");
            }
        }
        Err(e) => state
            .metrics
            .webhook(c2s::SOURCE, "rejected", e.code_name()),
    }
    result
}

#[tracing::instrument(name = "intake.c2s", skip_all, fields(events = tracing::field::Empty))]
async fn accept_c2s(
    state: &AppState,
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
    let limit = state.settings.server.max_events_per_request;
    if value.as_array().is_some_and(|events| events.len() > limit) {
        return Err(ApiError::TooManyEvents { limit });
    }
    let events = c2s::parse_body(&value).map_err(|e| ApiError::Unprocessable {
        field: e.field,
        problem: e.problem.to_owned(),
    })?;
    tracing::Span::current().record("events", events.len());

    // Committed together with the events of concurrent requests (group commit); the answer
    // waits for that commit.
    let (events, stored) = state.inbox.insert(events).await;
    let outcomes = stored.map_err(|e| {
        tracing::error!(error = %e, "webhook not stored; answering 503");
        ApiError::Unavailable
    })?;
    state.wake_workers();

    let receipts: Vec<EventReceipt> = events
        .iter()
        .zip(outcomes)
        .map(|(e, outcome)| EventReceipt {
            lead_id: e.event.lead.as_str().to_owned(),
            updated_at: e.event.at,
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

/// A Google Ads lead-form body as documented (Google adds fields over time; they are kept).
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct GoogleAdsLeadDoc {
    /// Google's lead id: the identity of the lead (a redelivery is a duplicate).
    pub lead_id: String,
    pub api_version: Option<String>,
    pub form_id: Option<u64>,
    pub campaign_id: Option<u64>,
    pub gcl_id: Option<String>,
    /// The key configured in the form; must equal `webhooks.google_ads_key`. Never stored.
    pub google_key: String,
    /// Sent by Google's "send test data": processed like any lead, marked as a test.
    pub is_test: Option<bool>,
    /// `{column_id, column_name, string_value}` per answer.
    #[schema(value_type = Vec<Object>)]
    pub user_column_data: Option<Vec<serde_json::Value>>,
}

/// The answer to one Google Ads lead.
#[derive(Debug, Serialize, ToSchema)]
pub struct GoogleAdsReceipt {
    pub lead_id: String,
    /// `accepted` or `duplicate`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<i64>,
}

/// Receives one Google Ads lead; it is stored before the answer, and the workers create it
/// in the CRM once.
#[utoipa::path(post, path = "/api/v1/webhooks/google-ads", tag = "webhooks",
    request_body(content = GoogleAdsLeadDoc, content_type = "application/json"),
    responses(
        (status = 200, body = GoogleAdsReceipt),
        (status = 400, description = "not JSON"),
        (status = 401, description = "missing or wrong google_key"),
        (status = 404, description = "no Google Ads key configured: the route is off"),
        (status = 413, description = "body over the byte limit"),
        (status = 415, description = "not application/json"),
        (status = 422, description = "JSON of the wrong shape; `field` names the problem"),
        (status = 503, description = "the database cannot take the write; retry"),
    ))]
async fn google_ads_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<GoogleAdsReceipt>)> {
    // No key configured: the route does not exist, whatever the body says.
    let Some(expected) = state.settings.webhooks.google_ads_key.clone() else {
        return Err(ApiError::NotFound);
    };
    let result = accept_google_ads(&state, &expected, headers, body).await;
    match &result {
        Ok((_, Json(receipt))) => state
            .metrics
            .webhook(google_ads::SOURCE, receipt.status, "none"),
        Err(e) => state
            .metrics
            .webhook(google_ads::SOURCE, "rejected", e.code_name()),
    }
    result
}

#[tracing::instrument(name = "intake.google_ads", skip_all)]
async fn accept_google_ads(
    state: &AppState,
    expected: &secrecy::SecretString,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<GoogleAdsReceipt>)> {
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    // The key travels in the body, so the body is read (under the limit) before the check;
    // nothing of it is stored or logged until the key matched.
    let bytes = read_limited(&headers, body, state.settings.server.body_limit_bytes).await?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
    if !google_ads::key_matches(expected, &value) {
        tracing::warn!(
            source = google_ads::SOURCE,
            "webhook rejected: missing or wrong key"
        );
        return Err(ApiError::Unauthorized);
    }
    let unprocessable = |e: c2s::ShapeError| ApiError::Unprocessable {
        field: e.field,
        problem: e.problem.to_owned(),
    };
    let lead = google_ads::GoogleAdsLead::from_value(&value).map_err(unprocessable)?;
    let is_test = lead.is_test;
    let event = lead.into_event().map_err(unprocessable)?;
    let lead_id = event.lead.as_str().to_owned();
    let stored = crate::store::NewEvent::new(event, google_ads::without_key(value));

    // The same group commit as C2S events: the answer waits for the commit.
    let (_, outcomes) = state.inbox.insert(vec![stored]).await;
    let outcome = outcomes
        .map_err(|e| {
            tracing::error!(error = %e, "webhook not stored; answering 503");
            ApiError::Unavailable
        })?
        .into_iter()
        .next()
        .ok_or(ApiError::Unavailable)?;
    state.wake_workers();
    let (status, event_id) = match outcome {
        InsertOutcome::Accepted(id) => ("accepted", Some(id)),
        InsertOutcome::Duplicate => ("duplicate", None),
    };
    state.metrics.lead_form(google_ads::SOURCE, status, is_test);
    tracing::info!(lead = %lead_id, status, is_test, "google ads lead received");
    Ok((
        StatusCode::OK,
        Json(GoogleAdsReceipt {
            lead_id,
            status,
            event_id,
        }),
    ))
}

/// Gives every inbox row written before lead events were stored its lead event, read from its
/// raw payload the way intake reads a webhook now (all such rows came from the C2S webhook;
/// those whose `action` column says refresh were queued by an operator). Runs once at start,
/// after the migrations and before any worker claims, so the worker never reads a payload.
/// Erased rows are skipped (the worker ends them as erased); a row whose payload no longer
/// parses keeps no event and is dead-lettered by the worker with that reason. Returns how
/// many rows were converted.
pub async fn convert_stored_events(store: &dyn Store) -> Result<u64, StoreError> {
    const BATCH: u32 = 500;
    let mut after = 0;
    let mut converted = 0;
    loop {
        let rows = store.events_without_lead_event(after, BATCH).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.id;
        for row in &rows {
            let Ok(parsed) = c2s::C2sEvent::from_payload(&row.payload, "") else {
                tracing::warn!(
                    event = row.id,
                    "stored payload unreadable; left unconverted"
                );
                continue;
            };
            let mut event = LeadEvent::from(parsed);
            if row.action == REFRESH_ACTION {
                event.action = Action::Refresh;
            }
            if store.set_lead_event(row.id, &event).await? {
                converted += 1;
            }
        }
    }
    if converted > 0 {
        tracing::info!(converted, "inbox rows from before lead events converted");
    }
    Ok(converted)
}
