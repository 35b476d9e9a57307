//! Durable state: the webhook inbox, and everything bought from the providers.
//!
//! One interface, [`Store`], with a Postgres implementation (production, several instances)
//! and a SQLite one (the embedded default, one instance only), chosen from the URL scheme.
//! Both pass the same conformance tests (`tests/store.rs`). The store never calls a provider
//! and never decides policy (TTLs, retries): callers pass instants and limits in.
//!
//! Paid answers are written the moment they arrive (`record_contact`, `record_person`), each
//! in one transaction, so no later failure can throw away what was paid for.

mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::DatabaseSettings;
use crate::domain::contact_key::ContactKind;
use crate::domain::{ContactKey, Cpf, LeadId, Person};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Shared handle to whichever backend the URL chose.
pub type DynStore = Arc<dyn Store>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the work; callers answer 503 or retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// A row read back did not hold what the schema promises.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
            // Database messages can echo values (a unique violation names the key), so
            // only the code travels.
            sqlx::Error::Database(db) => StoreError::Database(format!(
                "code {}",
                db.code().as_deref().unwrap_or("unknown")
            )),
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e.to_string())
    }
}

/// An answer that may be "nobody": both are remembered, so both are values.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    Found(T),
    NotFound,
}

/// A webhook event as intake hands it over.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: &'static str,
    pub lead_id: LeadId,
    /// The sender's `updated_at`: with the lead id, the identity of one delivery.
    pub event_at: OffsetDateTime,
    pub action: String,
    pub payload: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    Accepted(i64),
    Duplicate,
}

/// An event taken by one worker. `claim` proves ownership: every later write names it, so
/// a worker whose lease ran out cannot overwrite the work of the one that took over.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    pub id: i64,
    pub claim: Uuid,
    pub source: String,
    pub lead_id: String,
    pub event_at: OffsetDateTime,
    pub action: String,
    pub payload: Value,
    /// Failed attempts so far.
    pub attempts: i32,
    pub contact_set: Option<String>,
    /// The rendered message, once resolution finished: retries post this same text.
    pub message: Option<String>,
    /// Set while a POST to the CRM is under way; found set at claim time, it means the
    /// process stopped mid-delivery and the outcome is unknown.
    pub send_started: bool,
}

/// How a worker leaves an event.
#[derive(Debug, Clone)]
pub enum Finish {
    /// Finished; `outcome` says how (delivered, closed, unchanged, ...).
    Done {
        outcome: String,
        contact_set: Option<String>,
    },
    /// Try again at `at`; counts one failed attempt.
    Retry { at: OffsetDateTime, error: String },
    /// Given up; an operator can list and replay it.
    Dead { reason: String },
}

/// One inbox row as operators and tests see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub source: String,
    pub lead_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub event_at: OffsetDateTime,
    pub action: String,
    pub state: String,
    pub attempts: i32,
    pub outcome: Option<String>,
    pub last_error: Option<String>,
    pub delivered: bool,
}

/// A person as stored: what the message is rendered from, and when it was bought.
#[derive(Debug, Clone)]
pub struct StoredPerson {
    pub person: Person,
    pub fetched_at: OffsetDateTime,
}

/// Which party a lead was linked to, and through which of its contacts.
#[derive(Debug, Clone)]
pub struct LeadLink {
    pub cpf: Cpf,
    pub via: ContactKind,
}

