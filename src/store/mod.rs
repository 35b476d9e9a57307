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
    /// The database refused the data itself (Postgres SQLSTATE class 22, "data exception":
    /// a NUL in text, a value out of range): trying again with the same data cannot succeed.
    #[error("data refused by the database: {0}")]
    Rejected(String),
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
            sqlx::Error::Database(db) => {
                let code = db.code().as_deref().unwrap_or("unknown").to_owned();
                if code.len() == 5 && code.starts_with("22") {
                    StoreError::Rejected(format!("code {code}"))
                } else {
                    StoreError::Database(format!("code {code}"))
                }
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl StoreError {
    /// Worth trying again: everything except data the database refuses. After a paid
    /// answer, retrying a refusal would buy the same answer again on every attempt.
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Rejected(_))
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
    /// POSTs of this event sent without an answer so far (see
    /// [`Store::note_unknown_outcome`]); replays reset it.
    pub unknown_outcomes: i32,
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
    /// Try again at `at` without counting an attempt: the provider was not called (its
    /// circuit is open), so the event waits for it instead of spending its attempts.
    Park { at: OffsetDateTime, error: String },
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

/// What [`Store::replay_event`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The dead event is pending again and due now.
    Replayed,
    /// No event has this id.
    NotFound,
    /// Only dead events are replayed; this one is in `state` and was left untouched.
    NotReplayable { state: String },
}

/// What [`Store::erase_party`] removed. Counts are of rows deleted explicitly, child tables
/// first, so the foreign-key cascades never remove anything uncounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    /// A party with the CPF existed (and is gone).
    pub found: bool,
    /// Contact rows of every kind and source.
    pub contacts: u64,
    pub enrichments: u64,
    pub lead_links: u64,
    /// Remembered not-found answers: the CPF's and those of the party's contact values.
    pub negatives: u64,
    /// The party's phone and e-mail contacts (all sources; WhatsApp rows as phones), parsed
    /// back to canonical keys, sorted and deduplicated, for the caller to drop from memory.
    /// Rows that no longer parse are still deleted but not listed: no canonical key names them.
    pub contact_keys: Vec<ContactKey>,
}

impl Erasure {
    /// The audit row's `counts`: numbers only, never a value.
    pub(crate) fn counts_json(&self) -> Value {
        serde_json::json!({
            "parties": u64::from(self.found),
            "contacts": self.contacts,
            "enrichments": self.enrichments,
            "lead_links": self.lead_links,
            "negatives": self.negatives,
        })
    }
}

/// One erasure as audited: when, through which action, for which hashed CPF, and how many
/// rows of each table went. Holds no personal data.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub action: String,
    pub cpf_hash: String,
    pub counts: Value,
}

/// A person to put back in memory at startup: the latest enrichment, and the contacts whose
/// lookup currently answers this party.
#[derive(Debug, Clone)]
pub struct WarmPerson {
    pub cpf: Cpf,
    pub person: Person,
    pub fetched_at: OffsetDateTime,
    /// Phone and e-mail keys, newest lookup first.
    pub lookup_keys: Vec<ContactKey>,
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

    /// Counts one POST of this event whose outcome is unknown (sent, never answered), before
    /// it is posted again. Returns false when the claim was lost.
    async fn note_unknown_outcome(&self, event: &ClaimedEvent) -> Result<bool, StoreError>;

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

    /// Puts a dead event back in the queue: pending, due now, attempts 0, no claim, lease,
    /// "sending" mark or outcome. Its rendered `message` and `contact_set` are kept, so the
    /// replay posts the same text without paying the providers again, and `last_error` stays
    /// until the next outcome overwrites it. Events in any other state are left untouched.
    /// The usual claim order still holds: a replayed event waits while another event of its
    /// lead holds a live lease.
    async fn replay_event(&self, id: i64) -> Result<Replay, StoreError>;

