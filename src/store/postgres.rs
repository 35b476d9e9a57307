//! The Postgres dialect: the production backend, safe for several instances on one database.
//!
//! The statements are shared (`sql.rs`); this file holds what only Postgres does. Claims use
//! `FOR UPDATE SKIP LOCKED` plus a lease, serialized by an advisory lock, so instances never
//! take the same event and a crashed instance's events come back when the lease runs out.
//! Person data lives in schema `core`, found through the connections' `search_path`. A list
//! of events is inserted in one statement with array binds. Instants are `timestamptz`.
//!
//! Coordination between instances uses Postgres alone: purchases take a transaction-scoped
//! advisory lock per key (freed by commit, rollback or the death of the session, so a dead
//! instance never keeps a key), on connections of their own small pool; invalidations travel
//! by `LISTEN/NOTIFY` on a connection of its own.

use std::time::Duration;

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, PgPool, Postgres, Type};
use time::OffsetDateTime;

use super::sql::{
    Dialect, EventRow, LOOKUP_CONTACTS, LOOKUP_CONTACTS_ORDER, claim_update, event_columns,
};
use super::types::{Claim, Stamp};
use super::{Coordination, KeyLock, LockSpace, NewEvent, StoreError, Subscription};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The channel every instance listens on for cache invalidations.
const INVALIDATION_CHANNEL: &str = "enricher_invalidations";

