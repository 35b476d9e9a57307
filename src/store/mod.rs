//! Durable state: the webhook inbox, and everything bought from the providers.
//!
//! Four roles, [`Inbox`], [`People`], [`Coordination`] and [`Admin`], summed in [`Store`]:
//! a caller takes the role it uses. One implementation of the statements (`sql.rs`) serves a
//! Postgres backend (production, several instances) and a SQLite one (the embedded default,
//! one instance only), chosen from the URL scheme; the dialect files hold only what differs.
//! Both pass the same conformance tests (`tests/api/store/`). The store never calls a
//! provider and never decides policy (TTLs, retries): callers pass instants and limits in.
//!
//! Paid answers are written the moment they arrive (`record_candidates`, `record_person`), each
//! in one transaction, so no later failure can throw away what was paid for.

mod postgres;
mod sql;
mod sqlite;
mod types;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::DatabaseSettings;
use crate::domain::contact_key::ContactKind;
use crate::domain::{Candidates, ContactKey, Cpf, LeadId, Person};
use crate::event::{LeadEvent, Source};

pub use postgres::PgStore;
pub use sqlite::{InstanceLock, SqliteStore};
pub use types::{ContactOrigin, EventState, Outcome, Provider, UnknownName};

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
    /// Another instance held a key lock longer than this one may wait; callers retry later.
    #[error("key busy: {0}")]
    Busy(String),
    /// Another process already serves this single-instance database.
    #[error("{0}")]
    InUse(String),
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

/// An event as an intake (or an operator's refresh) hands it over: the lead event the
/// worker will read, and the raw payload it came from, kept for audit and erasure. The
/// inbox's `source`, `lead_id`, `event_at` (with the lead, the identity of one delivery) and
/// `action` columns are the event's own.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: LeadEvent,
    pub payload: Value,
}

impl NewEvent {
    pub fn new(event: LeadEvent, payload: Value) -> NewEvent {
        NewEvent { event, payload }
    }
}

/// An inbox row written before lead events were stored: what converting it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnconvertedEvent {
    pub id: i64,
    pub action: String,
    pub payload: Value,
}

/// A stored lead event, read; unreadable JSON is a corrupt row.
pub(crate) fn read_lead_event(stored: &Value) -> Result<LeadEvent, StoreError> {
    LeadEvent::from_stored(stored).map_err(|e| StoreError::Corrupt(e.to_string()))
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
    /// Whether an erasure redacted the raw payload (it carries the erased mark). The payload
    /// itself is not read: the worker reads [`ClaimedEvent::lead_event`].
    pub erased: bool,
    /// The stored [`LeadEvent`] as JSON; `None` when erasure or retention removed it (the
    /// payload then carries the erased mark) or a row predates lead events and was not
    /// converted.
    pub lead_event: Option<Value>,
    /// Failed attempts so far.
    pub attempts: i32,
    pub contact_set: Option<String>,
    /// The rendered message, once resolution finished: retries post this same text.
    pub message: Option<String>,
    /// Set while a POST to the CRM is under way; found set at claim time, it means the
    /// process stopped mid-delivery and the outcome is unknown.
    pub send_started: bool,
    /// POSTs of this event sent without an answer so far (see
    /// [`Inbox::note_unknown_outcome`]); replays reset it.
    pub unknown_outcomes: i32,
    /// When the event became due: intake's insert for a new event, the retry time for a
    /// retry, an operator's replay.
    pub due_at: OffsetDateTime,
}

