//! `/cache`: see what the tiers hold and steer them.
//!
//! Lookups here never call a provider: they report what memory or the database would answer
//! right now. Invalidation drops memory entries (and, when asked, remembered not-found
//! answers in the database); warming loads recently enriched people into memory.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, mask_name, unavailable};
pub use crate::admin::cache::{WARM_PAGE, warm, warm_in_pages};
use crate::domain::{ContactKey, Cpf, Email, Phone};
use crate::http::error::{ApiError, ApiResult};
use crate::metrics::{LookupKind, TierCounts};
use crate::state::AppState;
use crate::store::Lookup;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stats))
        .routes(routes!(lookup))
        .routes(routes!(delete_entry))
        .routes(routes!(delete_all))
        .routes(routes!(warm_now))
}

/// One key named by the query: exactly one of phone, email or cpf.
#[derive(Debug, Deserialize, IntoParams)]
pub struct KeyQuery {
    /// A phone in any common Brazilian format.
    pub phone: Option<String>,
    /// An email address.
    pub email: Option<String>,
    /// A CPF, with or without punctuation.
    pub cpf: Option<String>,
    /// Show personal data in clear (lookup only).
    #[serde(default)]
    pub reveal: bool,
    /// Also forget the remembered not-found answer in the database (delete only).
    #[serde(default)]
    pub negative: bool,
}

enum Target {
    Contact(ContactKey),
    Cpf(Cpf),
}