    /// [`Store::replay_event`] for every dead event, in one statement; returns how many.
    async fn replay_dead(&self) -> Result<u64, StoreError>;

    /// The payload of the lead's event with the greatest `event_at` (ties: greatest id),
    /// whatever its state; `None` when the lead has no event from `source`.
    async fn latest_event_payload(
        &self,
        source: &str,
        lead_id: &str,
    ) -> Result<Option<Value>, StoreError>;

    /// Right to erasure, in one transaction: deletes the remembered not-founds of the CPF
    /// and of every contact value of its party, then the party's lead links, enrichments,
    /// contacts (every kind and source) and the party itself, and appends one audit row
    /// (`action`, `cpf_hash`, the counts) that holds no personal data. Without a party the
    /// CPF's not-found is still deleted and the audit row still written (`found` false).
    /// The store does not hash: `cpf_hash` is written as given. The rendered messages of
    /// the party's linked leads are cleared (they hold the bought data); inbox payloads are
    /// the CRM's own lead data and stay.
    async fn erase_party(
        &self,
        cpf: &Cpf,
        action: &str,
        cpf_hash: &str,
    ) -> Result<Erasure, StoreError>;

    /// The latest `limit` erasure audit rows, newest first.
    async fn erasure_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;

    /// The `limit` parties enriched most recently (by their latest enrichment's `fetched_at`,
    /// newest first; ties: latest enrichment id), each with that enrichment's normalized data
    /// and the phone/e-mail keys for which this party is the lookup answer `find_contact`
    /// gives (a key whose latest lookup answered another party is not listed). Two queries
    /// (more on SQLite only past 500 parties, in chunks), never one per person. Contact rows
    /// that no longer parse are skipped.
    async fn recent_people(&self, limit: u32) -> Result<Vec<WarmPerson>, StoreError>;

    /// Deletes the remembered not-found of one key (`key_kind` 'phone', 'email' or 'cpf';
    /// `value` canonical, as stored), expired or not; returns how many rows went (0 or 1).
    async fn forget_negative(&self, key_kind: &str, value: &str) -> Result<u64, StoreError>;

    /// Deletes every remembered not-found, expired or not; returns how many.
    async fn forget_all_negatives(&self) -> Result<u64, StoreError>;

    /// Remembered not-founds that have not expired.
    async fn count_negatives(&self) -> Result<i64, StoreError>;

    /// Deletes done events last touched before `older_than`, except each lead's latest event
    /// (it answers duplicate deliveries and "did the contacts change?"). Pending, processing
    /// and dead events are never deleted. Returns how many went.
    async fn prune_done(&self, older_than: OffsetDateTime) -> Result<u64, StoreError>;
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

/// The cache keys of a party's contact rows `(kind, value)`: phones and e-mails parsed back
/// (WhatsApp rows are phones), sorted and deduplicated; rows that do not parse are skipped.
pub(crate) fn contact_keys_of(rows: &[(String, String)]) -> Vec<ContactKey> {
    let mut keys: Vec<ContactKey> = rows
        .iter()
        .filter_map(|(kind, value)| {
            let kind = match kind.as_str() {
                "whatsapp" => ContactKind::Phone,
                other => ContactKind::parse(other)?,
            };
            ContactKey::from_parts(kind, value).ok()
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Contact rows `(party_id, kind, value)` grouped per party as keys, in row order; rows that
/// do not parse are skipped.
pub(crate) fn keys_by_party(
    rows: Vec<(i64, String, String)>,
) -> std::collections::HashMap<i64, Vec<ContactKey>> {
    let mut out: std::collections::HashMap<i64, Vec<ContactKey>> = Default::default();
    for (party, kind, value) in rows {
        let Some(kind) = ContactKind::parse(&kind) else {
            continue;
        };
        if let Ok(key) = ContactKey::from_parts(kind, &value) {
            out.entry(party).or_default().push(key);
        }
    }
    out
}