/// How a worker leaves an event.
#[derive(Debug, Clone)]
pub enum Finish {
    /// Finished; `outcome` says how (delivered, closed, unchanged, ...).
    Done {
        outcome: Outcome,
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

/// Where creating a CRM lead for one source lead (a Google lead id) stands: the intent is
/// recorded before each call, the CRM's id after it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrmCreation {
    /// The caller holds call number `attempt` (1 for the first): it may call the CRM now. A
    /// later attempt means earlier calls left no id (unanswered, or the process stopped).
    Claimed { attempt: u32 },
    /// Created already: the CRM's lead id. Nothing to call.
    Created(LeadId),
    /// Another caller claimed a call less than `busy_for` ago and has not answered yet: ask
    /// again at `until`.
    Busy { until: OffsetDateTime },
    /// `attempts` calls were started, none recorded an id, and the allowance is spent: the
    /// lead may exist in the CRM; an operator must check.
    Exhausted { attempts: u32 },
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
    pub state: EventState,
    pub attempts: i32,
    pub outcome: Option<Outcome>,
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

/// What [`Inbox::replay_event`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The dead event is pending again and due now.
    Replayed,
    /// No event has this id.
    NotFound,
    /// Only dead events are replayed; this one is in `state` and was left untouched.
    NotReplayable { state: EventState },
}

/// What [`People::erase_party`] removed. Counts are of rows deleted explicitly, child tables
/// first, so the foreign-key cascades never remove anything uncounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    /// A party with the CPF existed (and is gone).
    pub found: bool,
    /// Contact rows of every kind and source, and the person's rows in contact candidate
    /// lists.
    pub contacts: u64,
    pub enrichments: u64,
    pub lead_links: u64,
    /// Remembered not-found answers: the CPF's, those of the party's contact values and those
    /// of the contacts the redacted inbox events carried.
    pub negatives: u64,
    /// Inbox events redacted: every event of a lead linked to the party or carrying one of
    /// its contacts (in its payload or its contact set).
    pub events: u64,
    /// The party's phone and e-mail contacts (all sources; WhatsApp rows as phones), the
    /// contacts whose candidate list named the CPF, and the contacts of the redacted events,
    /// as canonical keys, sorted and deduplicated, for the
    /// caller to drop from memory. Rows that no longer parse are still deleted but not
    /// listed: no canonical key names them.
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
            "events": self.events,
        })
    }
}

/// The key an erased inbox payload carries (`"erased": true`; each dialect's `ERASED`
/// condition looks for it). The worker ends such an event done with the outcome
/// [`Outcome::Erased`] without reading anything else from it.
pub const ERASED_MARK: &str = "erased";

/// An inbox payload with the personal data gone: only the lead id, the action and the
/// sender's `updated_at` stay (what identifies the delivery; the inbox row's own columns
/// already carry source, lead and `event_at` for duplicate detection), plus the erased mark.
/// Everything else (customer, product, messages, log) is dropped rather than picked over:
/// free-text fields of a CRM lead can hold anything.
pub(crate) fn redact_payload(payload: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for field in ["id", "hook_action"] {
        if let Some(v) = payload.get(field) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    if let Some(at) = payload.pointer("/attributes/updated_at") {
        out.insert(
            "attributes".to_owned(),
            serde_json::json!({ "updated_at": at }),
        );
    }
    out.insert(ERASED_MARK.to_owned(), Value::Bool(true));
    Value::Object(out)
}

/// The key a payload emptied by retention carries (`"purged": true`) beside the erased mark:
/// the payload holds no personal data either way, and this says it went by age rather than
/// by an erasure request.
pub const PURGED_MARK: &str = "purged";

/// An inbox payload past retention: [`redact_payload`]'s shape (lead id, action, `updated_at`,
/// the erased mark, so a refresh copying it posts nothing) plus [`PURGED_MARK`].
pub(crate) fn purge_payload(payload: &Value) -> Value {
    let mut out = redact_payload(payload);
    if let Value::Object(map) = &mut out {
        map.insert(PURGED_MARK.to_owned(), Value::Bool(true));
    }
    out
}

/// Events purged per transaction, so one purge never holds a long lock on the inbox.
pub(crate) const PURGE_BATCH: i64 = 500;

/// An inbox row as erasure scans it: who it is, and the contacts it carries (the customer's
/// raw phone and e-mail from the payload, and the canonical contact set once processed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct InboxContacts {
    pub id: i64,
    pub source: String,
    pub lead_id: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub contact_set: Option<String>,
}

