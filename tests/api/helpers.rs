//! Test harness: a fresh database per test (Postgres from a migrated template, or a SQLite
//! file in a temp dir), a wiremock server per outside API, and the application on port 0.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enricher::config::{AppEnv, Settings};
use enricher::startup::Application;
use enricher::state::AppState;
use enricher::store::{DynStore, EventRecord, PartyCounts};
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const C2S_TOKEN: &str = "c2s-api-token-test-value";
pub const WORK_TOKEN: &str = "work-api-token-test-value";
pub const DIRETRIX_USER: &str = "diretrix-user-test";
pub const DIRETRIX_PASSWORD: &str = "diretrix-password-test-value";
pub const ADMIN_TOKEN: &str = "admin-token-test-value";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The server that tests create databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("TEST_DATABASE_URL must be a URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// Names of the databases tests create. A test database carries the id of the process that
/// made it (`enricher_test_<pid>_<uuid>`), so a later run can tell a leak from a live one.
pub const TEST_DB_PREFIX: &str = "enricher_test_";
pub const TEMPLATE_PREFIX: &str = "enricher_tpl_";
/// Advisory lock classes (the first key of the two-key form): a run holds
/// `(LIVE_RUN, pid)` and `(LIVE_TEMPLATE, template key)` shared for as long as its process
/// lives. The server drops them when the process's connection closes, however it dies.
pub const LIVE_RUN: i32 = 727_003;
pub const LIVE_TEMPLATE: i32 = 727_004;
/// Templates stamped less than this ago are kept: another checkout may be using them.
pub const TEMPLATE_GRACE_SECS: i64 = 3600;

/// A migrated template database, made once per migration set and shared by every test
/// process; an advisory lock keeps parallel test binaries from racing to create it. The
/// first run in a process also sweeps what killed runs left behind (see [`sweep`]).
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let mut digest = 0u64;
            let mut files: Vec<_> = std::fs::read_dir("migrations/postgres")
                .expect("migrations/postgres")
                .map(|e| e.expect("dir entry").path())
                .collect();
            files.sort();
            for f in files {
                for b in std::fs::read(&f).expect("migration file") {
                    // FNV-1a: stable across runs, unlike the std hasher.
                    digest = (digest ^ u64::from(b)).wrapping_mul(0x100000001b3);
                }
            }
            let name = format!("{TEMPLATE_PREFIX}{digest:016x}");
            let admin = postgres_admin_url();
            hold_run_locks(&admin, template_key(&name)).await;
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("Postgres for tests: set TEST_DATABASE_URL or start one on 127.0.0.1:5432");
            sqlx::query("SELECT pg_advisory_lock(727001)")
                .execute(&mut conn)
                .await
                .unwrap();
            sweep(&mut conn, TEST_DB_PREFIX, TEMPLATE_PREFIX, &name).await;
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                    .bind(&name)
                    .fetch_optional(&mut conn)
                    .await
                    .unwrap();
            if exists.is_none() {
                // Built under a temporary name and renamed when complete, so a crash midway
                // never leaves a half-migrated template behind.
                let building = format!("{name}_building");
                let drop = format!("DROP DATABASE IF EXISTS {building}");
                sqlx::query(sqlx::AssertSqlSafe(drop))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let create = format!("CREATE DATABASE {building}");
                sqlx::query(sqlx::AssertSqlSafe(create))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                {
                    let store =
                        enricher::store::PgStore::connect(&with_database(&admin, &building), 2, 1)
                            .await
                            .unwrap();
                    use enricher::store::Admin;
                    store.migrate().await.unwrap();
                    store.pool().close().await;
                }
                let rename = format!("ALTER DATABASE {building} RENAME TO {name}");
                sqlx::query(sqlx::AssertSqlSafe(rename))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            stamp_template(&mut conn, &name, unix_now()).await;
            sqlx::query("SELECT pg_advisory_unlock(727001)")
                .execute(&mut conn)
                .await
                .unwrap();
            name
        })
        .await
}

pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The second advisory key of a template: the low half of its digest (a collision only
/// makes the sweep keep a template it could have dropped).
pub fn template_key(name: &str) -> i32 {
    let digest = name
        .rsplit('_')
        .next()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or(0);
    digest as u32 as i32
}

/// Takes this run's advisory locks on a connection of its own, kept open on a thread of its
/// own until the process exits: that open connection is the run's sign of life.
async fn hold_run_locks(admin: &str, template: i32) {
    let admin = admin.to_owned();
    let (ready, held) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            // A try: a live process with this pid in another pid namespace may hold it, and
            // then this run's databases are simply kept a little longer.
            sqlx::query("SELECT pg_try_advisory_lock($1, $2)")
                .bind(LIVE_RUN)
                .bind(std::process::id() as i32)
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query("SELECT pg_advisory_lock_shared($1, $2)")
                .bind(LIVE_TEMPLATE)
                .bind(template)
                .execute(&mut conn)
                .await
                .unwrap();
            let _ = ready.send(());
            std::future::pending::<()>().await;
        });
    });
    held.await.expect("the run's advisory locks are held");
}

