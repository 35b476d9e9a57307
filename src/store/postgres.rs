//! The Postgres store: the production backend, safe for several instances on one database.
//!
//! Claims use `FOR UPDATE SKIP LOCKED` plus a lease, so instances never take the same event
//! and a crashed instance's events come back when the lease runs out. Person data lives in
//! schema `core`. Time comes from the database clock (`now()`), one clock for all instances.
//!
//! Coordination between instances uses Postgres alone: purchases take a transaction-scoped
//! advisory lock per key (freed by commit, rollback or the death of the session, so a dead
//! instance never keeps a key), on connections of their own small pool; invalidations travel
//! by `LISTEN/NOTIFY` on a connection of its own.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AuditRecord, ClaimedEvent, CrmCreation, Erasure, EventRecord, Finish, InboxContacts,
    InsertOutcome, KeyLock, LeadLink, LockSpace, Lookup, NewEvent, PURGE_BATCH, PartyCounts,
    Replay, Store, StoreError, StoredPerson, Subscription, UnconvertedEvent, WarmCursor,
    WarmPerson, contact_keys_of, erasure_scope, keys_by_party, person_contacts, purge_payload,
    read_lead_event, redact_payload,
};
use crate::domain::{ContactKey, Cpf, LeadId, Person};
use crate::event::{LeadEvent, Source};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The channel every instance listens on for cache invalidations.
const INVALIDATION_CHANNEL: &str = "enricher_invalidations";

/// First half of the two-key advisory locks, one per space (ASCII "EnC1", "EnC2", "EnC3"),
/// so these never meet the locks of anything else on the database.
const fn lock_class(space: Option<LockSpace>) -> i32 {
    match space {
        Some(LockSpace::Contact) => 0x456e_4331,
        Some(LockSpace::Cpf) => 0x456e_4332,
        None => 0x456e_4333,
    }
}

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Connections that hold purchase locks for the length of a provider call; separate, so
    /// that however many purchases wait, intake and claims keep their connections.
    locks: PgPool,
    /// One connection for `LISTEN`: it is held for the life of the subscription.
    listen: PgPool,
    /// Whether claims and rendered messages commit without waiting for their WAL flush (see
    /// [`PgStore::with_async_commit_steps`]).
    async_steps: bool,
}

/// Run first in a transaction: it commits without waiting for the WAL flush.
const ASYNC_COMMIT: &str = "SELECT set_config('synchronous_commit', 'off', true)";

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStore")
    }
}

impl PgStore {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        lock_connections: u32,
    ) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Unavailable("invalid postgres url".into()))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // Intake answers 503 rather than hanging when the database is gone.
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options.clone());
        let locks = PgPoolOptions::new()
            .max_connections(lock_connections.max(1))
            // Waits for a free lock connection are bounded by the caller's lock wait.
            .acquire_timeout(Duration::from_secs(3600))
            .connect_lazy_with(options.clone().application_name("enricher-locks"));
        let listen = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options.application_name("enricher-listener"));
        Ok(PgStore {
            pool,
            locks,
            listen,
            async_steps: false,
        })
    }

    /// With `on`, a claim and the saving of a rendered message commit without waiting for
    /// the WAL flush (`synchronous_commit = off` for those transactions only). Nothing durable
    /// depends on them alone: the WAL is written in order, so the event's next synchronous
    /// commit (the "sending" mark, before any POST) flushes them too, and a crash before
    /// that only loses a claim (the event is pending again) or a rendered message (rendered
    /// again). It takes two of the four flushes a webhook waits for before its message goes
    /// out off the hit path. Intake and every other write stay synchronous.
    pub fn with_async_commit_steps(mut self, on: bool) -> PgStore {
        self.async_steps = on;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

const EVENT_COLUMNS: &str = "id, source, lead_id, event_at, action, payload, lead_event, attempts, \
     contact_set, message, (send_started_at IS NOT NULL) AS send_started, unknown_outcomes";

fn claimed_from_row(row: &sqlx::postgres::PgRow, claim: Uuid) -> Result<ClaimedEvent, StoreError> {
    Ok(ClaimedEvent {
        id: row.try_get("id")?,
        claim,
        source: row.try_get("source")?,
        lead_id: row.try_get("lead_id")?,
        event_at: row.try_get("event_at")?,
        action: row.try_get("action")?,
        payload: row.try_get("payload")?,
        lead_event: row.try_get("lead_event")?,
        attempts: row.try_get("attempts")?,
        contact_set: row.try_get("contact_set")?,
        message: row.try_get("message")?,
        send_started: row.try_get("send_started")?,
        unknown_outcomes: row.try_get("unknown_outcomes")?,
    })
}

fn record_from_row(row: &sqlx::postgres::PgRow) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        id: row.try_get("id")?,
        source: row.try_get("source")?,
        lead_id: row.try_get("lead_id")?,
        event_at: row.try_get("event_at")?,
        action: row.try_get("action")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        outcome: row.try_get("outcome")?,
        last_error: row.try_get("last_error")?,
        delivered: row.try_get("delivered")?,
    })
}

