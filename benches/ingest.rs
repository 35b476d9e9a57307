//! Ingest benchmark: `cargo bench --bench ingest` (optimized build; the run takes about a
//! minute). Needs Postgres on the loopback (`TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); it creates and drops its own databases.
//!
//! Webhooks acknowledged per second on Postgres, 64 senders keeping one request each in
//! flight, workers idle (the application's router is served without its workers, so nothing
//! claims what intake stores). The figures, measured in interleaved rounds so that noise on
//! the shared machine hits all alike, each in a database of its own:
//!
//! - **floor**: the database's own per-request commit rate, 64 connections each committing
//!   single-row inserts into the inbox table in a loop (sqlx, no HTTP);
//! - **naive**: a handler in this file doing what a plain intake does: parse, then one
//!   INSERT + COMMIT per request, on a pool as large as the service's;
//! - **service, one commit per request**: the real intake with group commit turned off
//!   (`ENRICHER__SERVER__GROUP_COMMIT_MAX_EVENTS=0`), the behaviour before group commit;
//! - **service, group commit** with several settings (`SERVICE` below): batches in flight,
//!   the wait for more once a slot is free, the largest batch; the targets are judged on the
//!   one the service uses by default (`JUDGED`);
//! - **ceiling**: the naive handler answering without touching the database: HTTP, JSON and
//!   the load generator alone, the most any intake can ack on these cores.
//!
//! The load generator runs in this process, on the same cores as the service and Postgres.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::machine::cpu_model;
use enricher::config::{AppEnv, Settings};
use enricher::http::server::{ConnectionLimits, serve};
use enricher::startup::Application;
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

