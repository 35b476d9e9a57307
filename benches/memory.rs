//! Memory-tier benchmark: `cargo bench --bench memory` (optimized build; about 30 s on 2 cores
//! with Postgres, most of it loading the people into the database).
//!
//! A plain `fn main` (no harness). RSS is read from `/proc/self/status`, so every figure is a
//! difference against a baseline measured in the same run, in the same process:
//!
//! 1. Each kind of entry alone, straight into a resolver's memory tier: 50 000 person entries,
//!    then one contact entry for each of them. RSS growth per entry against what the weigher
//!    counted for it (`/cache/stats`' figure), then RSS after dropping everything.
//! 2. The operator's path on Postgres: 50 000 enriched people (each with one phone that a
//!    lookup found) in a throwaway database, warmed into the real application as
//!    `POST /cache/warm?limit=50000` does; RSS before, after, at peak, and after `DELETE /cache`.
//!
//! The process uses the service's allocator, jemalloc with background purging (see `src/main.rs`), so what is measured here is
//! what the service does. Nothing here downloads or leaves the loopback.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::machine::{cpu_model, rss};
use enricher::config::{AppEnv, Settings};
use enricher::domain::{ContactKey, Cpf, Person, Phone};
use enricher::metrics::Metrics;
use enricher::providers::work_api::WorkApiAnswer;
use enricher::providers::{CpfCandidate, CpfLookup, PersonData, ProviderError};
use enricher::resolution::{Resolver, Ttls};
use enricher::startup::Application;
use enricher::store::{DynStore, SqliteStore};
use serde_json::Value;
use sqlx::Connection;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// People in each measurement.
const PEOPLE: usize = 50_000;
/// A budget every entry fits in, so nothing is evicted while measuring.
const ROOMY_BUDGET: u64 = 1 << 30;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary too, without
    // it, in a debug build where the figures would mean nothing. Say so and stop there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("memory: skipped outside `cargo bench`");
        return;
    }
    // As the service does at start (src/main.rs).
    tikv_jemalloc_ctl::background_thread::write(true).expect("jemalloc background threads");
    let started = Instant::now();
    println!("Enricher memory-tier benchmark (cargo bench --bench memory)");
    println!(
        "machine: {} cores, {}; rustc profile: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        if cfg!(debug_assertions) {
            "debug (figures meaningless)"
        } else {
            "optimized"
        }
    );
    let people = Synthetic::new();
    println!(
        "{PEOPLE} synthetic people from tests/fixtures/work_api_person.json (2 e-mails, 2 phones, \
         1 address, 1 company), serialized {} bytes each; built one at a time, so the process \
         holds no other copy of them",
        serde_json::to_vec(&people.person(0).1)
            .expect("serializes")
            .len()
    );

    per_kind(&people).await;

    match common::postgres::postgres_admin().await {
        Ok((admin_url, conn)) => warm_on_postgres(&people, admin_url, conn).await,
        Err(why) => println!("\n## 2. Warm on Postgres: skipped, {why}"),
    }

    println!(
        "\npeak RSS of the whole run (VmHWM): {:.1} MiB; total time {:.1} s",
        rss().0 as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Measuring helpers.

/// jemalloc's `dirty_decay_ms` default: how long its background threads take to hand back
/// pages freed at one moment.
const JEMALLOC_DECAY: Duration = Duration::from_secs(10);

/// RSS now, in bytes, once the allocator has handed freed pages back: jemalloc's background
/// threads purge dirty pages gradually over its decay time (10 s by default), so this waits
/// until RSS has not fallen for three seconds running (at most 25 s).
async fn settled_rss() -> u64 {
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut last = rss().1;
    let mut steady = 0;
    while steady < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let now = rss().1;
        steady = if now + 256 >= last { steady + 1 } else { 0 };
        last = last.min(now);
    }
    rss().1 * 1024
}