impl KeyQuery {
    fn target(&self) -> ApiResult<Target> {
        let invalid = |field: &str, problem: String| ApiError::Unprocessable {
            field: field.to_owned(),
            problem,
        };
        match (&self.phone, &self.email, &self.cpf) {
            (Some(p), None, None) => Phone::parse(p)
                .map(|p| Target::Contact(ContactKey::Phone(p)))
                .map_err(|e| invalid("phone", e.to_string())),
            (None, Some(e), None) => Email::parse(e)
                .map(|e| Target::Contact(ContactKey::Email(e)))
                .map_err(|e| invalid("email", e.to_string())),
            (None, None, Some(c)) => Cpf::parse(c)
                .map(Target::Cpf)
                .map_err(|e| invalid("cpf", e.to_string())),
            _ => Err(invalid(
                "phone|email|cpf",
                "give exactly one of phone, email or cpf".into(),
            )),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierStats {
    pub memory_hit: u64,
    pub database_hit: u64,
    pub negative_hit: u64,
    pub provider_call: u64,
    /// Share of lookups answered without paying a provider; null before the first lookup.
    pub hit_ratio: Option<f64>,
}

impl From<TierCounts> for TierStats {
    fn from(c: TierCounts) -> Self {
        TierStats {
            memory_hit: c.memory_hit,
            database_hit: c.database_hit,
            negative_hit: c.negative_hit,
            provider_call: c.provider_call,
            hit_ratio: c.hit_ratio(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CacheStats {
    /// Entries in memory (contacts and CPFs).
    pub entries: u64,
    /// Approximate bytes held in memory.
    pub weighted_size_bytes: u64,
    pub max_bytes: u64,
    /// Remembered not-found answers in the database that have not expired.
    pub negative_entries: i64,
    pub ttl_secs: u64,
    pub negative_ttl_secs: u64,
    pub max_age_days: u64,
    /// Lookups since start, contact -> CPF.
    pub contact: TierStats,
    /// Lookups since start, CPF -> person.
    pub cpf: TierStats,
    /// Hit ratio over both kinds.
    pub hit_ratio: Option<f64>,
}

/// Memory and database tier statistics since start.
#[utoipa::path(get, path = "/cache/stats", tag = "cache", security(("admin" = [])),
    responses((status = 200, body = CacheStats), (status = 401), (status = 404, description = "admin token not configured")))]
async fn stats(_: Admin, State(state): State<AppState>) -> ApiResult<Json<CacheStats>> {
    let (entries, weighted) = state.resolver.cache_usage().await;
    let negative_entries = state.store.count_negatives().await.map_err(unavailable)?;
    let contact = state.metrics.tier_counts(LookupKind::Contact);
    let cpf = state.metrics.tier_counts(LookupKind::Cpf);
    let both = TierCounts {
        memory_hit: contact.memory_hit + cpf.memory_hit,
        database_hit: contact.database_hit + cpf.database_hit,
        negative_hit: contact.negative_hit + cpf.negative_hit,
        provider_call: contact.provider_call + cpf.provider_call,
    };
    let c = &state.settings.cache;
    Ok(Json(CacheStats {
        entries,
        weighted_size_bytes: weighted,
        max_bytes: c.max_bytes,
        negative_entries,
        ttl_secs: c.ttl_secs,
        negative_ttl_secs: c.negative_ttl_secs,
        max_age_days: c.max_age_days,
        contact: contact.into(),
        cpf: cpf.into(),
        hit_ratio: both.hit_ratio(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LookupView {
    /// The key, masked.
    pub key: String,
    /// `phone`, `email` or `cpf`.
    pub kind: &'static str,
    /// Which tier would answer now: `memory`, `database`, or `none` (a provider call).
    pub tier: &'static str,
    /// Whether the tier holds a person (true) or a remembered "nobody" (false); null for none.
    pub found: Option<bool>,
    /// For contacts: the CPF found, masked unless `reveal=true`.
    pub cpf: Option<String>,
    /// For CPFs: the person held, summarized and masked unless `reveal=true`.
    #[schema(value_type = Option<Object>)]
    pub person: Option<serde_json::Value>,
}

/// Which tier answers for one key right now, and what it holds; never calls a provider.
#[utoipa::path(get, path = "/cache/lookup", tag = "cache", params(KeyQuery), security(("admin" = [])),
    responses((status = 200, body = LookupView), (status = 401), (status = 404), (status = 422)))]
async fn lookup(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<KeyQuery>,
) -> ApiResult<Json<LookupView>> {
    let reveal = q.reveal;
    let show_cpf = |cpf: &Cpf| {
        if reveal {
            cpf.as_str().to_owned()
        } else {
            cpf.masked()
        }
    };
    let view = match q.target()? {
        Target::Contact(key) => {
            let (tier, answer) = crate::admin::cache::inspect_contact(&state, &key).await?;
            LookupView {
                key: if reveal {
                    key.value().to_owned()
                } else {
                    key.masked()
                },
                kind: key.kind().as_str(),
                tier: tier.as_str(),
                found: answer.as_ref().map(|a| matches!(a, Lookup::Found(_))),
                cpf: match answer {
                    Some(Lookup::Found(cpf)) => Some(show_cpf(&cpf)),
                    _ => None,
                },
                person: None,
            }
        }
        Target::Cpf(cpf) => {
            let (tier, answer) = crate::admin::cache::inspect_person(&state, &cpf).await?;
            let person = match &answer {
                Some(Lookup::Found(p)) if reveal => serde_json::to_value(p).ok(),
                Some(Lookup::Found(p)) => Some(serde_json::json!({
                    "name": p.name.as_deref().map(mask_name),
                    "emails": p.emails.len(),
                    "phones": p.phones.len(),
                    "addresses": p.addresses.len(),
                    "companies": p.companies.len(),
                })),
                _ => None,
            };
            LookupView {
                key: show_cpf(&cpf),
                kind: "cpf",
                tier: tier.as_str(),
                found: answer.as_ref().map(|a| matches!(a, Lookup::Found(_))),
                cpf: None,
                person,
            }
        }
    };
    Ok(Json(view))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Dropped {
    /// Memory entries dropped (for one key: whether it was held).
    pub memory: u64,
    /// Remembered not-found answers deleted from the database.
    pub negatives: u64,
}

/// Drops one key from memory; with `negative=true` also its remembered not-found answer.
#[utoipa::path(delete, path = "/cache/entries", tag = "cache", params(KeyQuery), security(("admin" = [])),
    responses((status = 200, body = Dropped), (status = 401), (status = 404), (status = 422)))]
async fn delete_entry(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<KeyQuery>,
) -> ApiResult<Json<Dropped>> {
    let target = q.target()?;
    let (kind, value) = match &target {
        Target::Contact(key) => (key.kind().as_str(), key.value().to_owned()),
        Target::Cpf(cpf) => ("cpf", cpf.as_str().to_owned()),
    };
    // The database first: an instance that drops the key on our broadcast and looks it up
    // again at once must not find the negative we are about to delete.
    let negatives = if q.negative {
        state
            .store
            .forget_negative(kind, &value)
            .await
            .map_err(unavailable)?
    } else {
        0
    };
    let held = match &target {
        Target::Contact(key) => {
            let held = state.resolver.peek_contact(key).await.is_some();
            state.resolver.forget_contact(key).await;
            held
        }
        Target::Cpf(cpf) => {
            let held = state.resolver.peek_person(cpf).await.is_some();
            state.resolver.forget_person(cpf).await;
            held
        }
    };
    tracing::info!(kind, negatives, "cache entry dropped by an operator");
    Ok(Json(Dropped {
        memory: u64::from(held),
        negatives,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AllQuery {
    /// Also delete every remembered not-found answer in the database.
    #[serde(default)]
    pub negative: bool,
}

/// Drops every memory entry; with `negative=true` also every remembered not-found answer.
#[utoipa::path(delete, path = "/cache", tag = "cache", params(AllQuery), security(("admin" = [])),
    responses((status = 200, body = Dropped), (status = 401), (status = 404)))]
async fn delete_all(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<AllQuery>,
) -> ApiResult<Json<Dropped>> {
    // The database first, for the reason given in `delete_entry`.
    let negatives = if q.negative {
        state
            .store
            .forget_all_negatives()
            .await
            .map_err(unavailable)?
    } else {
        0
    };
    let (entries, _) = state.resolver.cache_usage().await;
    state.resolver.forget_all().await;
    tracing::info!(entries, negatives, "cache cleared by an operator");
    Ok(Json(Dropped {
        memory: entries,
        negatives,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct WarmQuery {
    /// How many of the most recently enriched people to load (at most 100000).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Warmed {
    pub loaded: usize,
}

/// Loads the N most recently enriched people from the database into memory.
#[utoipa::path(post, path = "/cache/warm", tag = "cache", params(WarmQuery), security(("admin" = [])),
    responses((status = 200, body = Warmed), (status = 401), (status = 404)))]
async fn warm_now(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<WarmQuery>,
) -> ApiResult<Json<Warmed>> {
    let limit = q.limit.unwrap_or(1000).min(100_000);
    let loaded = warm(&state, limit).await.map_err(unavailable)?;
    Ok(Json(Warmed { loaded }))
}
