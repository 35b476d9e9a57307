//! `DELETE /api/v1/parties/{cpf}`: the right to erasure.
//!
//! Removes the person's party, contacts, enrichments and lead links, the remembered not-found
//! answers that point to them, redacts the inbox events of every lead the person reaches
//! (payload, contact set, rendered message), and drops every memory entry for the CPF and
//! those contacts; then the next lookup of any of them goes back to the providers. The audit row keeps when, which
//! action, the counts, and a keyed one-way hash of the CPF: enough to answer "was this CPF
//! erased?" for someone who holds the admin token, useless to anyone enumerating CPFs.

use axum::Json;
use axum::extract::{Path, State};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, unavailable};
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

/// Keyed SHA-256 of the CPF, hex.
pub fn cpf_hash(key: &str, cpf: &Cpf) -> String {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update(b":");
    h.update(cpf.as_str().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
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
    let key = state
        .settings
        .admin
        .token
        .as_ref()
        .map(|t| t.expose_secret().to_owned())
        .unwrap_or_default();
    let hash = cpf_hash(&key, &cpf);
    let erasure = state
        .store
        .erase_party(&cpf, ACTION, &hash)
        .await
        .map_err(unavailable)?;
    // Memory goes after the database: a lookup racing the erasure cannot re-fill memory
    // from rows that are already gone.
    let mut memory_entries = 0;
    if state.resolver.peek_person(&cpf).await.is_some() {
        memory_entries += 1;
    }
    state.resolver.forget_person(&cpf).await;
    for key in &erasure.contact_keys {
        if state.resolver.peek_contact(key).await.is_some() {
            memory_entries += 1;
        }
        state.resolver.forget_contact(key).await;
    }
    tracing::info!(
        cpf = %cpf,
        found = erasure.found,
        contacts = erasure.contacts,
        "party erased by an operator"
    );
    Ok(Json(Erased {
        found: erasure.found,
        contacts: erasure.contacts,
        enrichments: erasure.enrichments,
        lead_links: erasure.lead_links,
        negatives: erasure.negatives,
        events: erasure.events,
        memory_entries,
        cpf_hash: hash,
    }))
}
