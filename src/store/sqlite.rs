//! The SQLite dialect: the embedded default, for one instance only.
//!
//! Same statements (`sql.rs`) and guarantees as Postgres within one process; this file holds
//! what only SQLite does. Instants are integer microseconds (UTC), because SQLite has no
//! timestamp type. Every write goes through one writer connection, in transactions that
//! begin IMMEDIATE, so claims need no row locks. Coordination is a no-op (one instance per
//! file, enforced by [`InstanceLock`]).

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteArgumentsBuffer, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous,
    SqliteTypeInfo, SqliteValueRef,
};
use sqlx::types::Json;
use sqlx::{Decode, Encode, QueryBuilder, Sqlite, SqlitePool, Type};
use time::OffsetDateTime;

use super::sql::{
    Dialect, EventRow, LOOKUP_CONTACTS, LOOKUP_CONTACTS_ORDER, claim_update, event_columns,
};
use super::types::{Claim, Stamp};
use super::{Coordination, KeyLock, LockSpace, NewEvent, StoreError, Subscription};

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
        let writer = super::pool_options::<Sqlite>()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        let pool = super::pool_options::<Sqlite>()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool, writer })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn close_pools(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// Party ids per `IN (...)` list: well under SQLite's bound-parameter limit.
const IN_CHUNK: usize = 500;

impl Dialect for SqliteStore {
    type DB = Sqlite;
    const NAME: &'static str = "sqlite";
    // One writer holds the whole file for the length of a transaction.
    const LOCK_ROWS: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const CUSTOMER_PHONE: &'static str =
        "CAST(json_extract(payload, '$.attributes.customer.phone') AS TEXT)";
    const CUSTOMER_EMAIL: &'static str =
        "CAST(json_extract(payload, '$.attributes.customer.email') AS TEXT)";
    const ERASED: &'static str = "json_extract(payload, '$.erased') IS 1";

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn reads(&self) -> &SqlitePool {
        &self.pool
    }

    fn writes(&self) -> &SqlitePool {
        &self.writer
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, Sqlite>, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    // Every commit waits for its write: no step is cheaper than another.
    async fn begin_step(&self) -> Result<sqlx::Transaction<'_, Sqlite>, StoreError> {
        self.begin_write().await
    }

    // Every SQLite commit is synchronous here.
    fn unflushed(&self) -> &'static str {
        "1 = 1"
    }

    // The claim runs in a write transaction, and SQLite runs one writer at a time.
    async fn claim_rows(
        &self,
        claim: Claim,
        until: Stamp,
        now: Stamp,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        static CLAIM: LazyLock<String> = LazyLock::new(|| {
            format!(
                "{} RETURNING {}",
                claim_update(SqliteStore::SKIP_LOCKED),
                event_columns(SqliteStore::ERASED)
            )
        });
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query_as(CLAIM.as_str())
            .bind(claim)
            .bind(until)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn insert_new(
        &self,
        events: &[NewEvent],
        at: Stamp,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        // A statement per row costs no round trip here: the database is in the process.
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(
                sqlx::query_scalar(
                    "INSERT INTO webhook_inbox (source, lead_id, event_at, action, payload,
                                               lead_event, next_attempt_at, received_at,
                                               updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7)
                     ON CONFLICT (source, lead_id, event_at) DO NOTHING
                     RETURNING id",
                )
                .bind(e.event.source)
                .bind(e.event.lead.as_str())
                .bind(Stamp(e.event.at))
                .bind(e.event.action.as_str())
                .bind(Json(&e.payload))
                .bind(Json(e.event.to_stored()))
                .bind(at)
                .fetch_optional(&mut *tx)
                .await?,
            );
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn lookup_contacts(
        &self,
        parties: &[i64],
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        // No array binds: an `IN` list per chunk.
        let mut contacts = Vec::new();
        for chunk in parties.chunks(IN_CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new(LOOKUP_CONTACTS);
            query.push(" AND c.party_id IN (");
            let mut ids = query.separated(", ");
            for id in chunk {
                ids.push_bind(*id);
            }
            query.push(") ");
            query.push(LOOKUP_CONTACTS_ORDER);
            contacts.extend(
                query
                    .build_query_as::<(i64, String, String)>()
                    .fetch_all(&self.pool)
                    .await?,
            );
        }
        Ok(contacts)
    }
}

super::sql::shared_sql!(SqliteStore);

impl Type<Sqlite> for Stamp {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Stamp {
    fn encode_by_ref(
        &self,
        buf: &mut SqliteArgumentsBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        // i64 microseconds cover ±292,000 years around 1970.
        let micros = (self.0.unix_timestamp_nanos() / 1_000) as i64;
        <i64 as Encode<Sqlite>>::encode(micros, buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Stamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let micros = <i64 as Decode<Sqlite>>::decode(value)?;
        Ok(Stamp(OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(micros) * 1_000,
        )?))
    }
}

impl Type<Sqlite> for Claim {
    fn type_info() -> SqliteTypeInfo {
        <str as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Claim {
    fn encode_by_ref(
        &self,
        buf: &mut SqliteArgumentsBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.0.to_string(), buf)
    }
}

// One instance per file (see `InstanceLock`): memory's single flight is the whole lock, and
// there is nobody to tell about invalidations.
#[async_trait]
impl Coordination for SqliteStore {
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
