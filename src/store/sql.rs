//! Every statement of the store, written once for both backends.
//!
//! [`shared_sql!`] expands to the [`Inbox`](super::Inbox), [`People`](super::People) and
//! [`Admin`](super::Admin) implementations of a backend; `postgres.rs` and `sqlite.rs` each
//! invoke it once and supply, through [`Dialect`], only what truly differs: the pools, how a
//! write transaction begins, row locks and `SKIP LOCKED`, JSON paths, array binds and how
//! claims are serialized. The statements can be shared because both backends have the same
//! table names (Postgres finds schema `core` on its `search_path`), accept `$n` placeholders,
//! and take every instant bound from Rust ([`Stamp`](super::types::Stamp)): no `now()`.
//!
//! Why a macro rather than one `impl<DB: sqlx::Database>`: a generic implementation needs,
//! on every impl block and helper, the bounds that each bound or read Rust type encodes and
//! decodes on `DB` and that `&mut DB::Connection` is an executor; Rust does not infer those
//! from a trait, so the same twenty-line `where` list would be repeated on each. The macro
//! expands the one text into ordinary code per backend, checked by the compiler against each
//! driver's own types; rows are read through `#[derive(FromRow)]` structs below, generic
//! over the backend.

use serde_json::Value;
use sqlx::types::Json;

use super::types::{Claim, EventState, Outcome, Stamp};
use super::{ClaimedEvent, EventRecord, NewEvent, StoreError};
use crate::domain::Person;

/// What each backend supplies to the shared statements.
pub(super) trait Dialect: Sync {
    type DB: sqlx::Database;

    /// "postgres" or "sqlite".
    const NAME: &'static str;
    /// Appended to a `SELECT` of rows the transaction goes on to change: `FOR UPDATE` where
    /// several writers run at once; nothing where one writer holds the whole file.
    const LOCK_ROWS: &'static str;
    /// Like [`Dialect::LOCK_ROWS`], but rows another instance holds are passed over.
    const SKIP_LOCKED: &'static str;
    /// The customer's phone and e-mail in an inbox payload, as text (SQL expressions).
    const CUSTOMER_PHONE: &'static str;
    const CUSTOMER_EMAIL: &'static str;
    /// True when an inbox payload carries the erased mark (SQL condition).
    const ERASED: &'static str;

    fn migrator() -> &'static sqlx::migrate::Migrator;
    /// Connections for reads.
    fn reads(&self) -> &sqlx::Pool<Self::DB>;
    /// Connections for writes outside a transaction.
    fn writes(&self) -> &sqlx::Pool<Self::DB>;
    /// A transaction for writes.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, Self::DB>, StoreError>;
    /// A transaction for a step a later write makes durable anyway (saving a rendered
    /// message): it may commit without waiting for its flush where the backend allows.
    async fn begin_step(&self) -> Result<sqlx::Transaction<'_, Self::DB>, StoreError>;
    /// A condition, always true, that lets the statement it is added to commit without
    /// waiting for its flush where the backend allows and the settings ask for it (see
    /// [`Inbox::finish_and_look`] for the one statement that uses it, and why).
    fn unflushed(&self) -> &'static str;
    /// Runs the claim ([`claim_update`] with the dialect's [`Dialect::SKIP_LOCKED`], `$1`
    /// claim, `$2` lease end, `$3` now, `$4` limit) serialized with every other claim on the
    /// database, so no two claims judge one lead on different snapshots, and returns the
    /// claimed rows ([`event_columns`]). The claim is a step (see [`Dialect::begin_step`]). Its
    /// text is built once per store, not per claim: a claim runs for every webhook.
    async fn claim_rows(
        &self,
        claim: Claim,
        until: Stamp,
        now: Stamp,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError>;
    /// Inserts the events in one transaction: the new id of each, or `None` for a duplicate
    /// (a known key, or a repeat of an earlier key of the list), in input order.
    async fn insert_new(
        &self,
        events: &[NewEvent],
        at: Stamp,
    ) -> Result<Vec<Option<i64>>, StoreError>;
    /// The lookup contacts (see [`LOOKUP_CONTACTS`]) of these parties.
    async fn lookup_contacts(
        &self,
        parties: &[i64],
    ) -> Result<Vec<(i64, String, String)>, StoreError>;
}

/// The claim: up to `$4` events due at `$3` whose lead has no earlier unfinished event and no
/// event in hand, oldest due first, marked as held by claim `$1` until `$2`. Without a
/// `RETURNING`: each dialect says what it returns (see [`Dialect::claim_rows`]).
pub(super) fn claim_update(skip_locked: &str) -> String {
    format!(
        "UPDATE webhook_inbox
            SET state = 'processing', claim_token = $1, lease_until = $2, updated_at = $3
          WHERE id IN (
            SELECT i.id FROM webhook_inbox i
             WHERE ((i.state = 'pending' AND i.next_attempt_at <= $3)
                 OR (i.state = 'processing' AND i.lease_until < $3))
               AND NOT EXISTS (
                 SELECT 1 FROM webhook_inbox e
                  WHERE e.source = i.source AND e.lead_id = i.lead_id
                    AND e.id <> i.id
                    AND ((e.state IN ('pending', 'processing')
                          AND (e.event_at, e.id) < (i.event_at, i.id))
                      OR (e.state = 'processing' AND e.lease_until >= $3)))
             ORDER BY i.next_attempt_at, i.id
             LIMIT $4 {skip_locked})"
    )
}

/// The columns of a claimed event, for [`EventRow`], given the dialect's erased-payload
/// condition ([`Dialect::ERASED`]). The raw payload itself stays in the database: the worker
/// reads the stored lead event, and needs of the payload only whether an erasure redacted it.
pub(super) fn event_columns(erased: &str) -> String {
    format!(
        "id, source, lead_id, event_at, action, ({erased}) AS erased, lead_event, attempts, \
         contact_set, message, (send_started_at IS NOT NULL) AS send_started, \
         unknown_outcomes, next_attempt_at AS due_at"
    )
}

/// The columns of an event as operators see it, for [`RecordRow`].
pub(super) const RECORD_COLUMNS: &str = "id, source, lead_id, event_at, action, state, attempts, \
     outcome, last_error, (delivered_at IS NOT NULL) AS delivered";

/// The contacts for which a party is the current lookup answer: lookup rows of a phone or an
/// e-mail that no later lookup of the same value superseded, and whose lookup listed this one
/// candidate only: a contact listing several is left to the database, so memory never holds
/// a shorter list than the one a lead's choice is made from. Each dialect adds which parties.
pub(super) const LOOKUP_CONTACTS: &str = "SELECT c.party_id, c.kind, c.value FROM party_contacts c
  WHERE c.source = 'lookup' AND c.kind IN ('phone', 'email')
    AND (SELECT COUNT(*) FROM contact_candidates k
          WHERE k.kind = c.kind AND k.value = c.value) <= 1
    AND NOT EXISTS (
      SELECT 1 FROM party_contacts n
       WHERE n.kind = c.kind AND n.value = c.value AND n.source = 'lookup'
         AND (n.created_at, n.id) > (c.created_at, c.id))";

/// Its order: per party, newest lookup first.
pub(super) const LOOKUP_CONTACTS_ORDER: &str = "ORDER BY c.party_id, c.created_at DESC, c.id DESC";

/// What every way of leaving a claim clears; `$1` is the event, `$2` its claim, `$3` now.
pub(super) const LET_GO: &str = "send_started_at = NULL, claim_token = NULL, lease_until = NULL,
        updated_at = $3
  WHERE id = $1 AND claim_token = $2";

/// What a finish returns: whether another event of the same lead is pending.
pub(super) const SUCCESSOR: &str = "RETURNING EXISTS (
    SELECT 1 FROM webhook_inbox e
     WHERE e.source = webhook_inbox.source AND e.lead_id = webhook_inbox.lead_id
       AND e.id <> webhook_inbox.id AND e.state = 'pending')";