impl InboxContacts {
    /// The canonical keys this row carries, read the way the worker reads them.
    fn keys(&self) -> Vec<ContactKey> {
        let mut keys = Vec::new();
        if let Some(p) = self
            .phone
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            && let Ok(phone) = crate::domain::Phone::parse(p)
        {
            keys.push(ContactKey::Phone(phone));
        }
        if let Some(e) = self
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            && let Ok(email) = crate::domain::Email::parse(e)
        {
            keys.push(ContactKey::Email(email));
        }
        for part in self.contact_set.as_deref().unwrap_or("").split(',') {
            if let Some((kind, value)) = part.split_once(':')
                && let Some(kind) = ContactKind::parse(kind)
                && let Ok(key) = ContactKey::from_parts(kind, value)
            {
                keys.push(key);
            }
        }
        keys
    }
}

/// Which inbox rows an erasure redacts, and every contact key it reaches.
///
/// A lead is reached when it is linked to the party (`linked`) or when any of its events
/// carries one of the party's contacts; then every event of that lead is redacted (they are
/// the same CRM customer), and the contacts those events carry join the keys to forget.
pub(crate) fn erasure_scope(
    party_keys: &[ContactKey],
    linked: &[(String, String)],
    rows: &[InboxContacts],
) -> (Vec<i64>, Vec<ContactKey>) {
    use std::collections::HashSet;
    let party: HashSet<&ContactKey> = party_keys.iter().collect();
    let mut leads: HashSet<(&str, &str)> = linked
        .iter()
        .map(|(s, l)| (s.as_str(), l.as_str()))
        .collect();
    let row_keys: Vec<Vec<ContactKey>> = rows.iter().map(InboxContacts::keys).collect();
    for (row, keys) in rows.iter().zip(&row_keys) {
        if keys.iter().any(|k| party.contains(k)) {
            leads.insert((row.source.as_str(), row.lead_id.as_str()));
        }
    }
    let mut ids = Vec::new();
    let mut keys: Vec<ContactKey> = party_keys.to_vec();
    for (row, row_keys) in rows.iter().zip(row_keys) {
        if leads.contains(&(row.source.as_str(), row.lead_id.as_str())) {
            ids.push(row.id);
            keys.extend(row_keys);
        }
    }
    keys.sort();
    keys.dedup();
    (ids, keys)
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
    /// Where this person stands in the newest-first order: the next page starts after it.
    pub position: WarmCursor,
}

/// A place in the newest-first order of [`People::recent_people`]: the latest enrichment's
/// `fetched_at` and id, which together order every party strictly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmCursor {
    pub fetched_at: OffsetDateTime,
    pub enrichment: i64,
}

/// The key spaces of the cross-instance purchase locks, so a contact and a CPF that happen
/// to hash alike never wait for each other, and neither waits for the claim lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockSpace {
    Contact,
    Cpf,
    /// Held for a whole reconciliation pass: one instance lists the CRM at a time.
    Reconcile,
}

/// A held purchase lock: while it lives, no other instance buys the same key. Dropping it
/// (or the process dying) frees the key too; [`KeyLock::release`] frees it at once.
#[async_trait]
pub trait KeyLock: Send {
    async fn release(self: Box<Self>);
}

/// A subscription to the invalidations every instance broadcasts.
#[async_trait]
pub trait Subscription: Send {
    /// The next payload. `Ok(None)` or an error means the connection was lost and
    /// notifications may have been missed: drop this subscription and subscribe again.
    async fn next(&mut self) -> Result<Option<String>, StoreError>;
}