async fn upsert_party(
    tx: &mut sqlx::PgConnection,
    cpf: &Cpf,
    name: Option<&str>,
) -> Result<i64, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO core.parties (cpf, name) VALUES ($1, $2)
         ON CONFLICT (cpf) DO UPDATE
           SET name = COALESCE(EXCLUDED.name, core.parties.name), updated_at = now()
         RETURNING id",
    )
    .bind(cpf.as_str())
    .bind(name)
    .fetch_one(tx)
    .await?;
    Ok(id)
}

async fn insert_contact(
    tx: &mut sqlx::PgConnection,
    party_id: i64,
    kind: &str,
    value: &str,
    source: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO core.party_contacts (party_id, kind, value, source) VALUES ($1, $2, $3, $4)
         ON CONFLICT (kind, value, source, party_id) DO UPDATE SET created_at = now()",
    )
    .bind(party_id)
    .bind(kind)
    .bind(value)
    .bind(source)
    .execute(tx)
    .await?;
    Ok(())
}

/// What a replay resets; the `WHERE` adds which rows. Keeps `message`, `contact_set` and
/// `last_error`.
const REPLAY: &str = "UPDATE webhook_inbox
    SET state = 'pending', attempts = 0, next_attempt_at = now(), claim_token = NULL,
        lease_until = NULL, send_started_at = NULL, unknown_outcomes = 0, outcome = NULL,
        updated_at = now()
  WHERE state = 'dead'";

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ready(&self) -> Result<bool, StoreError> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(v) => v,
                // No migrations table yet: reachable, not ready.
                Err(sqlx::Error::Database(_)) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
        Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
    }

    async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<InsertOutcome>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // One statement for the whole list, whatever its length: intake groups the events of
        // concurrent requests into one call, and a round trip per row would cost more than
        // the commit saved. The answer is one row per input, in input order (`ord`): the
        // first occurrence of a key inserted gets its id, a known key or a later repeat of a
        // key in the list gets NULL (a duplicate), as if the rows were inserted one by one.
        // Rows are inserted in key order, so two lists inserted at once take their unique
        // index entries in the same order and cannot deadlock.
        let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "WITH input AS (
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[], $6::jsonb[])
                 WITH ORDINALITY AS t(source, lead_id, event_at, action, payload, lead_event, ord)),
             first AS (
               SELECT DISTINCT ON (source, lead_id, event_at) *
                 FROM input ORDER BY source, lead_id, event_at, ord),
             inserted AS (
               INSERT INTO webhook_inbox (source, lead_id, event_at, action, payload, lead_event)
               SELECT source, lead_id, event_at, action, payload, lead_event
                 FROM first ORDER BY source, lead_id, event_at
               ON CONFLICT (source, lead_id, event_at) DO NOTHING
               RETURNING id, source, lead_id, event_at)
             SELECT i.ord, CASE WHEN f.ord = i.ord THEN n.id END
               FROM input i
               JOIN first f USING (source, lead_id, event_at)
               LEFT JOIN inserted n USING (source, lead_id, event_at)
              ORDER BY i.ord",
        )
        .bind(events.iter().map(|e| e.event.source.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event.lead.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event.at).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event.action.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| &e.payload).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event.to_stored()).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?;
        if rows.len() != events.len() {
            return Err(StoreError::Corrupt(format!(
                "{} outcomes for {} events",
                rows.len(),
                events.len()
            )));
        }
        Ok(rows
            .into_iter()
            .map(|(_, id)| id.map_or(InsertOutcome::Duplicate, InsertOutcome::Accepted))
            .collect())
    }

    async fn claim_events(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let claim = Uuid::now_v7();
        let sql = format!(
            "WITH due (due_id) AS (
               SELECT i.id FROM webhook_inbox i
               WHERE ((i.state = 'pending' AND i.next_attempt_at <= now())
                   OR (i.state = 'processing' AND i.lease_until < now()))
                 AND NOT EXISTS (
                   SELECT 1 FROM webhook_inbox e
                   WHERE e.source = i.source AND e.lead_id = i.lead_id AND e.id <> i.id
                     AND ((e.state IN ('pending', 'processing')
                           AND (e.event_at, e.id) < (i.event_at, i.id))
                       OR (e.state = 'processing' AND e.lease_until >= now())))
               ORDER BY i.next_attempt_at, i.id
               LIMIT $1
               FOR UPDATE SKIP LOCKED)
             UPDATE webhook_inbox w
                SET state = 'processing', claim_token = $2,
                    lease_until = now() + make_interval(secs => $3), updated_at = now()
               FROM due WHERE w.id = due.due_id
             RETURNING {EVENT_COLUMNS}"
        );
        // Claims are serialized across instances. Without this, two claims running at once
        // judge "is an earlier event of this lead unfinished?" on two different snapshots: an
        // event inserted between them is seen by one and not the other, and both could take
        // an event of one lead. Under the lock each claim's statement starts after the
        // previous claim committed, so it sees that claim. A claim takes milliseconds.
        let mut tx = self.pool.begin().await?;
        let lock = if self.async_steps {
            "SELECT pg_advisory_xact_lock($1, 0), set_config('synchronous_commit', 'off', true)"
        } else {
            "SELECT pg_advisory_xact_lock($1, 0)"
        };
        sqlx::query(lock)
            .bind(lock_class(None))
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .bind(claim)
            .bind(lease.as_secs_f64())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(|r| claimed_from_row(r, claim)).collect()
    }

    async fn previous_contact_set(
        &self,
        event: &ClaimedEvent,
    ) -> Result<Option<String>, StoreError> {
        let set: Option<String> = sqlx::query_scalar(
            "SELECT contact_set FROM webhook_inbox
             WHERE source = $1 AND lead_id = $2 AND contact_set IS NOT NULL
               AND (event_at, id) < ($3, $4)
             ORDER BY event_at DESC, id DESC LIMIT 1",
        )
        .bind(&event.source)
        .bind(&event.lead_id)
        .bind(event.event_at)
        .bind(event.id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(set)
    }

    async fn save_rendered(
        &self,
        event: &ClaimedEvent,
        contact_set: &str,
        message: &str,
        links: &[LeadLink],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.async_steps {
            sqlx::query(ASYNC_COMMIT).execute(&mut *tx).await?;
        }
        let updated = sqlx::query(
            "UPDATE webhook_inbox SET contact_set = $3, message = $4, updated_at = now()
             WHERE id = $1 AND claim_token = $2 AND state = 'processing'",
        )
        .bind(event.id)
        .bind(event.claim)
        .bind(contact_set)
        .bind(message)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        for link in links {
            sqlx::query(
                "INSERT INTO core.lead_parties (source, lead_id, party_id, contact_kind)
                 SELECT $1, $2, id, $4 FROM core.parties WHERE cpf = $3
                 ON CONFLICT DO NOTHING",
            )
            .bind(&event.source)
            .bind(&event.lead_id)
            .bind(link.cpf.as_str())
            .bind(link.via.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn mark_sending(&self, event: &ClaimedEvent) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_inbox SET send_started_at = now(), updated_at = now()
             WHERE id = $1 AND claim_token = $2 AND state = 'processing'",
        )
        .bind(event.id)
        .bind(event.claim)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn note_unknown_outcome(&self, event: &ClaimedEvent) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_inbox SET unknown_outcomes = unknown_outcomes + 1
             WHERE id = $1 AND claim_token = $2 AND state = 'processing'",
        )
        .bind(event.id)
        .bind(event.claim)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn finish(&self, event: &ClaimedEvent, finish: Finish) -> Result<bool, StoreError> {
        let q = match finish {
            Finish::Done {
                outcome,
                contact_set,
            } => sqlx::query(
                "UPDATE webhook_inbox
                    SET state = 'done', outcome = $3,
                        contact_set = COALESCE($4, contact_set),
                        delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE NULL END,
                        send_started_at = NULL, claim_token = NULL, lease_until = NULL,
                        last_error = NULL, updated_at = now()
                  WHERE id = $1 AND claim_token = $2",
            )
            .bind(event.id)
            .bind(event.claim)
            .bind(outcome)
            .bind(contact_set),
            Finish::Retry { at, error } => sqlx::query(
                "UPDATE webhook_inbox
                    SET state = 'pending', attempts = attempts + 1, next_attempt_at = $3,
                        last_error = $4, send_started_at = NULL, claim_token = NULL,
                        lease_until = NULL, updated_at = now()
                  WHERE id = $1 AND claim_token = $2",
            )
            .bind(event.id)
            .bind(event.claim)
            .bind(at)
            .bind(error),
            Finish::Park { at, error } => sqlx::query(
                "UPDATE webhook_inbox
                    SET state = 'pending', next_attempt_at = $3,
                        last_error = $4, send_started_at = NULL, claim_token = NULL,
                        lease_until = NULL, updated_at = now()
                  WHERE id = $1 AND claim_token = $2",
            )
            .bind(event.id)
            .bind(event.claim)
            .bind(at)
            .bind(error),
            Finish::Dead { reason } => sqlx::query(
                "UPDATE webhook_inbox
                    SET state = 'dead', attempts = attempts + 1, outcome = 'dead',
                        last_error = $3, send_started_at = NULL, claim_token = NULL,
                        lease_until = NULL, updated_at = now()
                  WHERE id = $1 AND claim_token = $2",
            )
            .bind(event.id)
            .bind(event.claim)
            .bind(reason),
        };
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn event(&self, id: i64) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, source, lead_id, event_at, action, state, attempts, outcome, last_error,
                    (delivered_at IS NOT NULL) AS delivered
               FROM webhook_inbox WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn events(
        &self,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, source, lead_id, event_at, action, state, attempts, outcome, last_error,
                    (delivered_at IS NOT NULL) AS delivered
               FROM webhook_inbox WHERE ($1::text IS NULL OR state = $1)
              ORDER BY id DESC LIMIT $2",
        )
        .bind(state)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn event_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM webhook_inbox GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    async fn find_contact(&self, key: &ContactKey) -> Result<Option<Lookup<Cpf>>, StoreError> {
        let cpf: Option<String> = sqlx::query_scalar(
            "SELECT p.cpf FROM core.party_contacts c JOIN core.parties p ON p.id = c.party_id
              WHERE c.kind = $1 AND c.value = $2 AND c.source = 'lookup'
              ORDER BY c.created_at DESC, c.id DESC LIMIT 1",
        )
        .bind(key.kind().as_str())
        .bind(key.value())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(cpf) = cpf {
            let cpf = Cpf::parse(&cpf).map_err(|_| StoreError::Corrupt("party cpf".into()))?;
            return Ok(Some(Lookup::Found(cpf)));
        }
        let negative: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM core.negative_lookups
              WHERE kind = $1 AND value = $2 AND expires_at > now()",
        )
        .bind(key.kind().as_str())
        .bind(key.value())
        .fetch_optional(&self.pool)
        .await?;
        Ok(negative.map(|_| Lookup::NotFound))
    }

    async fn record_contact(
        &self,
        key: &ContactKey,
        answer: &Lookup<(Cpf, Option<String>)>,
        negative_until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        match answer {
            Lookup::Found((cpf, name)) => {
                let party = upsert_party(&mut tx, cpf, name.as_deref()).await?;
                insert_contact(&mut tx, party, key.kind().as_str(), key.value(), "lookup").await?;
                sqlx::query("DELETE FROM core.negative_lookups WHERE kind = $1 AND value = $2")
                    .bind(key.kind().as_str())
                    .bind(key.value())
                    .execute(&mut *tx)
                    .await?;
            }
            Lookup::NotFound => {
                sqlx::query(
                    "INSERT INTO core.negative_lookups (kind, value, provider, expires_at)
                     VALUES ($1, $2, 'diretrix', $3)
                     ON CONFLICT (kind, value) DO UPDATE
                       SET expires_at = EXCLUDED.expires_at, created_at = now()",
                )
                .bind(key.kind().as_str())
                .bind(key.value())
                .bind(negative_until)
                .execute(&mut *tx)
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
        let row = sqlx::query(
            "SELECT e.data, e.fetched_at FROM core.party_enrichments e
               JOIN core.parties p ON p.id = e.party_id
              WHERE p.cpf = $1 AND e.fetched_at >= $2
              ORDER BY e.fetched_at DESC, e.id DESC LIMIT 1",
        )
        .bind(cpf.as_str())
        .bind(fresh_since)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let data: Value = row.try_get("data")?;
            let person: Person = serde_json::from_value(data)
                .map_err(|_| StoreError::Corrupt("enrichment data".into()))?;
            return Ok(Some(Lookup::Found(StoredPerson {
                person,
                fetched_at: row.try_get("fetched_at")?,
            })));
        }
        let negative: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM core.negative_lookups
              WHERE kind = 'cpf' AND value = $1 AND expires_at > now()",
        )
        .bind(cpf.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(negative.map(|_| Lookup::NotFound))
    }

    async fn record_person(
        &self,
        cpf: &Cpf,
        answer: &Lookup<(Value, Person)>,
        provider: &str,
        negative_until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        match answer {
            Lookup::Found((raw, person)) => {
                let party = upsert_party(&mut tx, cpf, person.name.as_deref()).await?;
                for (kind, value) in person_contacts(person) {
                    insert_contact(&mut tx, party, kind, &value, "person").await?;
                }
                let data = serde_json::to_value(person)
                    .map_err(|e| StoreError::Database(format!("serializing person: {e}")))?;
                sqlx::query(
                    "INSERT INTO core.party_enrichments (party_id, provider, raw, data)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(party)
                .bind(provider)
                .bind(raw)
                .bind(data)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM core.negative_lookups WHERE kind = 'cpf' AND value = $1")
                    .bind(cpf.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            Lookup::NotFound => {
                sqlx::query(
                    "INSERT INTO core.negative_lookups (kind, value, provider, expires_at)
                     VALUES ('cpf', $1, $2, $3)
                     ON CONFLICT (kind, value) DO UPDATE
                       SET expires_at = EXCLUDED.expires_at, created_at = now()",
                )
                .bind(cpf.as_str())
                .bind(provider)
                .bind(negative_until)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn party_counts(&self) -> Result<PartyCounts, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM core.parties) AS parties,
                    (SELECT count(*) FROM core.party_contacts) AS contacts,
                    (SELECT count(*) FROM core.party_enrichments) AS enrichments,
                    (SELECT count(*) FROM core.lead_parties) AS lead_links,
                    (SELECT count(*) FROM core.negative_lookups) AS negatives",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(PartyCounts {
            parties: row.try_get("parties")?,
            contacts: row.try_get("contacts")?,
            enrichments: row.try_get("enrichments")?,
            lead_links: row.try_get("lead_links")?,
            negatives: row.try_get("negatives")?,
        })
    }

    async fn replay_event(&self, id: i64) -> Result<Replay, StoreError> {
        let sql = format!("{REPLAY} AND id = $1");
        let replayed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if replayed == 1 {
            return Ok(Replay::Replayed);
        }
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM webhook_inbox WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(state.map_or(Replay::NotFound, |state| Replay::NotReplayable { state }))
    }

    async fn replay_dead(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query(REPLAY)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn latest_event(
        &self,
        source: Source,
        lead: &LeadId,
    ) -> Result<Option<LeadEvent>, StoreError> {
        let stored: Option<Value> = sqlx::query_scalar(
            "SELECT lead_event FROM webhook_inbox
              WHERE source = $1 AND lead_id = $2 AND lead_event IS NOT NULL
              ORDER BY event_at DESC, id DESC LIMIT 1",
        )
        .bind(source.as_str())
        .bind(lead.as_str())
        .fetch_optional(&self.pool)
        .await?;
        stored.as_ref().map(read_lead_event).transpose()
    }

    async fn events_without_lead_event(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<UnconvertedEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, action, payload FROM webhook_inbox
              WHERE lead_event IS NULL AND id > $1 AND NOT payload @> '{\"erased\": true}'
              ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn set_lead_event(&self, id: i64, event: &LeadEvent) -> Result<bool, StoreError> {
        // Only while still missing and not erased meanwhile.
        Ok(sqlx::query(
            "UPDATE webhook_inbox SET lead_event = $2
              WHERE id = $1 AND lead_event IS NULL AND NOT payload @> '{\"erased\": true}'",
        )
        .bind(id)
        .bind(event.to_stored())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    async fn erase_party(
        &self,
        cpf: &Cpf,
        action: &str,
        cpf_hash: &str,
    ) -> Result<Erasure, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Locking the party makes concurrent writers of its contacts and links wait for the
        // erasure (and then find no party) rather than add rows it would miss.
        let party: Option<i64> =
            sqlx::query_scalar("SELECT id FROM core.parties WHERE cpf = $1 FOR UPDATE")
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
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT kind, value FROM core.party_contacts WHERE party_id = $1")
                    .bind(party)
                    .fetch_all(&mut *tx)
                    .await?;
            party_keys = contact_keys_of(&rows);
            linked = sqlx::query_as(
                "SELECT DISTINCT source, lead_id FROM core.lead_parties WHERE party_id = $1",
            )
            .bind(party)
            .fetch_all(&mut *tx)
            .await?;
        }
        // The inbox holds the CRM's copy of the person (name, phone, e-mail) and the rendered
        // message holds the bought data: the events of every lead the person reaches are
        // redacted in this same transaction.
        let inbox: Vec<InboxContacts> = sqlx::query_as(
            "SELECT id, source, lead_id,
                    payload #>> '{attributes,customer,phone}' AS phone,
                    payload #>> '{attributes,customer,email}' AS email,
                    contact_set
               FROM webhook_inbox",
        )
        .fetch_all(&mut *tx)
        .await?;
        let (event_ids, keys) = erasure_scope(&party_keys, &linked, &inbox);
        for id in &event_ids {
            let payload: Value =
                sqlx::query_scalar("SELECT payload FROM webhook_inbox WHERE id = $1 FOR UPDATE")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            sqlx::query(
                "UPDATE webhook_inbox
                SET payload = $2, lead_event = NULL, contact_set = NULL, message = NULL,
                    state = CASE WHEN state = 'processing' THEN 'pending' ELSE state END,
                    claim_token = CASE WHEN state = 'processing' THEN NULL ELSE claim_token END,
                    lease_until = CASE WHEN state = 'processing' THEN NULL ELSE lease_until END,
                    send_started_at = CASE WHEN state = 'processing' THEN NULL
                                           ELSE send_started_at END,
                    updated_at = now()
              WHERE id = $1",
            )
            .bind(id)
            .bind(redact_payload(&payload))
            .execute(&mut *tx)
            .await?;
        }
        erasure.events = event_ids.len() as u64;
        erasure.negatives =
            sqlx::query("DELETE FROM core.negative_lookups WHERE kind = 'cpf' AND value = $1")
                .bind(cpf.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        for key in &keys {
            erasure.negatives +=
                sqlx::query("DELETE FROM core.negative_lookups WHERE kind = $1 AND value = $2")
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
                ("core.lead_parties", &mut erasure.lead_links),
                ("core.party_enrichments", &mut erasure.enrichments),
                ("core.party_contacts", &mut erasure.contacts),
            ] {
                let sql = format!("DELETE FROM {table} WHERE party_id = $1");
                *count = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(party)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            sqlx::query("DELETE FROM core.parties WHERE id = $1")
                .bind(party)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO core.erasure_audit (action, cpf_hash, counts) VALUES ($1, $2, $3)",
        )
        .bind(action)
        .bind(cpf_hash)
        .bind(erasure.counts_json())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(erasure)
    }

    async fn erasure_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, action, cpf_hash, counts FROM core.erasure_audit
              ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    action: row.try_get("action")?,
                    cpf_hash: row.try_get("cpf_hash")?,
                    counts: row.try_get("counts")?,
                })
            })
            .collect()
    }

    async fn recent_people(
        &self,
        after: Option<WarmCursor>,
        limit: u32,
    ) -> Result<Vec<WarmPerson>, StoreError> {
        // The data is read as text and parsed straight into a Person: no JSON tree per row.
        // Two texts rather than one with "$2 IS NULL OR ...": the row comparison alone is what
        // lets a page start inside `party_enrichments_recent` where the previous one ended.
        let query = match after {
            None => sqlx::query_as(
                "SELECT p.id, p.cpf, e.id, e.data::text, e.fetched_at
                   FROM core.party_enrichments e JOIN core.parties p ON p.id = e.party_id
                  WHERE e.id = (SELECT l.id FROM core.party_enrichments l
                                 WHERE l.party_id = e.party_id
                                 ORDER BY l.fetched_at DESC, l.id DESC LIMIT 1)
                  ORDER BY e.fetched_at DESC, e.id DESC
                  LIMIT $1",
            ),
            Some(_) => sqlx::query_as(
                "SELECT p.id, p.cpf, e.id, e.data::text, e.fetched_at
                   FROM core.party_enrichments e JOIN core.parties p ON p.id = e.party_id
                  WHERE (e.fetched_at, e.id) < ($2, $3)
                    AND e.id = (SELECT l.id FROM core.party_enrichments l
                                 WHERE l.party_id = e.party_id
                                 ORDER BY l.fetched_at DESC, l.id DESC LIMIT 1)
                  ORDER BY e.fetched_at DESC, e.id DESC
                  LIMIT $1",
            ),
        };
        let mut query = query.bind(i64::from(limit));
        if let Some(cursor) = after {
            query = query.bind(cursor.fetched_at).bind(cursor.enrichment);
        }
        let rows: Vec<(i64, String, i64, String, OffsetDateTime)> =
            query.fetch_all(&self.pool).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let parties: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let contacts: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT c.party_id, c.kind, c.value FROM core.party_contacts c
              WHERE c.party_id = ANY($1) AND c.source = 'lookup' AND c.kind IN ('phone', 'email')
                AND NOT EXISTS (
                  SELECT 1 FROM core.party_contacts n
                   WHERE n.kind = c.kind AND n.value = c.value AND n.source = 'lookup'
                     AND (n.created_at, n.id) > (c.created_at, c.id))
              ORDER BY c.party_id, c.created_at DESC, c.id DESC",
        )
        .bind(&parties)
        .fetch_all(&self.pool)
        .await?;
        let mut keys = keys_by_party(contacts);
        rows.into_iter()
            .map(|(party, cpf, enrichment, data, fetched_at)| {
                Ok(WarmPerson {
                    cpf: Cpf::parse(&cpf).map_err(|_| StoreError::Corrupt("party cpf".into()))?,
                    person: serde_json::from_str(&data)
                        .map_err(|_| StoreError::Corrupt("enrichment data".into()))?,
                    fetched_at,
                    lookup_keys: keys.remove(&party).unwrap_or_default(),
                    position: WarmCursor {
                        fetched_at,
                        enrichment,
                    },
                })
            })
            .collect()
    }

    async fn forget_negative(&self, key_kind: &str, value: &str) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM core.negative_lookups WHERE kind = $1 AND value = $2")
                .bind(key_kind)
                .bind(value)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn forget_all_negatives(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM core.negative_lookups")
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn count_negatives(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM core.negative_lookups WHERE expires_at > now()",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn renew_lease(&self, event: &ClaimedEvent, lease: Duration) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_inbox SET lease_until = now() + make_interval(secs => $3)
             WHERE id = $1 AND claim_token = $2 AND state = 'processing'",
        )
        .bind(event.id)
        .bind(event.claim)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn claim_crm_creation(
        &self,
        source: Source,
        key: &LeadId,
        max_calls: u32,
        busy_for: Duration,
        now: OffsetDateTime,
    ) -> Result<CrmCreation, StoreError> {
        let calls: Option<i32> = sqlx::query_scalar(
            "INSERT INTO crm_creations (source, source_lead, calls, claimed_at, created_at)
             VALUES ($1, $2, 1, $3, $3)
             ON CONFLICT (source, source_lead) DO NOTHING RETURNING calls",
        )
        .bind(source.as_str())
        .bind(key.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if calls.is_some() {
            return Ok(CrmCreation::Claimed { attempt: 1 });
        }
        let calls: Option<i32> = sqlx::query_scalar(
            "UPDATE crm_creations SET calls = calls + 1, claimed_at = $3
              WHERE source = $1 AND source_lead = $2 AND crm_lead_id IS NULL
                AND calls < $4 AND claimed_at <= $5
              RETURNING calls",
        )
        .bind(source.as_str())
        .bind(key.as_str())
        .bind(now)
        .bind(i32::try_from(max_calls).unwrap_or(i32::MAX))
        .bind(now - busy_for)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(calls) = calls {
            return Ok(CrmCreation::Claimed {
                attempt: u32::try_from(calls).unwrap_or(0),
            });
        }
        let row: Option<(Option<String>, i32, OffsetDateTime)> = sqlx::query_as(
            "SELECT crm_lead_id, calls, claimed_at FROM crm_creations
              WHERE source = $1 AND source_lead = $2",
        )
        .bind(source.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some((Some(id), _, _)) => Ok(CrmCreation::Created(
                LeadId::parse(&id).map_err(|_| StoreError::Corrupt("crm lead id".into()))?,
            )),
            Some((None, calls, claimed_at)) => {
                let until = claimed_at + busy_for;
                if until > now {
                    Ok(CrmCreation::Busy { until })
                } else {
                    Ok(CrmCreation::Exhausted {
                        attempts: u32::try_from(calls).unwrap_or(0),
                    })
                }
            }
            // Given back between the two statements: the caller asks again.
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
        .bind(source.as_str())
        .bind(key.as_str())
        .bind(crm_lead.as_str())
        .bind(OffsetDateTime::now_utc())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_crm_creation(&self, source: Source, key: &LeadId) -> Result<(), StoreError> {
        // Claimed at the epoch: the next claim is not kept waiting for an answer that came.
        sqlx::query(
            "UPDATE crm_creations SET calls = calls - 1, claimed_at = $3
              WHERE source = $1 AND source_lead = $2 AND crm_lead_id IS NULL AND calls > 0",
        )
        .bind(source.as_str())
        .bind(key.as_str())
        .bind(OffsetDateTime::UNIX_EPOCH)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn crm_creation(
        &self,
        source: Source,
        key: &LeadId,
    ) -> Result<Option<(Option<LeadId>, u32)>, StoreError> {
        let row: Option<(Option<String>, i32)> = sqlx::query_as(
            "SELECT crm_lead_id, calls FROM crm_creations WHERE source = $1 AND source_lead = $2",
        )
        .bind(source.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
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

    async fn lock_key(
        &self,
        space: LockSpace,
        key: &str,
        wait: Duration,
    ) -> Result<Option<Box<dyn KeyLock>>, StoreError> {
        // Polling with the non-blocking form, rather than blocking in `pg_advisory_xact_lock`,
        // means a waiter holds no connection between attempts: only the instances actually
        // buying hold one, for the length of their provider call.
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = async {
                let mut tx = self.locks.begin().await?;
                let got: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
                        .bind(lock_class(Some(space)))
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await?;
                if got {
                    Ok::<_, StoreError>(Some(tx))
                } else {
                    tx.rollback().await?;
                    Ok(None)
                }
            };
            match tokio::time::timeout(left, attempt).await {
                Ok(Ok(Some(tx))) => return Ok(Some(Box::new(PgKeyLock { tx }))),
                // Held by another instance.
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                // Waiting for a free lock connection took all the time left.
                Err(_) => {}
            }
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(StoreError::Busy(format!(
                    "another instance held the key for more than {} ms",
                    wait.as_millis()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    async fn broadcast(&self, payload: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(INVALIDATION_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn subscribe(&self) -> Result<Option<Box<dyn Subscription>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.listen).await?;
        // Reconnection is the caller's: it must learn of every loss to clear its memory.
        listener.eager_reconnect(false);
        listener.listen(INVALIDATION_CHANNEL).await?;
        Ok(Some(Box::new(PgSubscription { listener })))
    }

    async fn shared_secret(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let secret: String =
            sqlx::query_scalar("SELECT secret FROM core.instance_secret WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(Some(secret.into_bytes()))
    }

    async fn close(&self) {
        // The listener's and the locks' pools first: closing waits for every connection to
        // come back, and the listener's never would on its own.
        self.listen.close().await;
        self.locks.close().await;
        self.pool.close().await;
    }

    async fn prune_done(&self, older_than: OffsetDateTime) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM webhook_inbox w
              WHERE w.state = 'done' AND w.updated_at < $1
                AND EXISTS (SELECT 1 FROM webhook_inbox n
                             WHERE n.source = w.source AND n.lead_id = w.lead_id
                               AND (n.event_at, n.id) > (w.event_at, w.id))",
        )
        .bind(older_than)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn purge_payloads(&self, older_than: OffsetDateTime) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            // SKIP LOCKED: another instance purging at the same time takes other rows.
            let rows: Vec<(i64, Value)> = sqlx::query_as(
                "SELECT id, payload FROM webhook_inbox
                  WHERE state = 'done' AND updated_at < $1
                    AND NOT payload @> '{\"erased\": true}'
                  ORDER BY id LIMIT $2
                  FOR UPDATE SKIP LOCKED",
            )
            .bind(older_than)
            .bind(PURGE_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            for (id, payload) in &rows {
                sqlx::query(
                    "UPDATE webhook_inbox w
                        SET payload = $2, lead_event = NULL, message = NULL,
                            contact_set = CASE WHEN EXISTS (
                                SELECT 1 FROM webhook_inbox n
                                 WHERE n.source = w.source AND n.lead_id = w.lead_id
                                   AND n.contact_set IS NOT NULL
                                   AND (n.event_at, n.id) > (w.event_at, w.id))
                                THEN NULL ELSE w.contact_set END
                      WHERE w.id = $1",
                )
                .bind(id)
                .bind(purge_payload(payload))
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

    async fn release(&self, event: &ClaimedEvent) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE webhook_inbox
                SET state = 'pending', claim_token = NULL, lease_until = NULL,
                    next_attempt_at = now(), updated_at = now()
              WHERE id = $1 AND claim_token = $2 AND send_started_at IS NULL",
        )
        .bind(event.id)
        .bind(event.claim)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }
}

/// A purchase lock: the transaction that took `pg_try_advisory_xact_lock`. Commit frees it;
/// so does a drop (sqlx rolls the transaction back) or the session ending with its process.
struct PgKeyLock {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

#[async_trait]
impl KeyLock for PgKeyLock {
    async fn release(self: Box<Self>) {
        if let Err(e) = self.tx.commit().await {
            // The connection is gone, and with it the lock.
            tracing::warn!(error = %StoreError::from(e), "releasing a key lock failed");
        }
    }
}

struct PgSubscription {
    listener: sqlx::postgres::PgListener,
}

#[async_trait]
impl Subscription for PgSubscription {
    async fn next(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self
            .listener
            .try_recv()
            .await?
            .map(|n| n.payload().to_owned()))
    }
}