/// Which rows a holder of a claim may still write: `$1` the event, `$2` its claim.
pub(super) const OURS: &str = "WHERE id = $1 AND claim_token = $2 AND state = 'processing'";

/// What a replay resets (`$1` is now); the `WHERE` adds which rows. Keeps `message`,
/// `contact_set` and `last_error`.
pub(super) const REPLAY: &str = "UPDATE webhook_inbox
    SET state = 'pending', attempts = 0, next_attempt_at = $1, claim_token = NULL,
        lease_until = NULL, send_started_at = NULL, unknown_outcomes = 0, outcome = NULL,
        updated_at = $1
  WHERE state = 'dead'";

pub(super) const FORGET_NEGATIVE: &str =
    "DELETE FROM negative_lookups WHERE kind = $1 AND value = $2";

/// An inbox row claimed by a worker.
#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    id: i64,
    source: String,
    lead_id: String,
    event_at: Stamp,
    action: String,
    erased: bool,
    lead_event: Option<Json<Value>>,
    attempts: i32,
    contact_set: Option<String>,
    message: Option<String>,
    send_started: bool,
    unknown_outcomes: i32,
    due_at: Stamp,
}

impl EventRow {
    pub(super) fn claimed(self, claim: uuid::Uuid) -> ClaimedEvent {
        ClaimedEvent {
            id: self.id,
            claim,
            source: self.source,
            lead_id: self.lead_id,
            event_at: self.event_at.0,
            action: self.action,
            erased: self.erased,
            lead_event: self.lead_event.map(|e| e.0),
            attempts: self.attempts,
            contact_set: self.contact_set,
            message: self.message,
            send_started: self.send_started,
            unknown_outcomes: self.unknown_outcomes,
            due_at: self.due_at.0,
        }
    }
}

/// An inbox row as operators see it.
#[derive(sqlx::FromRow)]
pub(super) struct RecordRow {
    id: i64,
    source: String,
    lead_id: String,
    event_at: Stamp,
    action: String,
    state: EventState,
    attempts: i32,
    outcome: Option<Outcome>,
    last_error: Option<String>,
    delivered: bool,
}

impl From<RecordRow> for EventRecord {
    fn from(r: RecordRow) -> EventRecord {
        EventRecord {
            id: r.id,
            source: r.source,
            lead_id: r.lead_id,
            event_at: r.event_at.0,
            action: r.action,
            state: r.state,
            attempts: r.attempts,
            outcome: r.outcome,
            last_error: r.last_error,
            delivered: r.delivered,
        }
    }
}

/// The latest enrichment of a party, as warming reads it.
#[derive(sqlx::FromRow)]
pub(super) struct RecentRow {
    pub party: i64,
    pub cpf: String,
    pub enrichment: i64,
    pub data: Json<Person>,
    pub fetched_at: Stamp,
}