// The service's allocator (`main.rs`), so the service here allocates as it does in production.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Requests in flight at once (one per sender).
const SENDERS: usize = 64;
/// Rounds; each round measures every figure once, in turn.
const ROUNDS: usize = 3;
/// Unmeasured time at the start of each measurement (connections open, caches warm).
const WARMUP: Duration = Duration::from_millis(500);
/// Measured time per figure per round.
const MEASURE: Duration = Duration::from_secs(3);
/// The service's default pool size; the naive handler gets the same.
const POOL: u32 = 10;

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs this binary too, without --bench, in a debug build
    // where the figures would mean nothing.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest: skipped outside `cargo bench`");
        return;
    }
    let admin_url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let parsed = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
    assert!(
        matches!(
            parsed.host_str(),
            Some("127.0.0.1" | "localhost" | "::1" | "[::1]")
        ),
        "benchmarks stay on the loopback"
    );
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .expect("Postgres answers");
    let names: Vec<String> = (0..DATABASES)
        .map(|_| format!("enricher_bench_{}", uuid::Uuid::new_v4().simple()))
        .collect();
    for name in &names {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
    }
    let urls: Vec<String> = names
        .iter()
        .map(|n| {
            let mut u = parsed.clone();
            u.set_path(&format!("/{n}"));
            u.to_string()
        })
        .collect();
    // In its own task so that a panic still drops the databases.
    let outcome = tokio::spawn(run(urls)).await;
    for name in &names {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .expect("DROP DATABASE");
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

const FIGURES: [&str; 7] = [
    "floor: Postgres single-row commits, 64 clients",
    "naive handler: INSERT + COMMIT per request",
    "service, one commit per request",
    "service, group commit, 8 in flight, 1 ms wait",
    "service, group commit, 8 in flight, no wait",
    "service, group commit, 2 in flight, no wait",
    "ceiling: the naive handler without the database",
];

/// The group commit settings of each service figure, by figure index.
const SERVICE: [(usize, &[(&str, &str)]); 4] = [
    (2, &[("ENRICHER__SERVER__GROUP_COMMIT_MAX_EVENTS", "0")]),
    (
        3,
        &[
            ("ENRICHER__SERVER__GROUP_COMMIT_IN_FLIGHT", "8"),
            ("ENRICHER__SERVER__GROUP_COMMIT_WAIT_US", "1000"),
            ("ENRICHER__SERVER__GROUP_COMMIT_MAX_EVENTS", "1000"),
        ],
    ),
    (
        4,
        &[
            ("ENRICHER__SERVER__GROUP_COMMIT_IN_FLIGHT", "8"),
            ("ENRICHER__SERVER__GROUP_COMMIT_WAIT_US", "0"),
            ("ENRICHER__SERVER__GROUP_COMMIT_MAX_EVENTS", "1000"),
        ],
    ),
    (
        5,
        &[
            ("ENRICHER__SERVER__GROUP_COMMIT_IN_FLIGHT", "2"),
            ("ENRICHER__SERVER__GROUP_COMMIT_WAIT_US", "0"),
            ("ENRICHER__SERVER__GROUP_COMMIT_MAX_EVENTS", "1000"),
        ],
    ),
];
/// The figure the targets are judged on: the service as configured by default.
const JUDGED: usize = 5;
/// One database for the floor, one for the naive handler (and the ceiling), one per service
/// figure.
const DATABASES: usize = 2 + SERVICE.len();

async fn run(urls: Vec<String>) {
    println!("Enricher ingest benchmark (cargo bench --bench ingest)");
    println!(
        "machine: {} cores, {}; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        if cfg!(debug_assertions) {
            "debug build (figures meaningless)"
        } else {
            "optimized build"
        }
    );
    let mut server_version = PgConnection::connect(&urls[0]).await.expect("connects");
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut server_version)
        .await
        .expect("version");
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut server_version)
        .await
        .expect("synchronous_commit");
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut server_version)
        .await
        .expect("fsync");
    println!(
        "Postgres {version} on the loopback (fsync {fsync}, synchronous_commit {sync}); \
         {SENDERS} senders, {ROUNDS} rounds of {MEASURE:?} per figure after {WARMUP:?} warm-up\n"
    );
    // The two databases the service does not migrate itself.
    for url in &urls[..2] {
        let pool = PgPool::connect(url).await.expect("connects");
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .expect("migrates");
        pool.close().await;
    }

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); FIGURES.len()];
    for round in 0..ROUNDS {
        rates[0].push(floor(&urls[0], round).await);
        rates[1].push(naive(&urls[1], round, true).await);
        for (i, (figure, vars)) in SERVICE.iter().enumerate() {
            rates[*figure].push(service(&urls[2 + i], round, *figure, vars).await);
        }
        rates[FIGURES.len() - 1].push(naive(&urls[1], round, false).await);
        println!(
            "round {}: {}",
            round + 1,
            FIGURES
                .iter()
                .zip(&rates)
                .map(|(_, r)| format!("{:.0}/s", r[round]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let medians: Vec<f64> = rates.iter().map(|r| median(r.clone())).collect();
    println!(
        "\n| {:<48} | acks/s (median of {ROUNDS}) | vs naive | vs floor |",
        "what"
    );
    println!("|{:-<50}|{:-<26}|{:-<10}|{:-<10}|", "", "", "", "");
    for (name, m) in FIGURES.iter().zip(&medians) {
        println!(
            "| {name:<48} | {m:>24.0} | {:>7.2}x | {:>7.2}x |",
            m / medians[1],
            m / medians[0]
        );
    }
    let after = medians[JUDGED];
    println!("judged: {}", FIGURES[JUDGED]);
    println!(
        "\ntarget ingest >= 2x naive: {} ({:.2}x); ingest >= floor: {} ({:.2}x)",
        if after >= 2.0 * medians[1] {
            "reached"
        } else {
            "missed"
        },
        after / medians[1],
        if after >= medians[0] {
            "reached"
        } else {
            "missed"
        },
        after / medians[0],
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A lead id no other figure or round uses.
fn lead_id(figure: usize, round: usize, sender: usize, i: u64) -> String {
    format!("bench{figure}{round}{sender:02}{i:012}")
}

/// Runs `SENDERS` loops of `one` for the warm-up then the measured time; returns the measured
/// operations per second. `one` returns whether the operation succeeded as expected.
async fn drive<F, Fut>(one: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for sender in 0..SENDERS {
        let (one, measuring, stop, done) =
            (one.clone(), measuring.clone(), stop.clone(), done.clone());
        tasks.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert!(one(sender, i).await, "an operation failed");
                if measuring.load(Ordering::Relaxed) {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        });
    }
    tokio::time::sleep(WARMUP).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(MEASURE).await;
    let counted = done.load(Ordering::Relaxed);
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.expect("sender");
    }
    counted as f64 / took.as_secs_f64()
}

const INSERT: &str = "INSERT INTO webhook_inbox (source, lead_id, event_at, action, payload)
                      VALUES ('c2s', $1, $2, 'on_create_lead', $3)
                      ON CONFLICT (source, lead_id, event_at) DO NOTHING RETURNING id";

fn template() -> Value {
    serde_json::from_str(include_str!("../examples/c2s_webhook_create.json"))
        .expect("example webhook is JSON")
}

/// The database alone: single-row autocommitted inserts from 64 connections.
async fn floor(url: &str, round: usize) -> f64 {
    let pool = PgPoolOptions::new()
        .max_connections(SENDERS as u32)
        .min_connections(SENDERS as u32)
        // The database's own rate: no ping round trip before each insert (sqlx's default),
        // which the service does not pay either.
        .test_before_acquire(false)
        .connect(url)
        .await
        .expect("connects");
    let payload = Arc::new(template());
    let at = time::OffsetDateTime::now_utc();
    let rate = drive({
        let pool = pool.clone();
        move |sender, i| {
            let (pool, payload) = (pool.clone(), payload.clone());
            async move {
                let id: Option<i64> = sqlx::query_scalar(INSERT)
                    .bind(lead_id(0, round, sender, i))
                    .bind(at)
                    .bind(&*payload)
                    .fetch_optional(&pool)
                    .await
                    .expect("insert");
                id.is_some()
            }
        }
    })
    .await;
    pool.close().await;
    rate
}

/// A client posting webhooks to `url`, each with a lead id of its own.
fn poster(
    url: String,
    figure: usize,
    round: usize,
) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
+ Clone
+ Send
+ 'static {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(SENDERS)
        .build()
        .expect("http client");
    let body = Arc::new(serde_json::to_string(&template()).expect("serializes"));
    move |sender, i| {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        Box::pin(async move {
            let body = body.replacen(
                "a1b2c3d4e5f60718293a4b5c",
                &lead_id(figure, round, sender, i),
                1,
            );
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("POST");
            if response.status() != StatusCode::ACCEPTED {
                return false;
            }
            let text = response.text().await.expect("body");
            text.contains("\"accepted\"")
        })
    }
}

/// The naive intake: parse, then BEGIN, INSERT, COMMIT for each request; without `store`, the
/// same minus the database: what HTTP, parsing and the load generator cost on these cores.
async fn naive(url: &str, round: usize, store: bool) -> f64 {
    let pool = PgPoolOptions::new()
        .max_connections(POOL)
        .connect(url)
        .await
        .expect("connects");
    async fn hook(
        State((pool, store)): State<(PgPool, bool)>,
        body: Bytes,
    ) -> (StatusCode, String) {
        let Ok(event) = serde_json::from_slice::<Value>(&body) else {
            return (StatusCode::BAD_REQUEST, String::new());
        };
        let (Some(id), Some(at)) = (
            event["id"].as_str(),
            event["attributes"]["updated_at"].as_str().and_then(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            }),
        ) else {
            return (StatusCode::UNPROCESSABLE_ENTITY, String::new());
        };
        let stored: Result<Option<i64>, sqlx::Error> = async {
            if !store {
                return Ok(Some(0));
            }
            let mut tx = pool.begin().await?;
            let row = sqlx::query_scalar(INSERT)
                .bind(id)
                .bind(at)
                .bind(&event)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(row)
        }
        .await;
        match stored {
            Ok(row) => (
                StatusCode::ACCEPTED,
                serde_json::json!({"events": [{
                    "lead_id": id,
                    "status": if row.is_some() { "accepted" } else { "duplicate" },
                    "event_id": row,
                }]})
                .to_string(),
            ),
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
        }
    }
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state((pool, store));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    let serving = tokio::spawn(serve(listener, app, limits(), stop.clone()));
    let figure = if store { 1 } else { FIGURES.len() - 1 };
    let rate = drive(poster(format!("http://{addr}/hook"), figure, round)).await;
    stop.cancel();
    serving.await.expect("server task").expect("server");
    rate
}

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        grace: Duration::from_secs(5),
        max_header_bytes: 16 * 1024,
    }
}

/// The real intake (router, layers, validation, store), served without the workers.
async fn service(url: &str, round: usize, figure: usize, settings: &[(&str, &str)]) -> f64 {
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", url.to_owned()),
        ("PORT", "0".to_owned()),
        ("ENRICHER__METRICS__PORT", "0".to_owned()),
        ("ENRICHER__SERVER__HOST", "127.0.0.1".to_owned()),
        ("ENRICHER__SANDBOX__ENABLED", "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in settings {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let settings = Settings::load_from(AppEnv::Development, &config, &vars).expect("settings");
    let app = Application::build(settings)
        .await
        .expect("application builds");
    // Serve the router only: without `run_until_stopped` no worker claims anything, so the
    // database does intake's work alone.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    let serving = tokio::spawn(serve(
        listener,
        enricher::http::router(app.state().clone()),
        limits(),
        stop.clone(),
    ));
    let rate = drive(poster(
        format!("http://{addr}/api/v1/webhooks/c2s"),
        figure,
        round,
    ))
    .await;
    stop.cancel();
    serving.await.expect("server task").expect("server");
    drop(app);
    rate
}