/// The webhook inbox: what intake stores, workers claim and finish, operators list and
/// replay, and retention prunes.
#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// The stored watermark `name` (`c2s`: how far reconciliation read the CRM's list).
    async fn watermark(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError>;

    /// Stores the watermark `name`; one that would move it back is ignored, so a slow pass
    /// finishing after a newer one cannot rewind it.
    async fn set_watermark(&self, name: &str, at: OffsetDateTime) -> Result<(), StoreError>;

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

    /// [`Inbox::save_rendered`] and [`Inbox::mark_sending`] in one transaction: what a
    /// message about to be posted for the first time writes, one commit instead of two
    /// before the POST. A stop after it and before the POST is then found as a POST of
    /// unknown outcome (see `delivery`), as a stop right after the mark always was.
    async fn save_and_mark_sending(
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

    /// Extends the lease of an event this worker still holds; false when the claim was lost.
    async fn renew_lease(&self, event: &ClaimedEvent, lease: Duration) -> Result<bool, StoreError>;

    /// Claims one call creating the CRM lead for `source`'s lead `key`, recording the intent
    /// first: the first claim inserts the intent (attempt 1); a later one takes another attempt
    /// only while fewer than `max_calls` were started and the last was claimed at least
    /// `busy_for` before `now`. Atomic across instances: of concurrent claimers exactly one
    /// gets each attempt.
    async fn claim_crm_creation(
        &self,
        source: Source,
        key: &LeadId,
        max_calls: u32,
        busy_for: Duration,
        now: OffsetDateTime,
    ) -> Result<CrmCreation, StoreError>;

    /// Records the CRM's id for the lead whose creation was claimed (intent -> created).
    async fn record_crm_created(
        &self,
        source: Source,
        key: &LeadId,
        crm_lead: &LeadId,
    ) -> Result<(), StoreError>;

    /// Gives back a claimed call the CRM certainly did not act on (it answered with an error,
    /// or never connected), so it does not spend the allowance.
    async fn release_crm_creation(&self, source: Source, key: &LeadId) -> Result<(), StoreError>;

    /// The CRM lead created for `source`'s lead `key` and the calls started, if any.
    async fn crm_creation(
        &self,
        source: Source,
        key: &LeadId,
    ) -> Result<Option<(Option<LeadId>, u32)>, StoreError>;

    /// Leaves the event done, due again later, or dead. Returns false when the claim was lost.
    async fn finish(&self, event: &ClaimedEvent, finish: Finish) -> Result<bool, StoreError> {
        Ok(self.finish_and_look(event, finish).await?.is_some())
    }

    /// [`Inbox::finish`], and in the same statement whether another event of the same lead is
    /// pending: one a claim passed over while this one was in hand, which the worker should
    /// claim now rather than at its next poll. `None` when the claim was lost.
    ///
    /// A done event's end does not wait for its flush where asynchronous steps are on
    /// (Postgres, `database.async_commit_steps`): only a crash of the database itself within
    /// moments of it can undo it, and the event then comes back as it was when its POST left
    /// (sending mark set: the unknown-outcome rule; no mark: worked again). Every other end
    /// waits for its flush.
    async fn finish_and_look(
        &self,
        event: &ClaimedEvent,
        finish: Finish,
    ) -> Result<Option<bool>, StoreError>;

    /// Hands a claimed event back at shutdown, when its worker was stopped before it ended:
    /// pending, due now, no claim or lease, attempts unchanged (nothing failed), so the next
    /// process takes it at once instead of after the lease. Only while the claim is still
    /// ours and no POST is under way: an event with the "sending" mark keeps its claim and
    /// comes back when the lease runs out, under the unknown-outcome rule. Returns whether
    /// it was handed back.
    async fn release(&self, event: &ClaimedEvent) -> Result<bool, StoreError>;

    async fn event(&self, id: i64) -> Result<Option<EventRecord>, StoreError>;

    async fn events(
        &self,
        state: Option<EventState>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Puts a dead event back in the queue: pending, due now, attempts 0, no claim, lease,
    /// "sending" mark or outcome. Its rendered `message` and `contact_set` are kept, so the
    /// replay posts the same text without paying the providers again, and `last_error` stays
    /// until the next outcome overwrites it. Events in any other state are left untouched.
    /// The usual claim order still holds: a replayed event waits while another event of its
    /// lead holds a live lease.
    async fn replay_event(&self, id: i64) -> Result<Replay, StoreError>;

    /// [`Inbox::replay_event`] for every dead event, in one statement; returns how many.
    async fn replay_dead(&self) -> Result<u64, StoreError>;

    /// The stored lead event of the lead's event with the greatest `event_at` (ties:
    /// greatest id) among those that still have one (erasure and payload retention remove
    /// it), whatever its state; `None` when there is none.
    async fn latest_event(
        &self,
        source: Source,
        lead: &LeadId,
    ) -> Result<Option<LeadEvent>, StoreError>;

    /// Rows written before lead events were stored (no lead event, payload not erased), by
    /// id after `after`, at most `limit`: what the conversion at startup reads.
    async fn events_without_lead_event(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<UnconvertedEvent>, StoreError>;

    /// Stores the converted lead event of such a row, unless it got one or was erased
    /// meanwhile; whether it was written.
    async fn set_lead_event(&self, id: i64, event: &LeadEvent) -> Result<bool, StoreError>;

    /// Deletes done events last touched before `older_than`, except each lead's latest event
    /// (it answers duplicate deliveries and "did the contacts change?"). Pending, processing
    /// and dead events are never deleted. Returns how many went.
    async fn prune_done(&self, older_than: OffsetDateTime) -> Result<u64, StoreError>;

    /// Retention of the raw payloads (the CRM's copy of the customer): every done event
    /// last touched before `older_than` whose payload is not already redacted gets
    /// [`purge_payload`]'s payload and loses its rendered message; its contact set goes too
    /// unless it is the lead's latest one ("did the contacts change?" compares against it).
    /// The row itself stays, with source, lead id and `event_at`, so duplicate deliveries
    /// are still recognized. Pending, processing and dead events are never touched (a dead
    /// one may be replayed, which needs its message). `updated_at` is left as it was.
    /// Works in batches of [`PURGE_BATCH`]; returns how many payloads were purged.
    async fn purge_payloads(&self, older_than: OffsetDateTime) -> Result<u64, StoreError>;
}

/// Everything bought from the providers: the lookup index, persons, remembered not-founds,
/// the lead links, warming and erasure.
#[async_trait]
pub trait People: Send + Sync + 'static {
    /// What the database knows of a contact: the CPF a lookup found, or a remembered
    /// not-found that has not expired; `None` when it has to be bought.
    async fn find_contact(&self, key: &ContactKey) -> Result<Option<Lookup<Cpf>>, StoreError>;

    /// Remembers a CPF lookup answer of one person: the party and its contact, or a
    /// not-found until `negative_until`. [`People::record_candidates`] with a list of one.
    async fn record_contact(
        &self,
        key: &ContactKey,
        answer: &Lookup<(Cpf, Option<String>)>,
        negative_until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let answer = match answer {
            Lookup::Found((cpf, name)) => {
                Lookup::Found(Candidates::one(crate::domain::CpfCandidate {
                    cpf: cpf.clone(),
                    name: name.clone(),
                }))
            }
            Lookup::NotFound => Lookup::NotFound,
        };
        self.record_candidates(key, &answer, negative_until).await
    }

    /// Every candidate the latest lookup of a contact listed (people and companies, in the
    /// provider's order, each with the name the lookup gave), or a remembered not-found that
    /// has not expired; `None` when it has to be bought. A contact looked up before lists
    /// were kept reads as a list of its one lookup party, with the party's name.
    async fn find_candidates(
        &self,
        key: &ContactKey,
    ) -> Result<Option<Lookup<Candidates>>, StoreError>;

    /// Remembers a lookup answer with every candidate, in one transaction: the list in
    /// order (replacing the contact's previous one), the first person's party and the
    /// contact indexed to it (what [`People::find_contact`], warming and erasure read), and
    /// no remembered not-found; or a not-found until `negative_until`. Candidates other than
    /// the first get no party until their person data is bought.
    async fn record_candidates(
        &self,
        key: &ContactKey,
        answer: &Lookup<Candidates>,
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
        provider: Provider,
        negative_until: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Right to erasure, in one transaction: deletes the remembered not-founds of the CPF
    /// and of every contact value of its party, then the party's lead links, enrichments,
    /// contacts (every kind and source) and the party itself, and appends one audit row
    /// (`action`, `cpf_hash`, the counts) that holds no personal data. Without a party the
    /// CPF's not-found is still deleted and the audit row still written (`found` false).
    /// The store does not hash: `cpf_hash` is written as given.
    ///
    /// The inbox keeps no copy either: every event of a lead linked to the party, or whose
    /// payload or contact set carries one of its contacts, has its payload replaced by
    /// [`redact_payload`] (lead id, action, `updated_at`, the erased mark), its contact set
    /// and rendered message cleared; the not-founds of the contacts those events carried go
    /// too, and they are listed in `contact_keys`. An event being processed loses its claim
    /// and goes back to pending (the worker holding it can no longer write or post); pending
    /// and dead events keep their state. The worker ends any erased event done with the
    /// outcome [`Outcome::Erased`]. Finding the events reads the customer contacts of every
    /// inbox row (the inbox is bounded by retention), parsed as the worker parses them.
    async fn erase_party(
        &self,
        cpf: &Cpf,
        action: &str,
        cpf_hash: &str,
    ) -> Result<Erasure, StoreError>;

    /// The `limit` parties enriched most recently (by their latest enrichment's `fetched_at`,
    /// newest first; ties: latest enrichment id), each with that enrichment's normalized data
    /// and the phone/e-mail keys for which this party is the lookup answer `find_contact`
    /// gives (a key whose latest lookup answered another party is not listed). Two queries
    /// (more on SQLite only past 500 parties, in chunks), never one per person. Contact rows
    /// that no longer parse are skipped. `after`: only parties that come after this place in
    /// that order, so a caller reads page by page (keyset, each page as cheap as the first)
    /// and never holds more than one page of rows.
    async fn recent_people(
        &self,
        after: Option<WarmCursor>,
        limit: u32,
    ) -> Result<Vec<WarmPerson>, StoreError>;

    /// Deletes the remembered not-found of one key (`key_kind` 'phone', 'email' or 'cpf';
    /// `value` canonical, as stored), expired or not; returns how many rows went (0 or 1).
    async fn forget_negative(&self, key_kind: &str, value: &str) -> Result<u64, StoreError>;

    /// Deletes every remembered not-found, expired or not; returns how many.
    async fn forget_all_negatives(&self) -> Result<u64, StoreError>;

    /// Remembered not-founds that have not expired.
    async fn count_negatives(&self) -> Result<i64, StoreError>;
}

/// What instances sharing one database need from each other: purchase locks, invalidation
/// broadcasts and their shared secret. No-ops where one instance is all there is (SQLite).
#[async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// Waits (up to `wait`) until no other instance holds the purchase lock of `key` and
    /// takes it. `None` where one instance is all there is (SQLite): memory's single flight is
    /// then the whole lock. A wait that runs out is [`StoreError::Busy`].
    async fn lock_key(
        &self,
        space: LockSpace,
        key: &str,
        wait: Duration,
    ) -> Result<Option<Box<dyn KeyLock>>, StoreError>;

    /// Sends `payload` to every instance's [`Subscription`] (this one's included); a no-op
    /// on a single-instance backend.
    async fn broadcast(&self, payload: &str) -> Result<(), StoreError>;

    /// Listens for broadcasts; `None` on a single-instance backend.
    async fn subscribe(&self) -> Result<Option<Box<dyn Subscription>>, StoreError>;

    /// A secret shared by every instance on this database, for keyed hashes of the keys that
    /// broadcasts name; `None` on a single-instance backend.
    async fn shared_secret(&self) -> Result<Option<Vec<u8>>, StoreError>;
}

/// The database itself and the counts operators and tests read.
#[async_trait]
pub trait Admin: Send + Sync + 'static {
    /// "postgres" or "sqlite".
    fn backend(&self) -> &'static str;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// The database answers and every migration this binary knows is applied.
    async fn ready(&self) -> Result<bool, StoreError>;

    /// Closes every connection now, without waiting for anything but their release.
    async fn close(&self);

    /// Number of inbox rows in each state.
    async fn event_counts(&self) -> Result<Vec<(EventState, i64)>, StoreError>;

    async fn party_counts(&self) -> Result<PartyCounts, StoreError>;

    /// The latest `limit` erasure audit rows, newest first.
    async fn erasure_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;
}

/// The whole store: every role, as one backend implements them. Callers that need one role
/// take that role (`&dyn Inbox`, `Arc<dyn People>`, ...); an `Arc<dyn Store>` coerces to each.
pub trait Store: Inbox + People + Coordination + Admin {}

impl<T: Inbox + People + Coordination + Admin> Store for T {}

/// A pooled connection idle for longer than this is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pool options both backends start from. sqlx pings every connection before handing it
/// out unless told otherwise: on a busy pool that is one more round trip for every statement
/// run outside a transaction and every transaction begun, on the hit path and in intake alike.
/// Only a connection that sat idle is pinged now (one used within the last second is alive as
/// far as any ping could tell); one that broke meanwhile fails its statement, and the caller
/// treats that as the transient failure it is.
pub(crate) fn pool_options<DB: sqlx::Database>() -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Opens the backend the URL names. Does not migrate.
pub async fn connect(settings: &DatabaseSettings) -> Result<DynStore, StoreError> {
    let url = settings.url.expose_secret();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PgStore::connect(url, settings.max_connections, settings.lock_connections)
                .await?
                .with_async_commit_steps(settings.async_commit_steps),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, Phone};

    fn row(
        id: i64,
        lead: &str,
        phone: Option<&str>,
        email: Option<&str>,
        set: Option<&str>,
    ) -> InboxContacts {
        InboxContacts {
            id,
            source: "c2s".into(),
            lead_id: lead.into(),
            phone: phone.map(str::to_owned),
            email: email.map(str::to_owned),
            contact_set: set.map(str::to_owned),
        }
    }

    fn phone(s: &str) -> ContactKey {
        ContactKey::Phone(Phone::parse(s).unwrap())
    }

    fn email(s: &str) -> ContactKey {
        ContactKey::Email(Email::parse(s).unwrap())
    }

    #[test]
    fn a_redacted_payload_keeps_only_the_delivery_identity_and_the_erased_mark() {
        let payload = serde_json::json!({
            "id": "L-1",
            "hook_action": "on_create_lead",
            "attributes": {
                "updated_at": "2026-11-20T14:03:11-03:00",
                "customer": {"name": "Maria", "phone": "(11) 98765-4321"},
                "product": {"description": "Apartamento"}
            },
            "extra": "anything"
        });
        let redacted = redact_payload(&payload);
        assert_eq!(
            redacted,
            serde_json::json!({
                "id": "L-1",
                "hook_action": "on_create_lead",
                "attributes": {"updated_at": "2026-11-20T14:03:11-03:00"},
                "erased": true
            })
        );
        // The worker can still read which lead and delivery it was.
        let parsed = crate::intake::c2s::C2sEvent::from_payload(&redacted, "").unwrap();
        assert_eq!(parsed.lead_id.as_str(), "L-1");
        assert!(parsed.customer.keys().is_empty());
    }

    #[test]
    fn erasure_reaches_linked_leads_and_leads_carrying_a_contact_in_any_form_with_all_their_events()
    {
        let party = vec![phone("11987654321"), email("maria.souza@example.com")];
        let rows = vec![
            // Linked lead, no contact of the party in sight.
            row(1, "linked", None, Some("other@example.com"), None),
            // Carries the phone in another format, in the payload only.
            row(2, "by-payload", Some(" +55 11 98765 4321 "), None, None),
            // Carries the e-mail in the contact set only; a later event of it has neither.
            row(
                3,
                "by-set",
                None,
                None,
                Some("email:maria.souza@example.com"),
            ),
            row(4, "by-set", Some("(21) 99876-5432"), None, None),
            // Somebody else.
            row(
                5,
                "unrelated",
                Some("(31) 99876-5402"),
                Some("joao@example.org"),
                None,
            ),
        ];
        let linked = vec![("c2s".to_owned(), "linked".to_owned())];

        let (ids, keys) = erasure_scope(&party, &linked, &rows);

        assert_eq!(ids, vec![1, 2, 3, 4]);
        let mut expected = vec![
            phone("11987654321"),
            email("maria.souza@example.com"),
            email("other@example.com"),
            phone("21998765432"),
        ];
        expected.sort();
        assert_eq!(
            keys, expected,
            "the reached events' contacts are forgotten too"
        );
    }

    #[test]
    fn erasure_without_a_party_reaches_no_event() {
        let rows = vec![row(1, "a", Some("11987654321"), None, None)];
        assert_eq!(erasure_scope(&[], &[], &rows), (vec![], vec![]));
    }
}