/// Row counts of the person tables, for tests and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartyCounts {
    pub parties: i64,
    pub contacts: i64,
    pub enrichments: i64,
    pub lead_links: i64,
    pub negatives: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "postgres" or "sqlite".
    fn backend(&self) -> &'static str;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// The database answers and every migration this binary knows is applied.
    async fn ready(&self) -> Result<bool, StoreError>;

    /// Inserts events in one transaction; a known `(source, lead_id, event_at)` is a duplicate.
    async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<InsertOutcome>, StoreError>;

    /// Takes up to `limit` events that are due: pending ones whose time has come and
    /// processing ones whose lease ran out. Never an event while an earlier one of the same
    /// lead is unfinished, nor while another event of the lead holds a live lease.
    async fn claim_events(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedEvent>, StoreError>;

    /// The contact set of the latest processed event of the same lead before this one.
    async fn previous_contact_set(
        &self,
        event: &ClaimedEvent,
    ) -> Result<Option<String>, StoreError>;

    /// Links the lead to the parties found and keeps the rendered message on the event, in
    /// one transaction. Returns false when the claim was lost.
    async fn save_rendered(
        &self,
        event: &ClaimedEvent,
        contact_set: &str,
        message: &str,
        links: &[LeadLink],
    ) -> Result<bool, StoreError>;

    /// Marks that a POST is about to leave. Returns false when the claim was lost.
    async fn mark_sending(&self, event: &ClaimedEvent) -> Result<bool, StoreError>;

    /// Leaves the event done, due again later, or dead. Returns false when the claim was lost.
    async fn finish(&self, event: &ClaimedEvent, finish: Finish) -> Result<bool, StoreError>;

    async fn event(&self, id: i64) -> Result<Option<EventRecord>, StoreError>;

    async fn events(&self, state: Option<&str>, limit: u32)
    -> Result<Vec<EventRecord>, StoreError>;

    /// Number of inbox rows in each state.
    async fn event_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// What the database knows of a contact: the CPF a lookup found, or a remembered
    /// not-found that has not expired; `None` when it has to be bought.
    async fn find_contact(&self, key: &ContactKey) -> Result<Option<Lookup<Cpf>>, StoreError>;

    /// Remembers a CPF lookup answer: the party and its contact, or a not-found until
    /// `negative_until`.
    async fn record_contact(
        &self,
        key: &ContactKey,
        answer: &Lookup<(Cpf, Option<String>)>,
        negative_until: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// The latest enrichment of a CPF fetched at or after `fresh_since`, or a remembered
    /// not-found that has not expired.
    async fn find_person(
        &self,
        cpf: &Cpf,
        fresh_since: OffsetDateTime,
    ) -> Result<Option<Lookup<StoredPerson>>, StoreError>;

    /// Remembers a person-data answer: party, its contacts and the enrichment (raw payload
    /// and normalized data) in one transaction, or a not-found until `negative_until`.
    async fn record_person(
        &self,
        cpf: &Cpf,
        answer: &Lookup<(Value, Person)>,
        provider: &str,
        negative_until: OffsetDateTime,
    ) -> Result<(), StoreError>;

    async fn party_counts(&self) -> Result<PartyCounts, StoreError>;
}

/// Opens the backend the URL names. Does not migrate.
pub async fn connect(settings: &DatabaseSettings) -> Result<DynStore, StoreError> {
    let url = settings.url.expose_secret();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PgStore::connect(url, settings.max_connections).await?,
        ))
    } else {
        Ok(Arc::new(
            SqliteStore::connect(url, settings.max_connections).await?,
        ))
    }
}

/// The canonical contact set of an event ("email:a@b.c,phone:+55..."), sorted, so that an
/// update is "changed" exactly when the set differs.
pub fn contact_set(keys: &[ContactKey]) -> String {
    let mut parts: Vec<String> = keys
        .iter()
        .map(|k| format!("{}:{}", k.kind().as_str(), k.value()))
        .collect();
    parts.sort();
    parts.dedup();
    parts.join(",")
}

/// The contacts a person-data answer lists, as (kind, canonical value) rows. Values that do
/// not parse are skipped: a provider typo must not poison the lookup index.
pub(crate) fn person_contacts(person: &Person) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for p in &person.phones {
        if let Ok(phone) = crate::domain::Phone::parse(&p.number) {
            out.push(("phone", phone.e164().to_owned()));
            if p.whatsapp {
                out.push(("whatsapp", phone.e164().to_owned()));
            }
        }
    }
    for e in &person.emails {
        if let Ok(email) = crate::domain::Email::parse(&e.address) {
            out.push(("email", email.as_str().to_owned()));
        }
    }
    out.sort();
    out.dedup();
    out
}