/// RSS after a large free (a cache drop): first the whole decay time, then as
/// [`settled_rss`]. The purge starts slowly and the background threads may sleep for a few
/// seconds first, so RSS can hold still for three seconds before it falls: read that early,
/// a drop that gave back 99 % once measured 1 %.
async fn released_rss() -> u64 {
    tokio::time::sleep(JEMALLOC_DECAY).await;
    settled_rss().await
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn per_entry_row(what: &str, entries: usize, rss_growth: u64, weighed: u64) {
    let rss_each = rss_growth as f64 / entries as f64;
    let weighed_each = weighed as f64 / entries as f64;
    println!(
        "| {what:<28} | {entries:>7} | {:>8.1} MiB | {rss_each:>7.0} B | {weighed_each:>7.0} B | {:>+6.1}% |",
        mib(rss_growth),
        (weighed_each / rss_each - 1.0) * 100.0
    );
}

// ---------------------------------------------------------------------------------------------
// Synthetic people.

/// People shaped like the fixture, each with its own CPF, name, e-mail and phone.
struct Synthetic {
    template: Person,
}

impl Synthetic {
    fn new() -> Synthetic {
        let raw: Value =
            serde_json::from_str(include_str!("../tests/fixtures/work_api_person.json"))
                .expect("fixture is JSON");
        let template = match WorkApiAnswer::parse(&raw).expect("fixture is a Work API answer") {
            WorkApiAnswer::Found(p) => p,
            WorkApiAnswer::NotFound => panic!("fixture is a found person"),
        };
        Synthetic { template }
    }

    /// Person `i`: CPF base `100000001 + i`. Not `100000000 + i`: `Cpf::from_base` turns
    /// 100000000 (zeros and one digit, a placeholder) into 100000001, which made persons 0 and
    /// 1 one person.
    fn person(&self, i: usize) -> (Cpf, Person, ContactKey) {
        let mut base = [0u8; 9];
        let mut x = i + 100_000_001;
        for d in base.iter_mut().rev() {
            *d = (x % 10) as u8;
            x /= 10;
        }
        let cpf = Cpf::from_base(base);
        let mut person = self.template.clone();
        person.cpf = cpf.clone();
        // Distinct strings per person, so nothing is shared by accident.
        person.name = Some(format!("PESSOA SINTETICA {i:06}"));
        person.emails[0].address = format!("pessoa{i}@example.com");
        let phone = Phone::parse(&format!("(11) 9{:08}", 10_000_000 + i)).expect("phone");
        (cpf, person, ContactKey::Phone(phone))
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Each kind of entry alone.

struct NoDiretrix;

#[async_trait]
impl CpfLookup for NoDiretrix {
    async fn lookup(&self, _key: &ContactKey) -> Result<Option<CpfCandidate>, ProviderError> {
        unreachable!("the benchmark only warms")
    }
}

struct NoWorkApi;

#[async_trait]
impl PersonData for NoWorkApi {
    async fn fetch(&self, _cpf: &Cpf) -> Result<(Value, WorkApiAnswer), ProviderError> {
        unreachable!("the benchmark only warms")
    }
}

async fn per_kind(people: &Synthetic) {
    println!(
        "\n## 1. Each kind of entry alone ({PEOPLE} of each, budget large enough to keep all)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("memory.db").display());
    let store: DynStore = Arc::new(SqliteStore::connect(&url, 2).await.expect("sqlite store"));
    let resolver = Resolver::new(
        store,
        Arc::new(NoDiretrix),
        Arc::new(NoWorkApi),
        Ttls {
            positive: Duration::from_secs(86_400),
            negative: Duration::from_secs(3_600),
            max_age: Duration::from_secs(180 * 86_400),
        },
        ROOMY_BUDGET,
        Arc::new(Metrics::new(0.0, 0.0)),
    );
    let baseline = settled_rss().await;

    resolver
        .warm((0..PEOPLE).map(|i| {
            let (cpf, person, _) = people.person(i);
            (cpf, person, Vec::new())
        }))
        .await;
    let (entries_p, weighed_p) = resolver.cache_usage().await;
    let with_persons = settled_rss().await;

    // Warming again with one key each replaces every person entry by one of the same size and
    // adds one contact entry per person: the growth is the contact entries'.
    resolver
        .warm((0..PEOPLE).map(|i| {
            let (cpf, person, key) = people.person(i);
            (cpf, person, vec![key])
        }))
        .await;
    let (entries_all, weighed_all) = resolver.cache_usage().await;
    let with_contacts = settled_rss().await;

    resolver.forget_all().await;
    let after_drop = released_rss().await;

    println!("baseline RSS (empty memory tier): {:.1} MiB", mib(baseline));
    println!(
        "| entries                      |   count |   RSS growth |  RSS/entry | weighed | weigher vs RSS |"
    );
    println!(
        "|------------------------------|--------:|-------------:|-----------:|--------:|-------:|"
    );
    per_entry_row(
        "person (CPF -> person)",
        entries_p as usize,
        with_persons.saturating_sub(baseline),
        weighed_p,
    );
    per_entry_row(
        "contact (phone -> CPF)",
        (entries_all - entries_p) as usize,
        with_contacts.saturating_sub(with_persons),
        weighed_all - weighed_p,
    );
    per_entry_row(
        "one person, both entries",
        PEOPLE,
        with_contacts.saturating_sub(baseline),
        weighed_all,
    );
    println!(
        "after forget_all (DELETE /cache): RSS {:.1} MiB, {:.1} MiB above the baseline \
         ({:.0}% of the growth given back)",
        mib(after_drop),
        mib(after_drop.saturating_sub(baseline)),
        100.0 * with_contacts.saturating_sub(after_drop) as f64
            / with_contacts.saturating_sub(baseline).max(1) as f64
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Warm on Postgres through the application.

async fn warm_on_postgres(people: &Synthetic, admin_url: String, mut conn: sqlx::PgConnection) {
    let name = format!("enricher_bench_{}", uuid::Uuid::new_v4().simple());
    let create = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let mut url = url::Url::parse(&admin_url).expect("checked above");
    url.set_path(&format!("/{name}"));
    // Plain owned data, so the task can run on its own and a panic still drops the database.
    let rows: Vec<(String, String, String)> = (0..PEOPLE)
        .map(|i| {
            let (cpf, person, key) = people.person(i);
            (
                cpf.as_str().to_owned(),
                serde_json::to_string(&person).expect("serializes"),
                key.value().to_owned(),
            )
        })
        .collect();
    let distinct: std::collections::HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        distinct.len(),
        PEOPLE,
        "every synthetic person has a CPF of their own"
    );
    drop(distinct);
    let outcome = tokio::spawn(warm_through_application(rows, url.to_string())).await;
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(&mut conn)
        .await
        .expect("DROP DATABASE");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn warm_through_application(rows: Vec<(String, String, String)>, url: String) {
    println!(
        "\n## 2. Warm on Postgres through the application ({PEOPLE} people, one lookup phone each)"
    );
    let budget = std::env::var("BENCH_MAX_BYTES").unwrap_or_else(|_| ROOMY_BUDGET.to_string());
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", url.clone()),
        ("PORT", "0".to_owned()),
        ("ENRICHER__METRICS__PORT", "0".to_owned()),
        ("ENRICHER__SERVER__HOST", "127.0.0.1".to_owned()),
        ("ENRICHER__SANDBOX__ENABLED", "true".to_owned()),
        ("ENRICHER__CACHE__MAX_BYTES", budget.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let settings = Settings::load_from(AppEnv::Development, &config, &vars).expect("settings");
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let state = app.state().clone();

    let loading = Instant::now();
    let mut pool = sqlx::PgConnection::connect(&url).await.expect("connects");
    let (cpfs, data, phones): (Vec<String>, Vec<String>, Vec<String>) =
        rows.into_iter()
            .fold(Default::default(), |mut acc, (c, d, p)| {
                acc.0.push(c);
                acc.1.push(d);
                acc.2.push(p);
                acc
            });
    sqlx::query(
        "WITH input AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS t(cpf, data, phone)
         ), parties AS (
            INSERT INTO core.parties (cpf) SELECT cpf FROM input RETURNING id, cpf
         ), enrichments AS (
            INSERT INTO core.party_enrichments (party_id, provider, raw, data)
            SELECT p.id, 'work_api', '{}'::jsonb, i.data::jsonb
              FROM parties p JOIN input i USING (cpf)
         )
         INSERT INTO core.party_contacts (party_id, kind, value, source)
         SELECT p.id, 'phone', i.phone, 'lookup' FROM parties p JOIN input i USING (cpf)",
    )
    .bind(&cpfs)
    .bind(&data)
    .bind(&phones)
    .execute(&mut pool)
    .await
    .expect("people loaded");
    drop((cpfs, data, phones));
    // What autovacuum would do to tables just loaded: without statistics the planner takes
    // them for empty and warming's per-page queries scan every row of them.
    sqlx::query("ANALYZE")
        .execute(&mut pool)
        .await
        .expect("ANALYZE");
    pool.close().await.expect("closes");
    println!(
        "loaded into Postgres in {:.1} s; memory budget {budget} bytes",
        loading.elapsed().as_secs_f64()
    );

    let before = settled_rss().await;
    let peak_before = rss().0 * 1024;
    let warming = Instant::now();
    let loaded = enricher::operators::cache::warm(&state, PEOPLE as u32)
        .await
        .expect("warms");
    let took = warming.elapsed();
    let (entries, weighed) = state.resolver.cache_usage().await;
    let after = settled_rss().await;
    let peak = rss().0 * 1024;
    state.resolver.forget_all().await;
    let dropped = released_rss().await;
    let (left, _) = state.resolver.cache_usage().await;
    println!("entries left after the drop: {left}");

    println!("| figure | value |");
    println!("|---|---:|");
    println!(
        "| people warmed | {loaded} in {:.2} s |",
        took.as_secs_f64()
    );
    println!("| entries in memory | {entries} |");
    println!("| RSS before warming (baseline) | {:.1} MiB |", mib(before));
    println!(
        "| RSS with {PEOPLE} people in memory | {:.1} MiB |",
        mib(after)
    );
    println!(
        "| RSS growth per person | {:.0} B |",
        after.saturating_sub(before) as f64 / loaded.max(1) as f64
    );
    println!(
        "| weigher per person (`/cache/stats` weighted / people) | {:.0} B |",
        weighed as f64 / loaded.max(1) as f64
    );
    println!(
        "| weigher vs RSS growth | {:+.1}% |",
        (weighed as f64 / after.saturating_sub(before).max(1) as f64 - 1.0) * 100.0
    );
    println!(
        "| peak RSS while warming (VmHWM) | {:.1} MiB (was {:.1} MiB before) |",
        mib(peak),
        mib(peak_before)
    );
    println!(
        "| RSS after `DELETE /cache` | {:.1} MiB ({:.0}% of the growth given back) |",
        mib(dropped),
        100.0 * after.saturating_sub(dropped) as f64 / after.saturating_sub(before).max(1) as f64
    );
    app.shutdown_token().cancel();
}
