//! The SQLite store: the embedded default, for one instance only.
//!
//! Same model and guarantees as the Postgres store within one process. Instants are integer
//! microseconds (UTC) computed here, because SQLite has no timestamp type. Every write goes
//! through one writer connection, in transactions that begin IMMEDIATE.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    /// Readers; WAL lets them run beside the writer.
    pool: SqlitePool,
    /// The one writer connection. SQLite allows one writer at a time, and a writer that
    /// finds the file locked sleeps in growing steps (up to 100 ms each) before retrying;
    /// queueing writers on this single connection instead keeps intake latency flat.
    writer: SqlitePool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn micros(t: OffsetDateTime) -> i64 {
    // i64 microseconds cover ±292,000 years around 1970.
    (t.unix_timestamp_nanos() / 1_000) as i64
}

fn from_micros(m: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1_000)
        .map_err(|_| StoreError::Corrupt("timestamp out of range".into()))
}

fn now() -> i64 {
    micros(OffsetDateTime::now_utc())
}

fn json(text: &str, what: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt(format!("{what} is not JSON")))
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::Unavailable("invalid sqlite url".into()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let path = options.get_filename();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create the database directory: {e}"))
            })?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool, writer })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

const EVENT_COLUMNS: &str = "id, source, lead_id, event_at, action, payload, lead_event, attempts, \
     contact_set, message, (send_started_at IS NOT NULL) AS send_started, unknown_outcomes";

const RECORD_COLUMNS: &str = "id, source, lead_id, event_at, action, state, attempts, outcome, \
     last_error, (delivered_at IS NOT NULL) AS delivered";

fn claimed_from_row(
    row: &sqlx::sqlite::SqliteRow,
    claim: Uuid,
) -> Result<ClaimedEvent, StoreError> {
    let payload: String = row.try_get("payload")?;
    let lead_event: Option<String> = row.try_get("lead_event")?;
    Ok(ClaimedEvent {
        id: row.try_get("id")?,
        claim,
        source: row.try_get("source")?,
        lead_id: row.try_get("lead_id")?,
        event_at: from_micros(row.try_get("event_at")?)?,
        action: row.try_get("action")?,
        payload: json(&payload, "event payload")?,
        lead_event: lead_event.map(|e| json(&e, "lead event")).transpose()?,
        attempts: row.try_get("attempts")?,
        contact_set: row.try_get("contact_set")?,
        message: row.try_get("message")?,
        send_started: row.try_get("send_started")?,
        unknown_outcomes: row.try_get("unknown_outcomes")?,
    })
}

fn record_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        id: row.try_get("id")?,
        source: row.try_get("source")?,
        lead_id: row.try_get("lead_id")?,
        event_at: from_micros(row.try_get("event_at")?)?,
        action: row.try_get("action")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        outcome: row.try_get("outcome")?,
        last_error: row.try_get("last_error")?,
        delivered: row.try_get("delivered")?,
    })
}

async fn upsert_party(
    tx: &mut sqlx::SqliteConnection,
    cpf: &Cpf,
    name: Option<&str>,
) -> Result<i64, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO parties (cpf, name, created_at, updated_at) VALUES ($1, $2, $3, $3)
         ON CONFLICT (cpf) DO UPDATE
           SET name = COALESCE(excluded.name, parties.name), updated_at = excluded.updated_at
         RETURNING id",
    )
    .bind(cpf.as_str())
    .bind(name)
    .bind(now())
    .fetch_one(tx)
    .await?;
    Ok(id)
}

async fn insert_contact(
    tx: &mut sqlx::SqliteConnection,
    party_id: i64,
    kind: &str,
    value: &str,
    source: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO party_contacts (party_id, kind, value, source, created_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (kind, value, source, party_id) DO UPDATE SET created_at = excluded.created_at",
    )
    .bind(party_id)
    .bind(kind)
    .bind(value)
    .bind(source)
    .bind(now())
    .execute(tx)
    .await?;
    Ok(())
}

async fn remember_negative(
    tx: &mut sqlx::SqliteConnection,
    kind: &str,
    value: &str,
    provider: &str,
    until: OffsetDateTime,
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
    .bind(micros(until))
    .bind(now())
    .execute(tx)
    .await?;
    Ok(())
}