/// First half of the two-key advisory locks, one per space (ASCII "EnC1", "EnC2", "EnC3"),
/// so these never meet the locks of anything else on the database.
const fn lock_class(space: Option<LockSpace>) -> i32 {
    match space {
        Some(LockSpace::Contact) => 0x456e_4331,
        Some(LockSpace::Cpf) => 0x456e_4332,
        Some(LockSpace::Reconcile) => 0x456e_4333,
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
    /// The statement that calls the claim function, once this store has made sure the
    /// function exists.
    claim_call: std::sync::Arc<tokio::sync::OnceCell<std::sync::Arc<str>>>,
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
            .map_err(|_| StoreError::Unavailable("invalid postgres url".into()))?
            // The inbox is in `public`, person data in `core`: the shared statements name
            // tables alone, as on SQLite. `public` first, so whatever is created without a
            // schema (the migrations' own table) stays where it always was.
            .options([
                ("search_path", "public, core"),
                // Every statement here is prepared once per connection and is a lookup by
                // key, an insert or an update of a few rows, whose plan does not depend on the
                // values bound. Postgres otherwise plans the first five executions per
                // connection afresh and then keeps planning whatever it judges cheaper with
                // the values: the claim spent 0.36 ms planning for 0.04 ms of work, on every
                // webhook. A generic plan is made once per connection.
                ("plan_cache_mode", "force_generic_plan"),
            ]);
        let pool = super::pool_options::<Postgres>()
            .max_connections(max_connections)
            // Intake answers 503 rather than hanging when the database is gone.
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options.clone());
        let locks = super::pool_options::<Postgres>()
            .max_connections(lock_connections.max(1))
            // Waits for a free lock connection are bounded by the caller's lock wait.
            .acquire_timeout(Duration::from_secs(3600))
            .connect_lazy_with(options.clone().application_name("enricher-locks"));
        let listen = super::pool_options::<Postgres>()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options.application_name("enricher-listener"));
        Ok(PgStore {
            pool,
            locks,
            listen,
            async_steps: false,
            claim_call: std::sync::Arc::default(),
        })
    }

    /// With `on`, a claim and the saving of a rendered message without a sending mark (a
    /// store-only event) commit without waiting for the WAL flush (`synchronous_commit = off`
    /// for those transactions only). Nothing durable depends on them alone: the WAL is
    /// written in order, so the event's next synchronous commit (the message with its sending
    /// mark, before any POST) flushes them too, and a crash before that only loses a claim
    /// (the event is pending again) or a kept message (rendered again). With the message and
    /// the mark in one commit, a webhook waits for two flushes before its message goes out:
    /// intake's and that one. The end of a finished event (done, after its POST) does not wait
    /// either (see [`crate::store::Inbox::finish_and_look`]). Intake and every other write
    /// stay synchronous.
    pub fn with_async_commit_steps(mut self, on: bool) -> PgStore {
        self.async_steps = on;
        self.claim_call = std::sync::Arc::default();
        self
    }

    /// The claim as one server-side function, so a claim is one round trip instead of four
    /// (BEGIN, the claim lock, the update, COMMIT), on the path of every webhook. The body is
    /// the shared statement ([`super::sql::claim_update`]) verbatim (a PL/pgSQL function reads
    /// `$1`..`$4` as its arguments), after the lock; a statement inside a function takes a
    /// new snapshot, so the update still sees every claim committed before the lock was
    /// granted. The name carries a hash of the body: every build creates the function of its
    /// own statement and never replaces another's, so instances of two versions on one
    /// database during a deploy each run their own claim. Returns the statement that calls it
    /// and reads the claimed rows ([`event_columns`]).
    async fn claim_call(&self) -> Result<std::sync::Arc<str>, StoreError> {
        let call = self
            .claim_call
            .get_or_try_init(|| async {
                let update = claim_update(Self::SKIP_LOCKED);
                let lock = lock_class(None);
                let step = if self.async_steps {
                    "PERFORM set_config('synchronous_commit', 'off', true);"
                } else {
                    ""
                };
                let body = format!(
                    "BEGIN
                       PERFORM pg_advisory_xact_lock({lock}, 0);
                       {step}
                       RETURN QUERY WITH claimed AS ({update} RETURNING webhook_inbox.*)
                         SELECT * FROM claimed;
                     END"
                );
                let name = format!("enricher_claim_{:016x}", fnv1a(body.as_bytes()));
                let signature = format!("{name}(uuid, timestamptz, timestamptz, bigint)");
                let exists = |signature: String| async move {
                    let found: Option<String> =
                        sqlx::query_scalar("SELECT to_regprocedure($1)::text")
                            .bind(signature)
                            .fetch_one(&self.pool)
                            .await?;
                    Ok::<_, StoreError>(found.is_some())
                };
                if !exists(signature.clone()).await? {
                    let create = format!(
                        "CREATE FUNCTION {name}(uuid, timestamptz, timestamptz, bigint)
                           RETURNS SETOF webhook_inbox LANGUAGE plpgsql AS $claim$ {body} $claim$"
                    );
                    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(create))
                        .execute(&self.pool)
                        .await
                    {
                        // Another instance of this build created it at the same moment.
                        if !exists(signature).await? {
                            return Err(e.into());
                        }
                    }
                }
                Ok::<_, StoreError>(
                    format!(
                        "SELECT {} FROM {name}($1, $2, $3, $4)",
                        event_columns(Self::ERASED)
                    )
                    .into(),
                )
            })
            .await?;
        Ok(call.clone())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Dialect for PgStore {
    type DB = Postgres;
    const NAME: &'static str = "postgres";
    const LOCK_ROWS: &'static str = "FOR UPDATE";
    const SKIP_LOCKED: &'static str = "FOR UPDATE SKIP LOCKED";
    const CUSTOMER_PHONE: &'static str = "payload #>> '{attributes,customer,phone}'";
    const CUSTOMER_EMAIL: &'static str = "payload #>> '{attributes,customer,email}'";
    const ERASED: &'static str = "payload @> '{\"erased\": true}'";

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn reads(&self) -> &PgPool {
        &self.pool
    }

    fn writes(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    async fn begin_step(&self) -> Result<sqlx::Transaction<'_, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.async_steps {
            sqlx::query(ASYNC_COMMIT).execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    // `set_config(…, true)` lasts until the end of the statement's own transaction, whose
    // commit is then asynchronous: one round trip, where BEGIN, `ASYNC_COMMIT`, the statement
    // and COMMIT would be four.
    fn unflushed(&self) -> &'static str {
        if self.async_steps {
            "set_config('synchronous_commit', 'off', true) IS NOT NULL"
        } else {
            "TRUE"
        }
    }

    async fn claim_rows(
        &self,
        claim: Claim,
        until: Stamp,
        now: Stamp,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        // Without the lock the function takes, two claims running at once judge "is an
        // earlier event of this lead unfinished?" on two different snapshots: an event
        // inserted between them is seen by one and not the other, and both could take an
        // event of one lead. Under the lock each claim's update starts after the previous
        // claim committed, so it sees that claim. A claim takes milliseconds.
        let call = self.claim_call().await?;
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(call))
            .bind(claim)
            .bind(until)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn insert_new(
        &self,
        events: &[NewEvent],
        at: Stamp,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        // One statement for the whole list, whatever its length: intake groups the events of
        // concurrent requests into one call, and a round trip per row would cost more than
        // the commit saved. The answer is one row per input, in input order (`ord`): the
        // first occurrence of a key inserted gets its id, a known key or a later repeat of a
        // key in the list gets NULL (a duplicate), as if the rows were inserted one by one.
        // Rows are inserted in key order, so two lists inserted at once take their unique
        // index entries in the same order and cannot deadlock.
        let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "WITH input AS (
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[],
                                    $5::jsonb[], $6::jsonb[])
                 WITH ORDINALITY AS t(source, lead_id, event_at, action, payload, lead_event, ord)),
             first AS (
               SELECT DISTINCT ON (source, lead_id, event_at) *
                 FROM input ORDER BY source, lead_id, event_at, ord),
             inserted AS (
               INSERT INTO webhook_inbox (source, lead_id, event_at, action, payload, lead_event,
                                          next_attempt_at, received_at, updated_at)
               SELECT source, lead_id, event_at, action, payload, lead_event, $7, $7, $7
                 FROM first ORDER BY source, lead_id, event_at
               ON CONFLICT (source, lead_id, event_at) DO NOTHING
               RETURNING id, source, lead_id, event_at)
             SELECT i.ord, CASE WHEN f.ord = i.ord THEN n.id END
               FROM input i
               JOIN first f USING (source, lead_id, event_at)
               LEFT JOIN inserted n USING (source, lead_id, event_at)
              ORDER BY i.ord",
        )
        .bind(
            events
                .iter()
                .map(|e| e.event.source.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.event.lead.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.event.at).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.event.action.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| &e.payload).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.event.to_stored())
                .collect::<Vec<_>>(),
        )
        .bind(at)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(_, id)| id).collect())
    }

    async fn lookup_contacts(
        &self,
        parties: &[i64],
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let sql = format!("{LOOKUP_CONTACTS} AND c.party_id = ANY($1) {LOOKUP_CONTACTS_ORDER}");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(parties)
            .fetch_all(&self.pool)
            .await?)
    }
}

impl PgStore {
    async fn close_pools(&self) {
        // The listener's and the locks' pools first: closing waits for every connection to
        // come back, and the listener's never would on its own.
        self.listen.close().await;
        self.locks.close().await;
        self.pool.close().await;
    }
}

super::sql::shared_sql!(PgStore);

impl Type<Postgres> for Stamp {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Stamp {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <OffsetDateTime as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Stamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(Stamp(<OffsetDateTime as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Postgres> for Claim {
    fn type_info() -> PgTypeInfo {
        <uuid::Uuid as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Claim {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <uuid::Uuid as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

#[async_trait]
impl Coordination for PgStore {
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
        let secret: String = sqlx::query_scalar("SELECT secret FROM instance_secret WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(secret.into_bytes()))
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

/// FNV-1a, 64 bits: a stable name for a function body (not for anything secret).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