/// The shared implementation of [`Inbox`](super::Inbox), [`People`](super::People) and
/// [`Admin`](super::Admin) for a store that implements [`Dialect`].
macro_rules! shared_sql {
    ($store:ident) => {
        mod shared {
            use std::time::Duration;

            use serde_json::Value;
            use sqlx::types::Json;
            use time::OffsetDateTime;
            use uuid::Uuid;

            use super::$store as Backend;
            use $crate::domain::{
                Candidate, Candidates, ContactKey, Cpf, CpfCandidate, LeadId, Person,
            };
            use $crate::event::{LeadEvent, Source};
            use $crate::store::sql::*;
            use $crate::store::types::{Claim, ContactOrigin, EventState, Outcome, Provider, Stamp};
            use $crate::store::{
                AuditRecord, ClaimedEvent, CrmCreation, Erasure, EventRecord, Finish, InboxContacts,
                InsertOutcome, LeadLink, Lookup, NewEvent, PURGE_BATCH, PartyCounts, Replay,
                StoreError, StoredPerson, UnconvertedEvent, WarmCursor, WarmPerson,
                contact_keys_of, erasure_scope, keys_by_party, person_contacts, purge_payload,
                read_lead_event, redact_payload,
            };

            #[async_trait::async_trait]
            impl $crate::store::Admin for Backend {
                fn backend(&self) -> &'static str {
                    <Self as Dialect>::NAME
                }

                async fn migrate(&self) -> Result<(), StoreError> {
                    <Self as Dialect>::migrator().run(self.writes()).await?;
                    Ok(())
                }

                async fn ready(&self) -> Result<bool, StoreError> {
                    let applied: Vec<i64> = match sqlx::query_scalar(
                        "SELECT version FROM _sqlx_migrations WHERE success",
                    )
                    .fetch_all(self.reads())
                    .await
                    {
                            Ok(v) => v,
                            // No migrations table yet: reachable, not ready.
                            Err(sqlx::Error::Database(_)) => return Ok(false),
                            Err(e) => return Err(e.into()),
                        };
                    Ok(<Self as Dialect>::migrator()
                        .iter()
                        .all(|m| applied.contains(&m.version)))
                }

                async fn close(&self) {
                    self.close_pools().await;
                }

                async fn event_counts(&self) -> Result<Vec<(EventState, i64)>, StoreError> {
                    Ok(sqlx::query_as(
                        "SELECT state, count(*) FROM webhook_inbox GROUP BY state ORDER BY state",
                    )
                    .fetch_all(self.reads())
                    .await?)
                }

                async fn party_counts(&self) -> Result<PartyCounts, StoreError> {
                    let (parties, contacts, enrichments, lead_links, negatives) = sqlx::query_as(
                        "SELECT (SELECT count(*) FROM parties),
                                (SELECT count(*) FROM party_contacts),
                                (SELECT count(*) FROM party_enrichments),
                                (SELECT count(*) FROM lead_parties),
                                (SELECT count(*) FROM negative_lookups)",
                    )
                    .fetch_one(self.reads())
                    .await?;
                    Ok(PartyCounts {
                        parties,
                        contacts,
                        enrichments,
                        lead_links,
                        negatives,
                    })
                }

                async fn erasure_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
                    let rows: Vec<(i64, Stamp, String, String, Json<Value>)> = sqlx::query_as(
                        "SELECT id, at, action, cpf_hash, counts FROM erasure_audit
                          ORDER BY at DESC, id DESC LIMIT $1",
                    )
                    .bind(i64::from(limit))
                    .fetch_all(self.reads())
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(id, at, action, cpf_hash, counts)| AuditRecord {
                            id,
                            at: at.0,
                            action,
                            cpf_hash,
                            counts: counts.0,
                        })
                        .collect())
                }
            }

            #[async_trait::async_trait]
            impl $crate::store::Inbox for Backend {
                async fn watermark(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError> {
                    let at: Option<Stamp> =
                        sqlx::query_scalar("SELECT at FROM watermarks WHERE name = $1")
                            .bind(name)
                            .fetch_optional(self.reads())
                            .await?;
                    Ok(at.map(|s| s.0))
                }

                async fn set_watermark(&self, name: &str, at: OffsetDateTime) -> Result<(), StoreError> {
                    sqlx::query(
                        "INSERT INTO watermarks (name, at) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET at = excluded.at
                         WHERE watermarks.at < excluded.at",
                    )
                    .bind(name)
                    .bind(Stamp(at))
                    .execute(self.writes())
                    .await?;
                    Ok(())
                }

                async fn insert_events(
                    &self,
                    events: &[NewEvent],
                ) -> Result<Vec<InsertOutcome>, StoreError> {
                    if events.is_empty() {
                        return Ok(Vec::new());
                    }
                    let ids = self.insert_new(events, Stamp::now()).await?;
                    if ids.len() != events.len() {
                        return Err(StoreError::Corrupt(format!(
                            "{} outcomes for {} events",
                            ids.len(),
                            events.len()
                        )));
                    }
                    Ok(ids
                        .into_iter()
                        .map(|id| id.map_or(InsertOutcome::Duplicate, InsertOutcome::Accepted))
                        .collect())
                }

                async fn claim_events(
                    &self,
                    limit: u32,
                    lease: Duration,
                ) -> Result<Vec<ClaimedEvent>, StoreError> {
                    let claim = Uuid::now_v7();
                    let now = Stamp::now();
                    let rows = self
                        .claim_rows(
                            Claim(claim),
                            Stamp(now.0 + lease),
                            now,
                            i64::from(limit),
                        )
                        .await?;
                    Ok(rows.into_iter().map(|r| r.claimed(claim)).collect())
                }

                async fn previous_contact_set(
                    &self,
                    event: &ClaimedEvent,
                ) -> Result<Option<String>, StoreError> {
                    Ok(sqlx::query_scalar(
                        "SELECT contact_set FROM webhook_inbox
                          WHERE source = $1 AND lead_id = $2 AND contact_set IS NOT NULL
                            AND (event_at, id) < ($3, $4)
                          ORDER BY event_at DESC, id DESC LIMIT 1",
                    )
                    .bind(&event.source)
                    .bind(&event.lead_id)
                    .bind(Stamp(event.event_at))
                    .bind(event.id)
                    .fetch_optional(self.reads())
                    .await?)
                }

                async fn save_rendered(
                    &self,
                    event: &ClaimedEvent,
                    contact_set: &str,
                    message: &str,
                    links: &[LeadLink],
                ) -> Result<bool, StoreError> {
                    self.save_message(event, contact_set, message, links, false).await
                }

                async fn save_and_mark_sending(
                    &self,
                    event: &ClaimedEvent,
                    contact_set: &str,
                    message: &str,
                    links: &[LeadLink],
                ) -> Result<bool, StoreError> {
                    self.save_message(event, contact_set, message, links, true).await
                }

                async fn mark_sending(&self, event: &ClaimedEvent) -> Result<bool, StoreError> {
                    let sql = format!(
                        "UPDATE webhook_inbox SET send_started_at = $3, updated_at = $3 {OURS}"
                    );
                    self.write_ours(event, sql, Some(Stamp::now())).await
                }

                async fn note_unknown_outcome(
                    &self,
                    event: &ClaimedEvent,
                ) -> Result<bool, StoreError> {
                    let sql = format!(
                        "UPDATE webhook_inbox SET unknown_outcomes = unknown_outcomes + 1 {OURS}"
                    );
                    self.write_ours(event, sql, None).await
                }

                async fn renew_lease(
                    &self,
                    event: &ClaimedEvent,
                    lease: Duration,
                ) -> Result<bool, StoreError> {
                    let sql = format!("UPDATE webhook_inbox SET lease_until = $3 {OURS}");
                    let until = Stamp(OffsetDateTime::now_utc() + lease);
                    self.write_ours(event, sql, Some(until)).await
                }

                    async fn claim_crm_creation(
                        &self,
                        source: Source,
                        key: &LeadId,
                        max_calls: u32,
                        busy_for: Duration,
                        now: OffsetDateTime,
                    ) -> Result<CrmCreation, StoreError> {
                        // The first claim inserts the intent; the primary key makes it one winner.
                        let calls: Option<i32> = sqlx::query_scalar(
                            "INSERT INTO crm_creations (source, source_lead, calls, claimed_at, created_at)
                             VALUES ($1, $2, 1, $3, $3)
                             ON CONFLICT (source, source_lead) DO NOTHING RETURNING calls",
                        )
                        .bind(source)
                        .bind(key.as_str())
                        .bind(Stamp(now))
                        .fetch_optional(self.writes())
                        .await?;
                        if calls.is_some() {
                            return Ok(CrmCreation::Claimed { attempt: 1 });
                        }
                        // A later attempt: one conditional update, so two claimers never take the same one.
                        let calls: Option<i32> = sqlx::query_scalar(
                            "UPDATE crm_creations SET calls = calls + 1, claimed_at = $3
                              WHERE source = $1 AND source_lead = $2 AND crm_lead_id IS NULL
                                AND calls < $4 AND claimed_at <= $5
                              RETURNING calls",
                        )
                        .bind(source)
                        .bind(key.as_str())
                        .bind(Stamp(now))
                        .bind(i32::try_from(max_calls).unwrap_or(i32::MAX))
                        .bind(Stamp(now - busy_for))
                        .fetch_optional(self.writes())
                        .await?;
                        if let Some(calls) = calls {
                            return Ok(CrmCreation::Claimed {
                                attempt: u32::try_from(calls).unwrap_or(0),
                            });
                        }
                        let row: Option<(Option<String>, i32, Stamp)> = sqlx::query_as(
                            "SELECT crm_lead_id, calls, claimed_at FROM crm_creations
                              WHERE source = $1 AND source_lead = $2",
                        )
                        .bind(source)
                        .bind(key.as_str())
                        .fetch_optional(self.writes())
                        .await?;
                        match row {
                            Some((Some(id), _, _)) => Ok(CrmCreation::Created(
                                LeadId::parse(&id).map_err(|_| StoreError::Corrupt("crm lead id".into()))?,
                            )),
                            Some((None, calls, claimed_at)) => {
                                let until = claimed_at.0 + busy_for;
                                if until > now {
                                    Ok(CrmCreation::Busy { until })
                                } else {
                                    Ok(CrmCreation::Exhausted {
                                        attempts: u32::try_from(calls).unwrap_or(0),
                                    })
                                }
                            }
                            // No row after a failed insert: not possible while rows are never deleted; the
                            // caller asks again.
                            None => Ok(CrmCreation::Busy { until: now }),
                        }
                    }

                    async fn record_crm_created(
                        &self,
                        source: Source,
                        key: &LeadId,
                        crm_lead: &LeadId,
                    ) -> Result<(), StoreError> {
                        sqlx::query(
                            "UPDATE crm_creations SET crm_lead_id = $3, created_at = $4
                              WHERE source = $1 AND source_lead = $2",
                        )
                        .bind(source)
                        .bind(key.as_str())
                        .bind(crm_lead.as_str())
                        .bind(Stamp::now())
                        .execute(self.writes())
                        .await?;
                        Ok(())
                    }

                    async fn release_crm_creation(
                        &self,
                        source: Source,
                        key: &LeadId,
                    ) -> Result<(), StoreError> {
                        // Claimed at the epoch: the next claim is not kept waiting for an answer that came.
                        sqlx::query(
                            "UPDATE crm_creations SET calls = calls - 1, claimed_at = $3
                              WHERE source = $1 AND source_lead = $2 AND crm_lead_id IS NULL AND calls > 0",
                        )
                        .bind(source)
                        .bind(key.as_str())
                        .bind(Stamp(OffsetDateTime::UNIX_EPOCH))
                        .execute(self.writes())
                        .await?;
                        Ok(())
                    }

                    async fn crm_creation(
                        &self,
                        source: Source,
                        key: &LeadId,
                    ) -> Result<Option<(Option<LeadId>, u32)>, StoreError> {
                        let row: Option<(Option<String>, i32)> = sqlx::query_as(
                            "SELECT crm_lead_id, calls FROM crm_creations
                              WHERE source = $1 AND source_lead = $2",
                        )
                        .bind(source)
                        .bind(key.as_str())
                        .fetch_optional(self.reads())
                        .await?;
                        row.map(|(id, calls)| {
                            let id = id
                                .map(|id| LeadId::parse(&id))
                                .transpose()
                                .map_err(|_| StoreError::Corrupt("crm lead id".into()))?;
                            Ok((id, u32::try_from(calls).unwrap_or(0)))
                        })
                        .transpose()
                    }


                async fn finish_and_look(
                    &self,
                    event: &ClaimedEvent,
                    finish: Finish,
                ) -> Result<Option<bool>, StoreError> {
                    let now = Stamp::now();
                    let pending = |at: OffsetDateTime, error: String, counted: i32| {
                        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                            "UPDATE webhook_inbox
                                SET state = 'pending', attempts = attempts + $6,
                                    next_attempt_at = $4, last_error = $5, {LET_GO}
                             {SUCCESSOR}"
                        )))
                        .bind(event.id)
                        .bind(Claim(event.claim))
                        .bind(now)
                        .bind(Stamp(at))
                        .bind(error)
                        .bind(counted)
                    };
                    let q = match finish {
                        // Only a done end may skip its flush (see `Inbox::finish_and_look`): a
                        // retry, park or dead letter undone by a database crash would turn a
                        // POST that never left into an unknown outcome.
                        Finish::Done {
                            outcome,
                            contact_set,
                        } => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                            "UPDATE webhook_inbox
                                SET state = 'done', outcome = $4,
                                    contact_set = COALESCE($5, contact_set),
                                    delivered_at = $6, last_error = NULL, {LET_GO}
                                AND {}
                             {SUCCESSOR}",
                            self.unflushed()
                        )))
                        .bind(event.id)
                        .bind(Claim(event.claim))
                        .bind(now)
                        .bind(outcome)
                        .bind(contact_set)
                        .bind((outcome == Outcome::Delivered).then_some(now)),
                        Finish::Retry { at, error } => pending(at, error, 1),
                        // A parked event waits for its provider without spending an attempt.
                        Finish::Park { at, error } => pending(at, error, 0),
                        Finish::Dead { reason } => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                            "UPDATE webhook_inbox
                                SET state = 'dead', attempts = attempts + 1, outcome = 'dead',
                                    last_error = $4, {LET_GO}
                             {SUCCESSOR}"
                        )))
                        .bind(event.id)
                        .bind(Claim(event.claim))
                        .bind(now)
                        .bind(reason),
                    };
                    Ok(q.fetch_optional(self.writes()).await?)
                }

                async fn release(&self, event: &ClaimedEvent) -> Result<bool, StoreError> {
                    Ok(sqlx::query(
                        "UPDATE webhook_inbox
                            SET state = 'pending', claim_token = NULL, lease_until = NULL,
                                next_attempt_at = $3, updated_at = $3
                          WHERE id = $1 AND claim_token = $2 AND send_started_at IS NULL",
                    )
                    .bind(event.id)
                    .bind(Claim(event.claim))
                    .bind(Stamp::now())
                    .execute(self.writes())
                    .await?
                    .rows_affected()
                        == 1)
                }

                async fn event(&self, id: i64) -> Result<Option<EventRecord>, StoreError> {
                    let sql = format!("SELECT {RECORD_COLUMNS} FROM webhook_inbox WHERE id = $1");
                    let row: Option<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(id)
                        .fetch_optional(self.reads())
                        .await?;
                    Ok(row.map(EventRecord::from))
                }

                async fn events(
                    &self,
                    state: Option<EventState>,
                    limit: u32,
                ) -> Result<Vec<EventRecord>, StoreError> {
                    let sql = format!(
                        "SELECT {RECORD_COLUMNS} FROM webhook_inbox
                          WHERE ($1 IS NULL OR state = $1) ORDER BY id DESC LIMIT $2"
                    );
                    let rows: Vec<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(state)
                        .bind(i64::from(limit))
                        .fetch_all(self.reads())
                        .await?;
                    Ok(rows.into_iter().map(EventRecord::from).collect())
                }

                async fn replay_event(&self, id: i64) -> Result<Replay, StoreError> {
                    let sql = format!("{REPLAY} AND id = $2");
                    let replayed = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(Stamp::now())
                        .bind(id)
                        .execute(self.writes())
                        .await?
                        .rows_affected();
                    if replayed == 1 {
                        return Ok(Replay::Replayed);
                    }
                    let state: Option<EventState> =
                        sqlx::query_scalar("SELECT state FROM webhook_inbox WHERE id = $1")
                            .bind(id)
                            .fetch_optional(self.reads())
                            .await?;
                    Ok(state.map_or(Replay::NotFound, |state| Replay::NotReplayable { state }))
                }

                async fn replay_dead(&self) -> Result<u64, StoreError> {
                    Ok(sqlx::query(REPLAY)
                        .bind(Stamp::now())
                        .execute(self.writes())
                        .await?
                        .rows_affected())
                }

                async fn latest_event(
                    &self,
                    source: Source,
                    lead: &LeadId,
                ) -> Result<Option<LeadEvent>, StoreError> {
                    let stored: Option<Json<Value>> = sqlx::query_scalar(
                        "SELECT lead_event FROM webhook_inbox
                          WHERE source = $1 AND lead_id = $2 AND lead_event IS NOT NULL
                          ORDER BY event_at DESC, id DESC LIMIT 1",
                    )
                    .bind(source)
                    .bind(lead.as_str())
                    .fetch_optional(self.reads())
                    .await?;
                    stored.map(|e| read_lead_event(&e.0)).transpose()
                }

                async fn events_without_lead_event(
                    &self,
                    after: i64,
                    limit: u32,
                ) -> Result<Vec<UnconvertedEvent>, StoreError> {
                    let sql = format!(
                        "SELECT id, action, payload FROM webhook_inbox
                          WHERE lead_event IS NULL AND id > $1 AND NOT ({})
                          ORDER BY id LIMIT $2",
                        <Self as Dialect>::ERASED
                    );
                    let rows: Vec<(i64, String, Json<Value>)> =
                        sqlx::query_as(sqlx::AssertSqlSafe(sql))
                            .bind(after)
                            .bind(i64::from(limit))
                            .fetch_all(self.reads())
                            .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(id, action, payload)| UnconvertedEvent {
                            id,
                            action,
                            payload: payload.0,
                        })
                        .collect())
                }

                async fn set_lead_event(
                    &self,
                    id: i64,
                    event: &LeadEvent,
                ) -> Result<bool, StoreError> {
                    // Only while still missing and not erased meanwhile.
                    let sql = format!(
                        "UPDATE webhook_inbox SET lead_event = $2
                          WHERE id = $1 AND lead_event IS NULL AND NOT ({})",
                        <Self as Dialect>::ERASED
                    );
                    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(id)
                        .bind(Json(event.to_stored()))
                        .execute(self.writes())
                        .await?
                        .rows_affected()
                        == 1)
                }

                async fn prune_done(&self, older_than: OffsetDateTime) -> Result<u64, StoreError> {
                    Ok(sqlx::query(
                        "DELETE FROM webhook_inbox
                          WHERE state = 'done' AND updated_at < $1
                            AND EXISTS (SELECT 1 FROM webhook_inbox n
                                         WHERE n.source = webhook_inbox.source
                                           AND n.lead_id = webhook_inbox.lead_id
                                           AND (n.event_at, n.id)
                                               > (webhook_inbox.event_at, webhook_inbox.id))",
                    )
                    .bind(Stamp(older_than))
                    .execute(self.writes())
                    .await?
                    .rows_affected())
                }

                async fn purge_payloads(
                    &self,
                    older_than: OffsetDateTime,
                ) -> Result<u64, StoreError> {
                    // Another instance purging at the same time takes other rows.
                    let select = format!(
                        "SELECT id, payload FROM webhook_inbox
                          WHERE state = 'done' AND updated_at < $1 AND NOT ({})
                          ORDER BY id LIMIT $2 {}",
                        <Self as Dialect>::ERASED,
                        <Self as Dialect>::SKIP_LOCKED
                    );
                    let mut purged = 0;
                    loop {
                        let mut tx = self.begin_write().await?;
                        let rows: Vec<(i64, Json<Value>)> =
                            sqlx::query_as(sqlx::AssertSqlSafe(select.clone()))
                                .bind(Stamp(older_than))
                                .bind(PURGE_BATCH)
                                .fetch_all(&mut *tx)
                                .await?;
                        for (id, payload) in &rows {
                            sqlx::query(
                                "UPDATE webhook_inbox
                                    SET payload = $2, lead_event = NULL, message = NULL,
                                        contact_set = CASE WHEN EXISTS (
                                            SELECT 1 FROM webhook_inbox n
                                             WHERE n.source = webhook_inbox.source
                                               AND n.lead_id = webhook_inbox.lead_id
                                               AND n.contact_set IS NOT NULL
                                               AND (n.event_at, n.id)
                                                   > (webhook_inbox.event_at, webhook_inbox.id))
                                            THEN NULL ELSE contact_set END
                                  WHERE id = $1",
                            )
                            .bind(id)
                            .bind(Json(purge_payload(&payload.0)))
                            .execute(&mut *tx)
                            .await?;
                        }
                        tx.commit().await?;
                        purged += rows.len() as u64;
                        if (rows.len() as i64) < PURGE_BATCH {
                            return Ok(purged);
                        }
                    }
                }
            }

            #[async_trait::async_trait]
            impl $crate::store::People for Backend {
                async fn find_contact(
                    &self,
                    key: &ContactKey,
                ) -> Result<Option<Lookup<Cpf>>, StoreError> {
                    let cpf: Option<String> = sqlx::query_scalar(
                        "SELECT p.cpf FROM party_contacts c JOIN parties p ON p.id = c.party_id
                          WHERE c.kind = $1 AND c.value = $2 AND c.source = 'lookup'
                          ORDER BY c.created_at DESC, c.id DESC LIMIT 1",
                    )
                    .bind(key.kind().as_str())
                    .bind(key.value())
                    .fetch_optional(self.reads())
                    .await?;
                    if let Some(cpf) = cpf {
                        return Ok(Some(Lookup::Found(parse_cpf(&cpf)?)));
                    }
                    self.negative(key.kind().as_str(), key.value()).await
                }

                async fn find_candidates(
                    &self,
                    key: &ContactKey,
                ) -> Result<Option<Lookup<Candidates>>, StoreError> {
                    let (kind, value) = (key.kind().as_str(), key.value());
                    let rows: Vec<CandidateRow> = sqlx::query_as(
                        "SELECT cpf, cnpj, name FROM contact_candidates
                          WHERE kind = $1 AND value = $2 ORDER BY position",
                    )
                    .bind(kind)
                    .bind(value)
                    .fetch_all(self.reads())
                    .await?;
                    if !rows.is_empty() {
                        return Ok(Some(Lookup::Found(candidates_of(rows)?)));
                    }
                    // Looked up before candidate lists were kept: the one party it answered.
                    let party: Option<(String, Option<String>)> = sqlx::query_as(
                        "SELECT p.cpf, p.name FROM party_contacts c JOIN parties p ON p.id = c.party_id
                          WHERE c.kind = $1 AND c.value = $2 AND c.source = 'lookup'
                          ORDER BY c.created_at DESC, c.id DESC LIMIT 1",
                    )
                    .bind(kind)
                    .bind(value)
                    .fetch_optional(self.reads())
                    .await?;
                    if let Some((cpf, name)) = party {
                        let cpf = parse_cpf(&cpf)?;
                        return Ok(Some(Lookup::Found(Candidates::one(CpfCandidate { cpf, name }))));
                    }
                    self.negative(kind, value).await
                }

                async fn record_candidates(
                    &self,
                    key: &ContactKey,
                    answer: &Lookup<Candidates>,
                    negative_until: OffsetDateTime,
                ) -> Result<(), StoreError> {
                    let now = Stamp::now();
                    let (kind, value) = (key.kind().as_str(), key.value());
                    let mut tx = self.begin_write().await?;
                    match answer {
                        Lookup::Found(candidates) => {
                            // The latest answer replaces the list whole: a shorter one must not
                            // keep the tail of a longer one.
                            sqlx::query(
                                "DELETE FROM contact_candidates WHERE kind = $1 AND value = $2",
                            )
                            .bind(kind)
                            .bind(value)
                            .execute(&mut *tx)
                            .await?;
                            for (position, candidate) in candidates.iter().enumerate() {
                                let (cpf, cnpj) = match candidate {
                                    Candidate::Person(p) => (Some(p.cpf.as_str()), None),
                                    Candidate::Company { cnpj, .. } => (None, Some(cnpj.as_str())),
                                };
                                sqlx::query(
                                    "INSERT INTO contact_candidates
                                       (kind, value, position, cpf, cnpj, name, created_at)
                                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                                )
                                .bind(kind)
                                .bind(value)
                                .bind(i32::try_from(position).unwrap_or(i32::MAX))
                                .bind(cpf)
                                .bind(cnpj)
                                .bind(candidate.name())
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                            }
                            // The lookup index keeps naming the first person: what
                            // `find_contact`, warming and erasure read.
                            if let Some(first) = candidates.first_person() {
                                let name = first.name.as_deref();
                                let party = upsert_party(&mut tx, &first.cpf, name, now).await?;
                                let origin = ContactOrigin::Lookup;
                                insert_contact(&mut tx, party, kind, value, origin, now).await?;
                            }
                            sqlx::query(FORGET_NEGATIVE)
                                .bind(kind)
                                .bind(value)
                                .execute(&mut *tx)
                                .await?;
                        }
                        Lookup::NotFound => {
                            let until = Stamp(negative_until);
                            remember_negative(&mut tx, kind, value, Provider::Diretrix, until, now)
                                .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn find_person(
                    &self,
                    cpf: &Cpf,
                    fresh_since: OffsetDateTime,
                ) -> Result<Option<Lookup<StoredPerson>>, StoreError> {
                    let row: Option<(Json<Person>, Stamp)> = sqlx::query_as(
                        "SELECT e.data, e.fetched_at FROM party_enrichments e
                           JOIN parties p ON p.id = e.party_id
                          WHERE p.cpf = $1 AND e.fetched_at >= $2
                          ORDER BY e.fetched_at DESC, e.id DESC LIMIT 1",
                    )
                    .bind(cpf.as_str())
                    .bind(Stamp(fresh_since))
                    .fetch_optional(self.reads())
                    .await
                    .map_err(corrupt_json("enrichment data"))?;
                    if let Some((person, fetched_at)) = row {
                        return Ok(Some(Lookup::Found(StoredPerson {
                            person: person.0,
                            fetched_at: fetched_at.0,
                        })));
                    }
                    self.negative("cpf", cpf.as_str()).await
                }

                async fn record_person(
                    &self,
                    cpf: &Cpf,
                    answer: &Lookup<(Value, Person)>,
                    provider: Provider,
                    negative_until: OffsetDateTime,
                ) -> Result<(), StoreError> {
                    let now = Stamp::now();
                    let mut tx = self.begin_write().await?;
                    match answer {
                        Lookup::Found((raw, person)) => {
                            let name = person.name.as_deref();
                            let party = upsert_party(&mut tx, cpf, name, now).await?;
                            for (kind, value) in person_contacts(person) {
                                let origin = ContactOrigin::Person;
                                insert_contact(&mut tx, party, kind, &value, origin, now).await?;
                            }
                            sqlx::query(
                                "INSERT INTO party_enrichments
                                   (party_id, provider, raw, data, fetched_at)
                                 VALUES ($1, $2, $3, $4, $5)",
                            )
                            .bind(party)
                            .bind(provider)
                            .bind(Json(raw))
                            .bind(Json(person))
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            sqlx::query(FORGET_NEGATIVE)
                                .bind("cpf")
                                .bind(cpf.as_str())
                                .execute(&mut *tx)
                                .await?;
                        }
                        Lookup::NotFound => {
                            let until = Stamp(negative_until);
                            remember_negative(&mut tx, "cpf", cpf.as_str(), provider, until, now)
                                .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn erase_party(
                    &self,
                    cpf: &Cpf,
                    action: &str,
                    cpf_hash: &str,
                ) -> Result<Erasure, StoreError> {
                    let now = Stamp::now();
                    let lock = <Self as Dialect>::LOCK_ROWS;
                    let mut tx = self.begin_write().await?;
                    // Locking the party makes concurrent writers of its contacts and links wait
                    // for the erasure (and then find no party) rather than add rows it would miss.
                    let sql = format!("SELECT id FROM parties WHERE cpf = $1 {lock}");
                    let party: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(cpf.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    let mut erasure = Erasure {
                        found: party.is_some(),
                        ..Erasure::default()
                    };
                    let mut party_keys = Vec::new();
                    let mut linked: Vec<(String, String)> = Vec::new();
                    if let Some(party) = party {
                        let rows: Vec<(String, String)> = sqlx::query_as(
                            "SELECT kind, value FROM party_contacts WHERE party_id = $1",
                        )
                        .bind(party)
                        .fetch_all(&mut *tx)
                        .await?;
                        party_keys = contact_keys_of(&rows);
                        linked = sqlx::query_as(
                            "SELECT DISTINCT source, lead_id FROM lead_parties WHERE party_id = $1",
                        )
                        .bind(party)
                        .fetch_all(&mut *tx)
                        .await?;
                    }
                    // The inbox holds the CRM's copy of the person (name, phone, e-mail) and the
                    // rendered message holds the bought data: the events of every lead the person
                    // reaches are redacted in this same transaction.
                    let sql = format!(
                        "SELECT id, source, lead_id, {} AS phone, {} AS email, contact_set
                           FROM webhook_inbox",
                        <Self as Dialect>::CUSTOMER_PHONE,
                        <Self as Dialect>::CUSTOMER_EMAIL
                    );
                    let inbox: Vec<InboxContacts> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .fetch_all(&mut *tx)
                        .await?;
                    let (event_ids, keys) = erasure_scope(&party_keys, &linked, &inbox);
                    let select = format!("SELECT payload FROM webhook_inbox WHERE id = $1 {lock}");
                    for id in &event_ids {
                        let payload: Json<Value> =
                            sqlx::query_scalar(sqlx::AssertSqlSafe(select.clone()))
                                .bind(id)
                                .fetch_one(&mut *tx)
                                .await?;
                        sqlx::query(
                            "UPDATE webhook_inbox
                            SET payload = $2, lead_event = NULL, contact_set = NULL,
                                message = NULL,
                                state = CASE WHEN state = 'processing' THEN 'pending'
                                             ELSE state END,
                                claim_token = CASE WHEN state = 'processing' THEN NULL
                                                   ELSE claim_token END,
                                lease_until = CASE WHEN state = 'processing' THEN NULL
                                                   ELSE lease_until END,
                                send_started_at = CASE WHEN state = 'processing' THEN NULL
                                                       ELSE send_started_at END,
                                updated_at = $3
                          WHERE id = $1",
                        )
                        .bind(id)
                        .bind(Json(redact_payload(&payload.0)))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    erasure.events = event_ids.len() as u64;
                    erasure.negatives = sqlx::query(FORGET_NEGATIVE)
                        .bind("cpf")
                        .bind(cpf.as_str())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    for key in &keys {
                        erasure.negatives += sqlx::query(FORGET_NEGATIVE)
                            .bind(key.kind().as_str())
                            .bind(key.value())
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                    }
                    erasure.contact_keys = keys;
                    if let Some(party) = party {
                        // Children first, each counted; the cascades then have nothing left to do.
                        for (table, count) in [
                            ("lead_parties", &mut erasure.lead_links),
                            ("party_enrichments", &mut erasure.enrichments),
                            ("party_contacts", &mut erasure.contacts),
                        ] {
                            let sql = format!("DELETE FROM {table} WHERE party_id = $1");
                            *count = sqlx::query(sqlx::AssertSqlSafe(sql))
                                .bind(party)
                                .execute(&mut *tx)
                                .await?
                                .rows_affected();
                        }
                        sqlx::query("DELETE FROM parties WHERE id = $1")
                            .bind(party)
                            .execute(&mut *tx)
                            .await?;
                    }
                    // The person as a candidate of any contact's list (a family phone lists
                    // them beside others, with or without a party): the row goes, the rest of
                    // the list stays, and memory drops those contacts' lists.
                    let listed: Vec<(String, String)> = sqlx::query_as(
                        "SELECT DISTINCT kind, value FROM contact_candidates WHERE cpf = $1",
                    )
                    .bind(cpf.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                    erasure.contacts += sqlx::query("DELETE FROM contact_candidates WHERE cpf = $1")
                        .bind(cpf.as_str())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    erasure.contact_keys.extend(contact_keys_of(&listed));
                    erasure.contact_keys.sort();
                    erasure.contact_keys.dedup();
                    sqlx::query(
                        "INSERT INTO erasure_audit (at, action, cpf_hash, counts)
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(now)
                    .bind(action)
                    .bind(cpf_hash)
                    .bind(Json(erasure.counts_json()))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(erasure)
                }

                async fn recent_people(
                    &self,
                    after: Option<WarmCursor>,
                    limit: u32,
                ) -> Result<Vec<WarmPerson>, StoreError> {
                    // Two texts rather than one with "$2 IS NULL OR ...": the row comparison
                    // alone is what lets a page start inside `party_enrichments_recent` where the
                    // previous one ended.
                    let page = if after.is_some() {
                        "(e.fetched_at, e.id) < ($2, $3) AND"
                    } else {
                        ""
                    };
                    let sql = format!(
                        "SELECT p.id AS party, p.cpf, e.id AS enrichment, e.data, e.fetched_at
                           FROM party_enrichments e JOIN parties p ON p.id = e.party_id
                          WHERE {page} e.id = (SELECT l.id FROM party_enrichments l
                                                WHERE l.party_id = e.party_id
                                                ORDER BY l.fetched_at DESC, l.id DESC LIMIT 1)
                          ORDER BY e.fetched_at DESC, e.id DESC
                          LIMIT $1"
                    );
                    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(i64::from(limit));
                    if let Some(cursor) = after {
                        query = query.bind(Stamp(cursor.fetched_at)).bind(cursor.enrichment);
                    }
                    let rows: Vec<RecentRow> = query
                        .fetch_all(self.reads())
                        .await
                        .map_err(corrupt_json("enrichment data"))?;
                    if rows.is_empty() {
                        return Ok(Vec::new());
                    }
                    let parties: Vec<i64> = rows.iter().map(|r| r.party).collect();
                    let mut keys = keys_by_party(self.lookup_contacts(&parties).await?);
                    rows.into_iter()
                        .map(|r| {
                            Ok(WarmPerson {
                                cpf: parse_cpf(&r.cpf)?,
                                person: r.data.0,
                                fetched_at: r.fetched_at.0,
                                lookup_keys: keys.remove(&r.party).unwrap_or_default(),
                                position: WarmCursor {
                                    fetched_at: r.fetched_at.0,
                                    enrichment: r.enrichment,
                                },
                            })
                        })
                        .collect()
                }

                async fn forget_negative(
                    &self,
                    key_kind: &str,
                    value: &str,
                ) -> Result<u64, StoreError> {
                    Ok(sqlx::query(FORGET_NEGATIVE)
                        .bind(key_kind)
                        .bind(value)
                        .execute(self.writes())
                        .await?
                        .rows_affected())
                }

                async fn forget_all_negatives(&self) -> Result<u64, StoreError> {
                    Ok(sqlx::query("DELETE FROM negative_lookups")
                        .execute(self.writes())
                        .await?
                        .rows_affected())
                }

                async fn count_negatives(&self) -> Result<i64, StoreError> {
                    Ok(
                        sqlx::query_scalar(
                            "SELECT count(*) FROM negative_lookups WHERE expires_at > $1",
                        )
                            .bind(Stamp::now())
                            .fetch_one(self.reads())
                            .await?,
                    )
                }
            }

            impl Backend {
                /// A remembered not-found of this key that has not expired.
                async fn negative<T>(
                    &self,
                    kind: &str,
                    value: &str,
                ) -> Result<Option<Lookup<T>>, StoreError> {
                    let hit: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM negative_lookups
                                         WHERE kind = $1 AND value = $2 AND expires_at > $3)",
                    )
                    .bind(kind)
                    .bind(value)
                    .bind(Stamp::now())
                    .fetch_one(self.reads())
                    .await?;
                    Ok(hit.then_some(Lookup::NotFound))
                }

                /// What `save_rendered` and `save_and_mark_sending` write. With `sending`, the
                /// "sending" mark is set in the same transaction, which then commits
                /// synchronously: it is the mark a POST must not leave before.
                async fn save_message(
                    &self,
                    event: &ClaimedEvent,
                    contact_set: &str,
                    message: &str,
                    links: &[LeadLink],
                    sending: bool,
                ) -> Result<bool, StoreError> {
                    let now = Stamp::now();
                    let mut tx = if sending {
                        self.begin_write().await?
                    } else {
                        self.begin_step().await?
                    };
                    let sql = format!(
                        "UPDATE webhook_inbox SET contact_set = $3, message = $4, updated_at = $5,
                                send_started_at = CASE WHEN $6 THEN $5 ELSE send_started_at END
                          {OURS}"
                    );
                    let updated = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(event.id)
                        .bind(Claim(event.claim))
                        .bind(contact_set)
                        .bind(message)
                        .bind(now)
                        .bind(sending)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if updated == 0 {
                        return Ok(false);
                    }
                    for link in links {
                        sqlx::query(
                            "INSERT INTO lead_parties
                               (source, lead_id, party_id, contact_kind, linked_at)
                             SELECT $1, $2, id, $4, $5 FROM parties WHERE cpf = $3
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(&event.source)
                        .bind(&event.lead_id)
                        .bind(link.cpf.as_str())
                        .bind(link.via.as_str())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                /// Runs one write of a claim holder (`$1` event, `$2` claim, `$3` the instant
                /// it writes, if any); false when the claim was lost.
                async fn write_ours(
                    &self,
                    event: &ClaimedEvent,
                    sql: String,
                    at: Option<Stamp>,
                ) -> Result<bool, StoreError> {
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(event.id)
                        .bind(Claim(event.claim));
                    if let Some(at) = at {
                        query = query.bind(at);
                    }
                    Ok(query.execute(self.writes()).await?.rows_affected() == 1)
                }
            }

            async fn upsert_party(
                tx: &mut <<Backend as Dialect>::DB as sqlx::Database>::Connection,
                cpf: &Cpf,
                name: Option<&str>,
                now: Stamp,
            ) -> Result<i64, StoreError> {
                Ok(sqlx::query_scalar(
                    "INSERT INTO parties (cpf, name, created_at, updated_at) VALUES ($1, $2, $3, $3)
                     ON CONFLICT (cpf) DO UPDATE
                       SET name = COALESCE(excluded.name, parties.name),
                           updated_at = excluded.updated_at
                     RETURNING id",
                )
                .bind(cpf.as_str())
                .bind(name)
                .bind(now)
                .fetch_one(tx)
                .await?)
            }

            /// A not-found answer, remembered until `until` (pushed forward when known).
            async fn remember_negative(
                tx: &mut <<Backend as Dialect>::DB as sqlx::Database>::Connection,
                kind: &str,
                value: &str,
                provider: Provider,
                until: Stamp,
                now: Stamp,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO negative_lookups (kind, value, provider, expires_at, created_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (kind, value) DO UPDATE
                       SET expires_at = excluded.expires_at, created_at = excluded.created_at",
                )
                .bind(kind)
                .bind(value)
                .bind(provider)
                .bind(until)
                .bind(now)
                .execute(tx)
                .await?;
                Ok(())
            }

            async fn insert_contact(
                tx: &mut <<Backend as Dialect>::DB as sqlx::Database>::Connection,
                party_id: i64,
                kind: &str,
                value: &str,
                origin: ContactOrigin,
                now: Stamp,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO party_contacts (party_id, kind, value, source, created_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (kind, value, source, party_id)
                       DO UPDATE SET created_at = excluded.created_at",
                )
                .bind(party_id)
                .bind(kind)
                .bind(value)
                .bind(origin)
                .bind(now)
                .execute(tx)
                .await?;
                Ok(())
            }
        }
    };
}

pub(super) use shared_sql;

/// A stored CPF read back.
pub(super) fn parse_cpf(cpf: &str) -> Result<crate::domain::Cpf, StoreError> {
    crate::domain::Cpf::parse(cpf).map_err(|_| StoreError::Corrupt("party cpf".into()))
}

/// One stored candidate: a CPF or a CNPJ, and the name the lookup gave.
#[derive(sqlx::FromRow)]
pub(super) struct CandidateRow {
    cpf: Option<String>,
    cnpj: Option<String>,
    name: Option<String>,
}

/// Stored candidate rows, in position order, read back into a list.
pub(super) fn candidates_of(
    rows: Vec<CandidateRow>,
) -> Result<crate::domain::Candidates, StoreError> {
    use crate::domain::{Candidate, Candidates, Cnpj, CpfCandidate};
    rows.into_iter()
        .map(|row| match (row.cpf, row.cnpj) {
            (Some(cpf), None) => Ok(Candidate::Person(CpfCandidate {
                cpf: parse_cpf(&cpf)?,
                name: row.name,
            })),
            (None, Some(cnpj)) => Ok(Candidate::Company {
                cnpj: Cnpj::parse(&cnpj)
                    .map_err(|_| StoreError::Corrupt("candidate cnpj".into()))?,
                name: row.name,
            }),
            _ => Err(StoreError::Corrupt("candidate without one id".into())),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Candidates::new)
}

/// Turns a JSON column that no longer reads as its type into [`StoreError::Corrupt`].
pub(super) fn corrupt_json(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match e {
        sqlx::Error::ColumnDecode { .. } => StoreError::Corrupt(what.into()),
        other => other.into(),
    }
}