async fn negative_exists(pool: &SqlitePool, kind: &str, value: &str) -> Result<bool, StoreError> {
    let hit: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM negative_lookups WHERE kind = $1 AND value = $2 AND expires_at > $3",
    )
    .bind(kind)
    .bind(value)
    .bind(now())
    .fetch_optional(pool)
    .await?;
    Ok(hit.is_some())
}

/// What a replay resets (`$1` is now); the `WHERE` adds which rows. Keeps `message`,
/// `contact_set` and `last_error`.
const REPLAY: &str = "UPDATE webhook_inbox
    SET state = 'pending', attempts = 0, next_attempt_at = $1, claim_token = NULL,
        lease_until = NULL, send_started_at = NULL, unknown_outcomes = 0, outcome = NULL,
        updated_at = $1
  WHERE state = 'dead'";

/// Party ids per `IN (...)` list: well under SQLite's bound-parameter limit.
const IN_CHUNK: usize = 500;

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    async fn ready(&self) -> Result<bool, StoreError> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(v) => v,
                Err(sqlx::Error::Database(_)) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
        Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
    }

    async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(events.len());
        let at = now();
        for e in events {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO webhook_inbox
                   (source, lead_id, event_at, action, payload, lead_event,
                    next_attempt_at, received_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $7, $6, $6, $6)
                 ON CONFLICT (source, lead_id, event_at) DO NOTHING
                 RETURNING id",
            )
            .bind(e.event.source.as_str())
            .bind(e.event.lead.as_str())
            .bind(micros(e.event.at))
            .bind(e.event.action.as_str())
            .bind(e.payload.to_string())
            .bind(at)
            .bind(e.event.to_stored().to_string())
            .fetch_optional(&mut *tx)
            .await?;
            out.push(id.map_or(InsertOutcome::Duplicate, InsertOutcome::Accepted));
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn claim_events(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let claim = Uuid::now_v7();
        let at = now();
        // One statement, so the select and the update are atomic without a lock: SQLite
        // runs one writer at a time.
        let sql = format!(
            "UPDATE webhook_inbox
                SET state = 'processing', claim_token = $1, lease_until = $2, updated_at = $3
              WHERE id IN (
                SELECT i.id FROM webhook_inbox i
                 WHERE ((i.state = 'pending' AND i.next_attempt_at <= $3)
                     OR (i.state = 'processing' AND i.lease_until < $3))
                   AND NOT EXISTS (
                     SELECT 1 FROM webhook_inbox e
                      WHERE e.source = i.source AND e.lead_id = i.lead_id AND e.id <> i.id
                        AND ((e.state IN ('pending', 'processing')
                              AND (e.event_at, e.id) < (i.event_at, i.id))
                          OR (e.state = 'processing' AND e.lease_until >= $3)))
                 ORDER BY i.next_attempt_at, i.id
                 LIMIT $4)
             RETURNING {EVENT_COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(claim.to_string())
            .bind(at + lease.as_micros() as i64)
            .bind(at)
            .bind(i64::from(limit))
            .fetch_all(&self.writer)
            .await?;
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
        .bind(micros(event.event_at))
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
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE webhook_inbox SET contact_set = $3, message = $4, updated_at = $5
             WHERE id = $1 AND claim_token = $2 AND state = 'processing'",
        )
        .bind(event.id)
        .bind(event.claim.to_string())
        .bind(contact_set)
        .bind(message)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        for link in links {
            sqlx::query(
                "INSERT INTO lead_parties (source, lead_id, party_id, contact_kind, linked_at)
                 SELECT $1, $2, id, $4, $5 FROM parties WHERE cpf = $3
                 ON CONFLICT DO NOTHING",
            )
            .bind(&event.source)
            .bind(&event.lead_id)
            .bind(link.cpf.as_str())
            .bind(link.via.as_str())
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn mark_sending(&self, event: &ClaimedEvent) -> Result<bool, StoreError> {
        let at = now();
        let n = sqlx::query(
            "UPDATE webhook_inbox SET send_started_at = $3, updated_at = $3
             WHERE id = $1 AND claim_token = $2 AND state = 'processing'",
        )
        .bind(event.id)
        .bind(event.claim.to_string())
        .bind(at)
        .execute(&self.writer)
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
        .bind(event.claim.to_string())
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn finish(&self, event: &ClaimedEvent, finish: Finish) -> Result<bool, StoreError> {
        let at = now();
        let claim = event.claim.to_string();
        let q = match finish {
            Finish::Done {
                outcome,
                contact_set,
            } => sqlx::query(
                "UPDATE webhook_inbox
                    SET state = 'done', outcome = $3,
                        contact_set = COALESCE($4, contact_set),
                        delivered_at = CASE WHEN $3 = 'delivered' THEN $5 ELSE NULL END,
                        send_started_at = NULL, claim_token = NULL, lease_until = NULL,
                        last_error = NULL, updated_at = $5
                  WHERE id = $1 AND claim_token = $2",
            )
            .bind(event.id)
            .bind(claim)
            .bind(outcome)
            .bind(contact_set)
            .bind(at),
            Finish::Retry { at: due, error } => sqlx::query(
                "UPDATE webhook_inbox
                    SET state = 'pending', attempts = attempts + 1, next_attempt_at = $3,
                        last_error = $4, send_started_at = NULL, claim_token = NULL,
                        lease_until = NULL, updated_at = $5
                  WHERE id = $1 AND claim_token = $2",
            )
            .bind(event.id)
            .bind(claim)
            .bind(micros(due))
            .bind(error)
            .bind(at),
            Finish::Park { at: due, error } => sqlx::query(
                "UPDATE webhook_inbox
                    SET state = 'pending', next_attempt_at = $3,
                        last_error = $4, send_started_at = NULL, claim_token = NULL,
                        lease_until = NULL, updated_at = $5
                  WHERE id = $1 AND claim_token = $2",
            )
            .bind(event.id)
            .bind(claim)
            .bind(micros(due))
            .bind(error)
            .bind(at),
            Finish::Dead { reason } => sqlx::query(
                "UPDATE webhook_inbox
                    SET state = 'dead', attempts = attempts + 1, outcome = 'dead',
                        last_error = $3, send_started_at = NULL, claim_token = NULL,
                        lease_until = NULL, updated_at = $4
                  WHERE id = $1 AND claim_token = $2",
            )
            .bind(event.id)
            .bind(claim)
            .bind(reason)
            .bind(at),
        };
        Ok(q.execute(&self.writer).await?.rows_affected() == 1)
    }

    async fn event(&self, id: i64) -> Result<Option<EventRecord>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM webhook_inbox WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
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
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM webhook_inbox
              WHERE ($1 IS NULL OR state = $1) ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
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
            "SELECT p.cpf FROM party_contacts c JOIN parties p ON p.id = c.party_id
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
        Ok(
            negative_exists(&self.pool, key.kind().as_str(), key.value())
                .await?
                .then_some(Lookup::NotFound),
        )
    }

    async fn record_contact(
        &self,
        key: &ContactKey,
        answer: &Lookup<(Cpf, Option<String>)>,
        negative_until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        match answer {
            Lookup::Found((cpf, name)) => {
                let party = upsert_party(&mut tx, cpf, name.as_deref()).await?;
                insert_contact(&mut tx, party, key.kind().as_str(), key.value(), "lookup").await?;
                sqlx::query("DELETE FROM negative_lookups WHERE kind = $1 AND value = $2")
                    .bind(key.kind().as_str())
                    .bind(key.value())
                    .execute(&mut *tx)
                    .await?;
            }
            Lookup::NotFound => {
                remember_negative(
                    &mut tx,
                    key.kind().as_str(),
                    key.value(),
                    "diretrix",
                    negative_until,
                )
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
            "SELECT e.data, e.fetched_at FROM party_enrichments e
               JOIN parties p ON p.id = e.party_id
              WHERE p.cpf = $1 AND e.fetched_at >= $2
              ORDER BY e.fetched_at DESC, e.id DESC LIMIT 1",
        )
        .bind(cpf.as_str())
        .bind(micros(fresh_since))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let data: String = row.try_get("data")?;
            let person: Person = serde_json::from_str(&data)
                .map_err(|_| StoreError::Corrupt("enrichment data".into()))?;
            return Ok(Some(Lookup::Found(StoredPerson {
                person,
                fetched_at: from_micros(row.try_get("fetched_at")?)?,
            })));
        }
        Ok(negative_exists(&self.pool, "cpf", cpf.as_str())
            .await?
            .then_some(Lookup::NotFound))
    }

    async fn record_person(
        &self,
        cpf: &Cpf,
        answer: &Lookup<(Value, Person)>,
        provider: &str,
        negative_until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        match answer {
            Lookup::Found((raw, person)) => {
                let party = upsert_party(&mut tx, cpf, person.name.as_deref()).await?;
                for (kind, value) in person_contacts(person) {
                    insert_contact(&mut tx, party, kind, &value, "person").await?;
                }
                let data = serde_json::to_string(person)
                    .map_err(|e| StoreError::Database(format!("serializing person: {e}")))?;
                sqlx::query(
                    "INSERT INTO party_enrichments (party_id, provider, raw, data, fetched_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(party)
                .bind(provider)
                .bind(raw.to_string())
                .bind(data)
                .bind(now())
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM negative_lookups WHERE kind = 'cpf' AND value = $1")
                    .bind(cpf.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            Lookup::NotFound => {
                remember_negative(&mut tx, "cpf", cpf.as_str(), provider, negative_until).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn party_counts(&self) -> Result<PartyCounts, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM parties) AS parties,
                    (SELECT count(*) FROM party_contacts) AS contacts,
                    (SELECT count(*) FROM party_enrichments) AS enrichments,
                    (SELECT count(*) FROM lead_parties) AS lead_links,
                    (SELECT count(*) FROM negative_lookups) AS negatives",
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
        let sql = format!("{REPLAY} AND id = $2");
        let replayed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now())
            .bind(id)
            .execute(&self.writer)
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
            .bind(now())
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    async fn latest_event(
        &self,
        source: Source,
        lead: &LeadId,
    ) -> Result<Option<LeadEvent>, StoreError> {
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT lead_event FROM webhook_inbox
              WHERE source = $1 AND lead_id = $2 AND lead_event IS NOT NULL
              ORDER BY event_at DESC, id DESC LIMIT 1",
        )
        .bind(source.as_str())
        .bind(lead.as_str())
        .fetch_optional(&self.pool)
        .await?;
        stored
            .map(|e| read_lead_event(&json(&e, "lead event")?))
            .transpose()
    }

    async fn events_without_lead_event(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<UnconvertedEvent>, StoreError> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, action, payload FROM webhook_inbox
              WHERE lead_event IS NULL AND id > $1
                AND coalesce(json_extract(payload, '$.erased'), 0) = 0
              ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, action, payload)| {
                Ok(UnconvertedEvent {
                    id,
                    action,
                    payload: json(&payload, "event payload")?,
                })
            })
            .collect()
    }

    async fn set_lead_event(&self, id: i64, event: &LeadEvent) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // Only while still missing and not erased meanwhile.
        let done = sqlx::query(
            "UPDATE webhook_inbox SET lead_event = $2
              WHERE id = $1 AND lead_event IS NULL
                AND coalesce(json_extract(payload, '$.erased'), 0) = 0",
        )
        .bind(id)
        .bind(event.to_stored().to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(done)
    }

    async fn erase_party(
        &self,
        cpf: &Cpf,
        action: &str,
        cpf_hash: &str,
    ) -> Result<Erasure, StoreError> {
        let mut tx = self.begin_write().await?;
        let party: Option<i64> = sqlx::query_scalar("SELECT id FROM parties WHERE cpf = $1")
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
                sqlx::query_as("SELECT kind, value FROM party_contacts WHERE party_id = $1")
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
        // The inbox holds the CRM's copy of the person (name, phone, e-mail) and the rendered
        // message holds the bought data: the events of every lead the person reaches are
        // redacted in this same transaction.
        let inbox: Vec<InboxContacts> = sqlx::query_as(
            "SELECT id, source, lead_id,
                    CAST(json_extract(payload, '$.attributes.customer.phone') AS TEXT) AS phone,
                    CAST(json_extract(payload, '$.attributes.customer.email') AS TEXT) AS email,
                    contact_set
               FROM webhook_inbox",
        )
        .fetch_all(&mut *tx)
        .await?;
        let (event_ids, keys) = erasure_scope(&party_keys, &linked, &inbox);
        for id in &event_ids {
            let payload: String =
                sqlx::query_scalar("SELECT payload FROM webhook_inbox WHERE id = $1")
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
                    updated_at = $3
              WHERE id = $1",
            )
            .bind(id)
            .bind(redact_payload(&json(&payload, "inbox payload")?).to_string())
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        erasure.events = event_ids.len() as u64;
        erasure.negatives =
            sqlx::query("DELETE FROM negative_lookups WHERE kind = 'cpf' AND value = $1")
                .bind(cpf.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        for key in &keys {
            erasure.negatives +=
                sqlx::query("DELETE FROM negative_lookups WHERE kind = $1 AND value = $2")
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
        sqlx::query(
            "INSERT INTO erasure_audit (at, action, cpf_hash, counts) VALUES ($1, $2, $3, $4)",
        )
        .bind(now())
        .bind(action)
        .bind(cpf_hash)
        .bind(erasure.counts_json().to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(erasure)
    }

    async fn erasure_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, action, cpf_hash, counts FROM erasure_audit
              ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let counts: String = row.try_get("counts")?;
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    at: from_micros(row.try_get("at")?)?,
                    action: row.try_get("action")?,
                    cpf_hash: row.try_get("cpf_hash")?,
                    counts: json(&counts, "audit counts")?,
                })
            })
            .collect()
    }

    async fn recent_people(
        &self,
        after: Option<WarmCursor>,
        limit: u32,
    ) -> Result<Vec<WarmPerson>, StoreError> {
        let rows: Vec<(i64, String, i64, String, i64)> = sqlx::query_as(
            "SELECT p.id, p.cpf, e.id, e.data, e.fetched_at
               FROM party_enrichments e JOIN parties p ON p.id = e.party_id
              WHERE e.id = (SELECT l.id FROM party_enrichments l
                             WHERE l.party_id = e.party_id
                             ORDER BY l.fetched_at DESC, l.id DESC LIMIT 1)
                AND (?2 IS NULL OR (e.fetched_at, e.id) < (?2, ?3))
              ORDER BY e.fetched_at DESC, e.id DESC
              LIMIT ?1",
        )
        .bind(i64::from(limit))
        .bind(after.map(|c| micros(c.fetched_at)))
        .bind(after.map_or(0, |c| c.enrichment))
        .fetch_all(&self.pool)
        .await?;
        let parties: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let mut contacts: Vec<(i64, String, String)> = Vec::new();
        for chunk in parties.chunks(IN_CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT c.party_id, c.kind, c.value FROM party_contacts c
                  WHERE c.source = 'lookup' AND c.kind IN ('phone', 'email')
                    AND NOT EXISTS (
                      SELECT 1 FROM party_contacts n
                       WHERE n.kind = c.kind AND n.value = c.value AND n.source = 'lookup'
                         AND (n.created_at, n.id) > (c.created_at, c.id))
                    AND c.party_id IN (",
            );
            let mut ids = query.separated(", ");
            for id in chunk {
                ids.push_bind(*id);
            }
            query.push(") ORDER BY c.party_id, c.created_at DESC, c.id DESC");
            contacts.extend(
                query
                    .build_query_as::<(i64, String, String)>()
                    .fetch_all(&self.pool)
                    .await?,
            );
        }
        let mut keys = keys_by_party(contacts);
        rows.into_iter()
            .map(|(party, cpf, enrichment, data, fetched_at)| {
                let fetched_at = from_micros(fetched_at)?;
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
            sqlx::query("DELETE FROM negative_lookups WHERE kind = $1 AND value = $2")
                .bind(key_kind)
                .bind(value)
                .execute(&self.writer)
                .await?
                .rows_affected(),
        )
    }

    async fn forget_all_negatives(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM negative_lookups")
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    async fn count_negatives(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM negative_lookups WHERE expires_at > $1")
                .bind(now())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn renew_lease(&self, event: &ClaimedEvent, lease: Duration) -> Result<bool, StoreError> {
        let at = now();
        let n = sqlx::query(
            "UPDATE webhook_inbox SET lease_until = $3
             WHERE id = $1 AND claim_token = $2 AND state = 'processing'",
        )
        .bind(event.id)
        .bind(event.claim.to_string())
        .bind(at + lease.as_micros() as i64)
        .execute(&self.writer)
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
        .bind(micros(now))
        .fetch_optional(&self.writer)
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
        .bind(micros(now))
        .bind(i32::try_from(max_calls).unwrap_or(i32::MAX))
        .bind(micros(now - busy_for))
        .fetch_optional(&self.writer)
        .await?;
        if let Some(calls) = calls {
            return Ok(CrmCreation::Claimed {
                attempt: u32::try_from(calls).unwrap_or(0),
            });
        }
        let row: Option<(Option<String>, i32, i64)> = sqlx::query_as(
            "SELECT crm_lead_id, calls, claimed_at FROM crm_creations
              WHERE source = $1 AND source_lead = $2",
        )
        .bind(source.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.writer)
        .await?;
        match row {
            Some((Some(id), _, _)) => Ok(CrmCreation::Created(
                LeadId::parse(&id).map_err(|_| StoreError::Corrupt("crm lead id".into()))?,
            )),
            Some((None, calls, claimed_at)) => {
                let until = from_micros(claimed_at)? + busy_for;
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
        .bind(micros(OffsetDateTime::now_utc()))
        .execute(&self.writer)
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
        .bind(micros(OffsetDateTime::UNIX_EPOCH))
        .execute(&self.writer)
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

    // One instance per file (see `InstanceLock`): memory's single flight is the whole lock,
    // and there is nobody to tell about invalidations.
    async fn lock_key(
        &self,
        _space: LockSpace,
        _key: &str,
        _wait: Duration,
    ) -> Result<Option<Box<dyn KeyLock>>, StoreError> {
        Ok(None)
    }

    async fn broadcast(&self, _payload: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn subscribe(&self) -> Result<Option<Box<dyn Subscription>>, StoreError> {
        Ok(None)
    }

    async fn shared_secret(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    async fn prune_done(&self, older_than: OffsetDateTime) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM webhook_inbox
              WHERE state = 'done' AND updated_at < $1
                AND EXISTS (SELECT 1 FROM webhook_inbox n
                             WHERE n.source = webhook_inbox.source
                               AND n.lead_id = webhook_inbox.lead_id
                               AND (n.event_at, n.id) > (webhook_inbox.event_at, webhook_inbox.id))",
        )
        .bind(micros(older_than))
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    async fn purge_payloads(&self, older_than: OffsetDateTime) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let mut tx = self.begin_write().await?;
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, payload FROM webhook_inbox
                  WHERE state = 'done' AND updated_at < $1
                    AND json_extract(payload, '$.erased') IS NOT 1
                  ORDER BY id LIMIT $2",
            )
            .bind(micros(older_than))
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
                .bind(purge_payload(&json(payload, "inbox payload")?).to_string())
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
                    next_attempt_at = $3, updated_at = $3
              WHERE id = $1 AND claim_token = $2 AND send_started_at IS NULL",
        )
        .bind(event.id)
        .bind(event.claim.to_string())
        .bind(now())
        .execute(&self.writer)
        .await?
        .rows_affected()
            == 1)
    }
}

/// Proof that this process is the only one serving a SQLite file: an exclusive lock on
/// `<file>.lock`, which holds the owner's pid. Dropped, the lock goes; the operating system
/// also drops it when the process dies, so a crash never leaves a stale lock behind.
#[derive(Debug)]
pub struct InstanceLock {
    _file: std::fs::File,
}

impl InstanceLock {
    /// Takes the lock for the file a `sqlite://` URL names; `None` for an in-memory
    /// database. Refuses, naming the file and the pid that holds it, when another process
    /// serves it.
    pub fn acquire(url: &str) -> Result<Option<InstanceLock>, StoreError> {
        use std::io::{Read, Seek, Write};
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::Unavailable("invalid sqlite url".into()))?;
        let path = options.get_filename();
        if url.contains(":memory:") || path.as_os_str().is_empty() {
            return Ok(None);
        }
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create the database directory: {e}"))
            })?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = std::path::PathBuf::from(lock_path);
        // Not truncated on open: the pid in it belongs to whoever holds the lock.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open {}: {e}", lock_path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => {
                let written = file
                    .set_len(0)
                    .and_then(|()| file.rewind())
                    .and_then(|()| writeln!(file, "{}", std::process::id()));
                if let Err(e) = written {
                    tracing::warn!(error = %e, "cannot write the pid into the SQLite lock file");
                }
                Ok(Some(InstanceLock { _file: file }))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "unknown".to_owned(),
                    pid => pid.to_owned(),
                };
                Err(StoreError::InUse(format!(
                    "the SQLite database {} is already served by another Enricher process \
                     (pid {holder}, lock file {}); SQLite allows one instance only: stop that \
                     process first, or use Postgres to run several instances",
                    path.display(),
                    lock_path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
                "cannot lock {}: {e}",
                lock_path.display()
            ))),
        }
    }
}
