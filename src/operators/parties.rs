//! `DELETE /api/v1/parties/{cpf}`: the right to erasure.
//!
//! Removes the person's party, contacts, enrichments and lead links, the remembered not-found
//! answers that point to them, redacts the inbox events of every lead the person reaches
//! (payload, contact set, rendered message), and drops every memory entry for the CPF and
//! those contacts; then the next lookup of any of them goes back to the providers. The audit
//! row keeps when, which action, the counts, and an HMAC of the CPF under
//! `ENRICHER__ADMIN__ERASURE_KEY`: enough to answer "was this CPF erased?" for someone who
//! holds that key (whatever the admin token is by then), useless to anyone enumerating CPFs.
//! The work is [`crate::admin::erasure::erase`]; this handler validates and shapes.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use crate::domain::Cpf;
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(erase))
}

const ACTION: &str = "DELETE /api/v1/parties/{cpf}";

/// What the erasure removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Erased {
    /// Whether a party existed for this CPF.
    pub found: bool,
    pub contacts: u64,
    pub enrichments: u64,
    pub lead_links: u64,
    pub negatives: u64,
    /// Inbox events redacted (payload, contact set and message of every event of a lead
    /// the person reaches).
    pub events: u64,
    /// Memory entries dropped (the CPF and each of its contacts).
    pub memory_entries: u64,
    /// The hash recorded in the audit row.
    pub cpf_hash: String,
}

/// Erases a person by CPF and records an audit row without personal data.
#[utoipa::path(delete, path = "/api/v1/parties/{cpf}", tag = "parties", params(("cpf" = String, Path)), security(("admin" = [])),
    responses((status = 200, body = Erased), (status = 401), (status = 404), (status = 422)))]
async fn erase(
    _: Admin,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Json<Erased>> {
    let cpf = Cpf::parse(&raw).map_err(|e| ApiError::Unprocessable {
        field: "cpf".into(),
        problem: e.to_string(),
    })?;
    let erased = crate::admin::erasure::erase(&state, &cpf, ACTION).await?;
    Ok(Json(Erased {
        found: erased.found,
        contacts: erased.contacts,
        enrichments: erased.enrichments,
        lead_links: erased.lead_links,
        negatives: erased.negatives,
        events: erased.events,
        memory_entries: erased.memory_entries,
        cpf_hash: erased.cpf_hash,
    }))
}