/// Records when a run last used a template, in the database's comment.
pub async fn stamp_template(conn: &mut sqlx::PgConnection, name: &str, at: i64) {
    let comment = format!("COMMENT ON DATABASE {name} IS 'enricher test template; used {at}'");
    // Best effort: a template dropped meanwhile by a concurrent sweep needs no stamp.
    let _ = sqlx::query(sqlx::AssertSqlSafe(comment))
        .execute(conn)
        .await;
}

/// Drops what killed test runs left behind on this server, never what a live run uses:
///
/// - a test database `<prefix><pid>_<uuid>` once its process is gone: no such process on
///   this machine, and its run's advisory lock free (so a live run in another pid namespace
///   is kept too);
/// - a template of another migration set once no live run holds its lock, no run stamped it
///   within [`TEMPLATE_GRACE_SECS`], and nobody is connected (a plain `DROP` fails then).
///   A template never stamped is stamped now and dropped by a later run. While databases of
///   the older, unnamed form (`<prefix><uuid>`) exist, a run of an older checkout is likely
///   going on and no template is touched;
/// - a `_building` template (its builder holds the lock this runs under, so it is a leak).
///
/// Every `DROP` may fail (a concurrent sweep got there first, someone connected): tolerated.
pub async fn sweep(
    conn: &mut sqlx::PgConnection,
    test_prefix: &str,
    tpl_prefix: &str,
    current: &str,
) {
    let unnamed = sweep_test_databases(conn, test_prefix).await;
    if unnamed == 0 {
        sweep_templates(conn, tpl_prefix, current, unix_now()).await;
    }
}

/// The databases whose name starts with `prefix`.
async fn databases(conn: &mut sqlx::PgConnection, prefix: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)")
        .bind(prefix)
        .fetch_all(conn)
        .await
        .unwrap()
}

/// Drops the test databases of dead runs; returns how many databases of the unnamed form
/// (no process id) it saw and kept.
pub async fn sweep_test_databases(conn: &mut sqlx::PgConnection, prefix: &str) -> usize {
    let me = std::process::id();
    let mut unnamed = 0;
    let mut dead = Vec::new();
    for name in databases(conn, prefix).await {
        let rest = &name[prefix.len()..];
        let Some(pid) = rest
            .split_once('_')
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            unnamed += 1;
            continue;
        };
        if pid != me && run_is_gone(conn, pid).await {
            dead.push(name);
        }
    }
    drop_databases(&dead).await;
    unnamed
}

/// No process with this id on this machine, and nobody holds its run lock.
async fn run_is_gone(conn: &mut sqlx::PgConnection, pid: u32) -> bool {
    if Path::new(&format!("/proc/{pid}")).exists() || !Path::new("/proc/self").exists() {
        return false;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(LIVE_RUN)
        .bind(pid)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    if free {
        sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(LIVE_RUN)
            .bind(pid)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    free
}

/// Drops the templates of other migration sets that nobody has used for a while.
pub async fn sweep_templates(conn: &mut sqlx::PgConnection, prefix: &str, current: &str, now: i64) {
    let (mut unused, mut locked) = (Vec::new(), Vec::new());
    for name in databases(conn, prefix).await {
        if name == current {
            continue;
        }
        if name.ends_with("_building") {
            unused.push(name);
            continue;
        }
        let comment: Option<String> = sqlx::query_scalar(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        )
        .bind(&name)
        .fetch_optional(&mut *conn)
        .await
        .unwrap()
        .flatten();
        let used = comment.and_then(|c| c.rsplit(' ').next()?.parse::<i64>().ok());
        let Some(used) = used else {
            stamp_template(conn, &name, now).await;
            continue;
        };
        if now - used < TEMPLATE_GRACE_SECS {
            continue;
        }
        // Held until the drops are done, so no run of that migration set starts meanwhile.
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LIVE_TEMPLATE)
            .bind(template_key(&name))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        if free {
            locked.push(template_key(&name));
            unused.push(name);
        }
    }
    drop_databases(&unused).await;
    for key in locked {
        sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(LIVE_TEMPLATE)
            .bind(key)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

/// Drops the databases nobody is connected to, all at once (each drop waits on every
/// backend of the server, a second or more on a busy one). The `DROP` is a plain one, which
/// fails if someone connected meanwhile: that database is left for a later sweep.
async fn drop_databases(names: &[String]) {
    futures::future::join_all(names.iter().map(|name| async move {
        let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await else {
            return;
        };
        let connected: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .unwrap_or(1);
        if connected == 0 {
            let drop = format!("DROP DATABASE IF EXISTS {name}");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut conn)
                .await;
        }
    }))
    .await;
}

/// One test's database; dropped (Postgres) or deleted (SQLite) with the value.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Postgres => {
                let template = template().await;
                let name = format!(
                    "{TEST_DB_PREFIX}{}_{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                );
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                let create = format!("CREATE DATABASE {name} TEMPLATE {template}");
                sqlx::query(sqlx::AssertSqlSafe(create))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                TestDb {
                    url: with_database(&admin, &name),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                TestDb {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
        }
    }

    /// A store on this database, migrated.
    pub async fn store(&self) -> DynStore {
        let settings = enricher::config::DatabaseSettings {
            url: self.url.clone().into(),
            max_connections: 5,
            lock_connections: 2,
            lock_wait_ms: 5000,
            async_commit_steps: true,
        };
        let store = enricher::store::connect(&settings).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// Runs one statement on this database as the test wrote it (same SQL on both backends).
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.pg_name.is_some() {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
    }

    /// Drops the database out from under the application (Postgres only).
    pub async fn destroy(&self) {
        if let Some(name) = &self.pg_name {
            let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
                .await
                .unwrap();
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside async; a short-lived thread with its own runtime does the I/O.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// What the database holds at one moment. A mock reads it as a request arrives, so a test
/// sees what the application had committed before it called out: order, not survival.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub counts: PartyCounts,
    /// Every inbox event.
    pub events: Vec<EventRecord>,
    /// Each inbox event's rendered message and whether its "sending" mark is set, by id.
    pub rendered: HashMap<i64, (Option<String>, bool)>,
}

impl Snapshot {
    /// Reads the database at `url` from blocking code (a wiremock responder): on a thread of
    /// its own, with its own runtime and connections, so no application runtime is blocked.
    pub fn take_blocking(url: &str) -> Snapshot {
        let url = url.to_owned();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(Snapshot::take(&url))
        })
        .join()
        .expect("a snapshot of the database")
    }

    pub async fn take(url: &str) -> Snapshot {
        let settings = enricher::config::DatabaseSettings {
            url: url.to_owned().into(),
            max_connections: 1,
            lock_connections: 1,
            lock_wait_ms: 5000,
            async_commit_steps: true,
        };
        let store = enricher::store::connect(&settings).await.unwrap();
        let counts = store.party_counts().await.unwrap();
        let events = store.events(None, 1000).await.unwrap();
        // The store has no reader for these two columns: the worker reads them only through
        // a claim, and claiming would change what is being observed.
        const SQL: &str = "SELECT id, message, \
            CAST(CASE WHEN send_started_at IS NULL THEN 0 ELSE 1 END AS BIGINT) \
            FROM webhook_inbox";
        let rows: Vec<(i64, Option<String>, i64)> = if url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_as(SQL).fetch_all(&mut conn).await.unwrap()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_as(SQL).fetch_all(&mut conn).await.unwrap()
        };
        Snapshot {
            counts,
            events,
            rendered: rows
                .into_iter()
                .map(|(id, message, sending)| (id, (message, sending == 1)))
                .collect(),
        }
    }

    /// The events' states, oldest event first.
    pub fn states(&self) -> Vec<&str> {
        let mut events: Vec<&EventRecord> = self.events.iter().collect();
        events.sort_by_key(|e| (e.event_at, e.id));
        events.iter().map(|e| e.state.as_str()).collect()
    }
}

/// Requests a mock received, each with the database as it was when the request arrived.
pub type Observations = Arc<std::sync::Mutex<Vec<(Request, Snapshot)>>>;

/// A responder that takes a [`Snapshot`] as each request arrives, then answers `answer`.
pub struct Observing {
    url: String,
    answer: ResponseTemplate,
    seen: Observations,
}

impl Observing {
    pub fn new(db: &TestDb, answer: ResponseTemplate) -> (Observing, Observations) {
        let seen = Observations::default();
        let observing = Observing {
            url: db.url.clone(),
            answer,
            seen: seen.clone(),
        };
        (observing, seen)
    }
}

impl Respond for Observing {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let snapshot = Snapshot::take_blocking(&self.url);
        self.seen.lock().unwrap().push((request.clone(), snapshot));
        self.answer.clone()
    }
}

/// A running application with its database and one mock server per outside API.
pub struct TestApp {
    pub address: String,
    /// Where `/metrics` is served.
    pub metrics_address: String,
    pub state: AppState,
    pub diretrix: Arc<MockServer>,
    pub work_api: Arc<MockServer>,
    pub c2s: Arc<MockServer>,
    pub db: Arc<TestDb>,
    pub http: reqwest::Client,
    settings: Settings,
    shutdown: CancellationToken,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Settings for a test: everything pointed at the mocks, fast polling and retries.
pub fn test_settings(
    db: &TestDb,
    diretrix: &MockServer,
    work_api: &MockServer,
    c2s: &MockServer,
) -> Settings {
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", db.url.clone()),
        ("PORT", "0".to_owned()),
        ("ENRICHER__METRICS__PORT", "0".to_owned()),
        ("ENRICHER__METRICS__HOST", "127.0.0.1".to_owned()),
        ("ENRICHER__SERVER__HOST", "127.0.0.1".to_owned()),
        ("ENRICHER__SANDBOX__ENABLED", "false".to_owned()),
        ("ENRICHER__DIRETRIX__BASE_URL", diretrix.uri()),
        ("ENRICHER__DIRETRIX__USER", DIRETRIX_USER.to_owned()),
        ("ENRICHER__DIRETRIX__PASSWORD", DIRETRIX_PASSWORD.to_owned()),
        ("ENRICHER__WORK_API__BASE_URL", work_api.uri()),
        ("ENRICHER__WORK_API__TOKEN", WORK_TOKEN.to_owned()),
        ("ENRICHER__C2S__BASE_URL", c2s.uri()),
        ("ENRICHER__C2S__TOKEN", C2S_TOKEN.to_owned()),
        ("ENRICHER__C2S__TIMEOUT_MS", "3000".to_owned()),
        ("ENRICHER__WORKERS__POLL_INTERVAL_MS", "25".to_owned()),
        ("ENRICHER__WORKERS__CONCURRENCY", "16".to_owned()),
        ("ENRICHER__WORKERS__DRAIN_SECS", "10".to_owned()),
        ("ENRICHER__DELIVERY__BASE_DELAY_MS", "20".to_owned()),
        ("ENRICHER__DELIVERY__MAX_DELAY_SECS", "1".to_owned()),
        ("ENRICHER__DELIVERY__MAX_ATTEMPTS", "4".to_owned()),
        // A breaker opened by a test's deliberate failures lets a probe through quickly, so
        // only the tests about the breaker wait on it.
        ("ENRICHER__DIRETRIX__BREAKER_OPEN_SECS", "1".to_owned()),
        ("ENRICHER__WORK_API__BREAKER_OPEN_SECS", "1".to_owned()),
        ("ENRICHER__C2S__BREAKER_OPEN_SECS", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Settings::load_from(AppEnv::Development, Path::new("config"), &vars).expect("test settings")
}

/// `n` instances of one deployment on one Postgres database, sharing the mock servers.
pub async fn spawn_instances(n: usize, customize: impl FnOnce(&mut Settings)) -> Vec<TestApp> {
    let first = spawn_app_with(Backend::Postgres, customize).await;
    let mut apps = Vec::with_capacity(n);
    for _ in 1..n {
        apps.push(first.sibling().await);
    }
    apps.insert(0, first);
    apps
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, customize: impl FnOnce(&mut Settings)) -> TestApp {
    // TEST_LOG=debug shows the application's logs while debugging a test.
    if let Ok(spec) = std::env::var("TEST_LOG") {
        enricher::telemetry::init_with(false, &spec, std::io::stdout);
    }
    let db = Arc::new(TestDb::new(backend).await);
    let (diretrix, work_api, c2s) = (
        Arc::new(MockServer::start().await),
        Arc::new(MockServer::start().await),
        Arc::new(MockServer::start().await),
    );
    for server in [&diretrix, &work_api, &c2s] {
        catch_all(server).await;
    }
    let mut settings = test_settings(&db, &diretrix, &work_api, &c2s);
    customize(&mut settings);
    start(settings, db, diretrix, work_api, c2s).await
}

/// Answers every request that no mock of the test matched with a 500, and fails the test if
/// one arrived. Without it wiremock answers 404, which both providers read as "nobody": a
/// call with a wrong path, encoding or credential would pass as a remembered not-found.
/// Checked by `verify_mocks` and, at the latest, when the last handle on the server is
/// dropped (wiremock verifies in `MockServer`'s `Drop`, so a mismatch panics the test).
async fn catch_all(server: &MockServer) {
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .with_priority(u8::MAX)
        .named("catch-all: a request no mock of this test expects")
        .expect(0)
        .mount(server)
        .await;
}

async fn start(
    settings: Settings,
    db: Arc<TestDb>,
    diretrix: Arc<MockServer>,
    work_api: Arc<MockServer>,
    c2s: Arc<MockServer>,
) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = format!("http://127.0.0.1:{}", app.metrics_port());
    let state = app.state().clone();
    let shutdown = app.shutdown_token();
    let running = Some(tokio::spawn(app.run_until_stopped()));
    TestApp {
        address,
        metrics_address,
        state,
        diretrix,
        work_api,
        c2s,
        db,
        http: reqwest::Client::new(),
        settings,
        shutdown,
        running,
    }
}

impl TestApp {
    pub fn store(&self) -> &DynStore {
        &self.state.store
    }

    /// Stops gracefully: intake closes, in-flight events finish.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.running.take() {
            handle.await.unwrap().unwrap();
        }
    }

    /// Stops this instance and starts a new one on the same database and mocks, with
    /// empty memory: what a deploy or a crash-and-restart looks like.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let settings = self.settings.clone();
        start(
            settings,
            self.db.clone(),
            self.diretrix.clone(),
            self.work_api.clone(),
            self.c2s.clone(),
        )
        .await
    }

    /// Another instance of the same deployment: same database, settings and mocks, its own
    /// memory, workers and port.
    pub async fn sibling(&self) -> TestApp {
        start(
            self.settings.clone(),
            self.db.clone(),
            self.diretrix.clone(),
            self.work_api.clone(),
            self.c2s.clone(),
        )
        .await
    }

    /// Stops this instance the way `kill -9` does: every task aborted mid-flight, nothing
    /// drained or finished, its connections closed (so Postgres frees its locks).
    pub async fn crash(&mut self) {
        if let Some(handle) = self.running.take() {
            handle.abort();
            let _ = handle.await;
        }
        self.state.store.close().await;
    }

    /// Checks every mock's `.expect(n)`: how many calls each outside API was paid.
    pub async fn verify_mocks(&self) {
        self.diretrix.verify().await;
        self.work_api.verify().await;
        self.c2s.verify().await;
    }

    /// A request to an admin route with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// The Prometheus exposition.
    pub async fn scrape(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.metrics_address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    pub async fn post_c2s(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/webhooks/c2s", self.address))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Posts and returns the inbox ids of the accepted events.
    pub async fn post_c2s_ok(&self, body: &Value) -> Vec<i64> {
        let response = self.post_c2s(body).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["event_id"].as_i64())
            .collect()
    }

    /// Waits until the event reaches a final state (done or dead) and returns it.
    pub async fn wait_final(&self, id: i64) -> EventRecord {
        wait_final(self.store(), id, Duration::from_secs(20)).await
    }

    /// Messages the C2S mock received, as (lead id, body).
    pub async fn c2s_messages(&self) -> Vec<(String, String)> {
        self.c2s
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path().ends_with("/create_message"))
            .map(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                (
                    body["leadId"].as_str().unwrap().to_owned(),
                    body["body"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits until the event reaches a final state (done or dead) in `store` and returns it.
pub async fn wait_final(store: &DynStore, id: i64, deadline: Duration) -> EventRecord {
    wait_for(&format!("event {id} to finish"), deadline, || {
        let store = store.clone();
        async move {
            let event = store.event(id).await.ok()??;
            matches!(event.state.as_str(), "done" | "dead").then_some(event)
        }
    })
    .await
}

/// How many requests `server` received whose path `matches`.
pub async fn received(server: &MockServer, matches: impl Fn(&str) -> bool) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| matches(r.url.path()))
        .count()
}

/// Polls `check` until it returns `Some`, or panics after `deadline` naming what it waited for.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A C2S webhook event.
pub fn c2s_event(
    lead: &str,
    action: &str,
    updated_at: &str,
    phone: Option<&str>,
    email: Option<&str>,
) -> Value {
    serde_json::json!({
        "id": lead,
        "hook_action": action,
        "attributes": {
            "updated_at": updated_at,
            "customer": {"name": "Maria Aparecida Souza", "phone": phone, "email": email},
            "product": {"description": "Apartamento", "prop_ref": "AP-1", "price": "1.00"},
            "channel": "portal"
        }
    })
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).unwrap()
}

/// Runs a test body once per backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)($crate::helpers::Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::helpers::Backend::Sqlite).await
            }
        }
    };
}
