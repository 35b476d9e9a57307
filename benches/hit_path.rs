//! Hit-path benchmark: `cargo bench --bench hit_path`. Needs Postgres on the loopback
//! (`TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`); it creates and
//! drops a database of its own.
//!
//! Quick by default (20 000 parties, 1 000 webhooks per figure: about a minute after the
//! build); the full run of BENCHMARKS.md is
//! `BENCH_PARTIES=1000000 BENCH_HITS=5000 cargo bench --bench hit_path`.
//!
//! 1. **Decode cost of a packed person**: what a memory hit pays to turn the cached compact
//!    JSON back into a `Person`, against cloning the cached handle (the baseline) and cloning a
//!    `Person` struct (what a cache of structs would pay).
//! 2. **Data set**: `BENCH_PARTIES` parties with synthetic valid CPFs, 2.6 contacts each (a
//!    phone a lookup found, the same phone listed in the person data, and for 60 % of them an
//!    e-mail a lookup found) with the one-person candidate list of each lookup, and one
//!    enrichment each, written by `generate_series` in SQL after the migrations; then
//!    `ANALYZE`, and the plans of the hit-path queries (`EXPLAIN ANALYZE`).
//! 3. **Hit path end to end**: webhook sent → message received by the sandbox CRM (sandbox
//!    latency 0), at `BENCH_RATE` webhooks/s (500) from an open-loop generator on a thread and
//!    runtime of its own: p50/p95/p99/max for memory hits (the parties resolved into memory
//!    first) and for database hits (parties never read before, memory empty for them). Each
//!    webhook carries one phone, so each event is one contact lookup and one person lookup.
//!    The figures come for the service as configured by default ("after") and with the
//!    settings of the previous release ("before"), in alternating rounds of the same run.
//!    `BENCH_SETTINGS="KEY=VALUE ..."` adds settings to both, to try one.
//!    After each figure, the service's own step histograms (`enricher_event_stage_seconds`,
//!    `enricher_delivery_latency_seconds`) give the mean per step and the share over 5 ms.
//! 4. **The floor**, in each round beside the service: the least any service with the same
//!    promises does per webhook, on the same database, runtime, generator and sandbox CRM.
//!    It answers 202 once the event's insert committed, commits a sending mark, then posts a
//!    message: two waited-for commits and three HTTP exchanges, no claim, no lookup, no end
//!    state. Its latencies are the part of the service's that no change to the service's own
//!    steps can remove on this machine.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::machine::{cpu_model, load_average};
use common::stats::{Stats, human, row};
use enricher::config::{AppEnv, Settings};
use enricher::domain::{ContactKey, Cpf, Person, Phone};
use enricher::metrics::{LookupKind, Stage};
use enricher::providers::sandbox::Sandbox;
use enricher::resolution::packed::PackedPerson;
use enricher::startup::Application;
use enricher::state::AppState;
use enricher::store::Lookup;
use serde_json::Value;
use sqlx::Connection;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Memory-hit and database-hit latencies (ms) of one configuration.
type Latencies = (Vec<f64>, Vec<f64>);

/// Before/after rounds unless `BENCH_ROUNDS` says; each round measures every configuration
/// once, in turn.
const ROUNDS: usize = 2;
/// Webhooks sent before each configuration's figures, not measured (connections, caches).
const WARMUP: usize = 50;
/// How long the last message of a phase may take to arrive.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// The configurations compared: name and the settings that make it.
const CONFIGS: [(&str, &[(&str, &str)]); 2] = [
    (
        "before",
        &[
            ("ENRICHER__SERVER__GROUP_COMMIT_WAIT_US", "1000"),
            ("ENRICHER__DATABASE__ASYNC_COMMIT_STEPS", "false"),
        ],
    ),
    ("after", &[]),
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// What one invocation does, from the environment.
#[derive(Clone)]
struct Options {
    parties: usize,
    hits: usize,
    rate: usize,
    rounds: usize,
    /// `BENCH_CONFIGS=defaults`: only the defaults ("after"), for comparing two builds.
    only_defaults: bool,
    /// `BENCH_SKIP`: parties of the scattered order to leave alone first, so that several
    /// invocations on one database each take parties nobody read before.
    skip: usize,
    /// `BENCH_SAMPLES_OUT`: a file to append every latency to, one line each:
    /// `label kind e2e_ns ack_ns`, for `benches/hit_path_ab.py`.
    samples_out: Option<String>,
    /// `BENCH_LABEL`: the label of this build's figures in that file.
    label: String,
}

impl Options {
    fn configs(&self) -> &'static [(&'static str, &'static [(&'static str, &'static str)])] {
        if self.only_defaults {
            &CONFIGS[1..]
        } else {
            &CONFIGS
        }
    }
}

fn main() {
    // `cargo test --all-targets` runs this binary too, without --bench, in a debug build
    // where the figures would mean nothing.
    if !std::env::args().any(|a| a == "--bench") {
        println!("hit_path: skipped outside `cargo bench`");
        return;
    }
    let options = Options {
        parties: env_usize("BENCH_PARTIES", 20_000),
        hits: env_usize("BENCH_HITS", 1_000),
        rate: env_usize("BENCH_RATE", 500),
        rounds: env_usize("BENCH_ROUNDS", ROUNDS),
        only_defaults: std::env::var("BENCH_CONFIGS").is_ok_and(|v| v == "defaults"),
        skip: env_usize("BENCH_SKIP", 0),
        samples_out: std::env::var("BENCH_SAMPLES_OUT").ok(),
        label: std::env::var("BENCH_LABEL").unwrap_or_else(|_| "this build".to_owned()),
    };
    let needed =
        options.skip + options.rounds * options.configs().len() * (2 * options.hits + WARMUP);
    assert!(
        options.parties >= needed,
        "BENCH_PARTIES={} is too few for these figures: at least {needed}",
        options.parties
    );
    println!("Enricher hit-path benchmark (cargo bench --bench hit_path)");
    println!(
        "machine: {} cores, {}; {}; load average at start {:.2}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        if cfg!(debug_assertions) {
            "debug build (figures meaningless)"
        } else {
            "optimized build"
        },
        load_average()
    );

    if std::env::var("BENCH_DATABASE_URL").is_err() {
        decode_cost();
    }

    // The service's runtime as `main.rs` builds it: one worker thread per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // `BENCH_DATABASE_URL`: a database of the caller's, kept afterwards, generated only
        // if it does not hold the data set yet (`benches/hit_path_ab.py` runs two builds on
        // one).
        if let Ok(url) = std::env::var("BENCH_DATABASE_URL") {
            tokio::spawn(end_to_end(url, options))
                .await
                .expect("benchmark");
            return;
        }
        match common::postgres::postgres_admin().await {
            Ok((admin_url, mut admin)) => {
                common::postgres::with_throwaway_database(&admin_url, &mut admin, move |url| {
                    end_to_end(url, options)
                })
                .await;
            }
            Err(why) => println!("\n## 2-3. Hit path (Postgres): skipped, {why}"),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 1. Decode cost of a packed person.

fn fixture_person() -> Person {
    // The person `tests/fixtures/work_api_person.json` reads into.
    Person::sample()
}

fn decode_cost() {
    println!("\n## 1. Decode cost of a packed person (per memory hit)");
    let person = fixture_person();
    let packed = PackedPerson::pack(&person);
    println!(
        "  the fixture person packed: {} bytes of compact JSON",
        packed.len()
    );
    type Op<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let ops: [Op<'_>; 3] = [
        (
            "clone the cached handle (Arc, baseline)",
            Box::new(|| {
                std::hint::black_box(packed.clone());
            }),
        ),
        (
            "unpack: compact JSON -> Person",
            Box::new(|| {
                std::hint::black_box(packed.unpack().expect("unpacks"));
            }),
        ),
        (
            "clone a Person struct (a cache of structs)",
            Box::new(|| {
                std::hint::black_box(person.clone());
            }),
        ),
    ];
    // Interleaved samples of 1 000 operations each, so noise hits all three alike.
    const SAMPLES: usize = 300;
    const PER_SAMPLE: usize = 1_000;
    let mut times = vec![Vec::with_capacity(SAMPLES); ops.len()];
    for (_, op) in &ops {
        for _ in 0..PER_SAMPLE {
            op();
        }
    }
    for _ in 0..SAMPLES {
        for (i, (_, op)) in ops.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..PER_SAMPLE {
                op();
            }
            times[i].push(start.elapsed().as_nanos() as f64 / PER_SAMPLE as f64);
        }
    }
    let stats: Vec<Stats> = times.into_iter().map(Stats::of).collect();
    for (i, ((name, _), s)) in ops.iter().zip(&stats).enumerate() {
        row(name, *s, (i > 0).then(|| s.median / stats[0].median));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The data set.

/// The CPF of party `i` (from 1): nine digits `100000000 + i` and their check digits. The same
/// computation in SQL below, checked against `Cpf::from_base` for a few parties.
fn cpf_of(i: usize) -> Cpf {
    let mut base = [0u8; 9];
    let mut x = 100_000_000 + i;
    for d in base.iter_mut().rev() {
        *d = (x % 10) as u8;
        x /= 10;
    }
    Cpf::from_base(base)
}

/// The phone a lookup found for party `i`, as a sender writes it.
fn phone_of(i: usize) -> String {
    format!("(11) 9{:08}", 10_000_000 + i)
}

const CPF_FUNCTION: &str = "
CREATE FUNCTION bench_cpf(n bigint) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE b text := lpad(n::text, 9, '0'); s1 int := 0; s2 int := 0; d1 int; d2 int;
BEGIN
  FOR i IN 1..9 LOOP
    s1 := s1 + substr(b, i, 1)::int * (11 - i);
    s2 := s2 + substr(b, i, 1)::int * (12 - i);
  END LOOP;
  d1 := s1 % 11; d1 := CASE WHEN d1 < 2 THEN 0 ELSE 11 - d1 END;
  s2 := s2 + d1 * 2;
  d2 := s2 % 11; d2 := CASE WHEN d2 < 2 THEN 0 ELSE 11 - d2 END;
  RETURN b || d1 || d2;
END $$";

/// Writes the data set; returns the time it took.
async fn generate(url: &str, parties: usize) -> Duration {
    let started = Instant::now();
    // The schema first, as the service would apply it: the application built later finds
    // every migration applied.
    let pool = sqlx::PgPool::connect(url).await.expect("connects");
    sqlx::migrate!("migrations/postgres")
        .run(&pool)
        .await
        .expect("migrates");
    pool.close().await;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connects");
    // Loading only: nothing is lost if this session's commits are flushed a little later.
    for sql in [
        "SET synchronous_commit = off",
        "SET maintenance_work_mem = '256MB'",
        CPF_FUNCTION,
    ] {
        sqlx::query(sql).execute(&mut conn).await.expect("setup");
    }
    for i in [1, 7, parties / 2, parties] {
        let sql: String = sqlx::query_scalar("SELECT bench_cpf(100000000 + $1)")
            .bind(i as i64)
            .fetch_one(&mut conn)
            .await
            .expect("cpf");
        assert_eq!(
            sql,
            cpf_of(i).as_str(),
            "SQL and Rust agree on party {i}'s CPF"
        );
    }
    let phone = Phone::parse(&phone_of(1)).expect("phone");
    let key = ContactKey::Phone(phone);
    assert_eq!(key.value(), "+5511910000001", "stored form of a phone");

    let mut template = fixture_person();
    template.name = Some("__NAME__".to_owned());
    // The CPF is a typed value: swap its serialized form for the placeholder.
    let data = serde_json::to_string(&template)
        .expect("serializes")
        .replace(&format!("\"{}\"", template.cpf.as_str()), "\"__CPF__\"");
    let statements: [(&str, &str); 7] = [
        (
            "parties",
            "INSERT INTO core.parties (id, cpf, name)
             SELECT i, bench_cpf(100000000 + i), 'PESSOA SINTETICA ' || i
               FROM generate_series(1, $1::bigint) i",
        ),
        (
            "enrichments",
            "INSERT INTO core.party_enrichments (party_id, provider, raw, data)
             SELECT id, 'work_api', '{}'::jsonb,
                    replace(replace($2, '__CPF__', cpf), '__NAME__', name)::jsonb
               FROM core.parties WHERE $1::bigint > 0",
        ),
        (
            "contacts: phones a lookup found",
            "INSERT INTO core.party_contacts (party_id, kind, value, source)
             SELECT id, 'phone', '+55119' || (10000000 + id), 'lookup'
               FROM core.parties WHERE $1::bigint > 0",
        ),
        (
            "contacts: phones in the person data",
            "INSERT INTO core.party_contacts (party_id, kind, value, source)
             SELECT id, 'phone', '+55119' || (10000000 + id), 'person'
               FROM core.parties WHERE $1::bigint > 0",
        ),
        (
            "contacts: e-mails a lookup found (60 %)",
            "INSERT INTO core.party_contacts (party_id, kind, value, source)
             SELECT id, 'email', 'pessoa' || id || '@example.com', 'lookup'
               FROM core.parties WHERE id % 10 < 6 AND $1::bigint > 0",
        ),
        (
            "candidate lists: phones (one person each)",
            "INSERT INTO core.contact_candidates (kind, value, position, cpf, name, created_at)
             SELECT 'phone', '+55119' || (10000000 + id), 0, cpf, name, now()
               FROM core.parties WHERE $1::bigint > 0",
        ),
        (
            "candidate lists: e-mails (one person each)",
            "INSERT INTO core.contact_candidates (kind, value, position, cpf, name, created_at)
             SELECT 'email', 'pessoa' || id || '@example.com', 0, cpf, name, now()
               FROM core.parties WHERE id % 10 < 6 AND $1::bigint > 0",
        ),
    ];
    for (what, sql) in statements {
        let t = Instant::now();
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(parties as i64);
        // Postgres refuses a parameter the statement does not use.
        let q = if sql.contains("$2") { q.bind(&data) } else { q };
        q.execute(&mut conn).await.expect("generates");
        println!("  {what}: {:.1} s", t.elapsed().as_secs_f64());
    }
    sqlx::query("SELECT setval('core.parties_id_seq', (SELECT max(id) FROM core.parties))")
        .execute(&mut conn)
        .await
        .expect("setval");
    let t = Instant::now();
    sqlx::query("VACUUM ANALYZE")
        .execute(&mut conn)
        .await
        .expect("VACUUM ANALYZE");
    println!("  VACUUM ANALYZE: {:.1} s", t.elapsed().as_secs_f64());
    // The load's dirty pages written out now, not by a checkpoint in the middle of a figure.
    let t = Instant::now();
    sqlx::query("CHECKPOINT")
        .execute(&mut conn)
        .await
        .expect("CHECKPOINT");
    println!("  CHECKPOINT: {:.1} s", t.elapsed().as_secs_f64());
    let (p, c, e): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM core.parties), (SELECT count(*) FROM core.party_contacts),
                (SELECT count(*) FROM core.party_enrichments)",
    )
    .fetch_one(&mut conn)
    .await
    .expect("counts");
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_database_size(current_database()))")
            .fetch_one(&mut conn)
            .await
            .expect("size");
    println!("  loaded: {p} parties, {c} contacts, {e} enrichments; database {size}");
    started.elapsed()
}

/// The plans of the two queries a database hit runs (the store's `find_contact` and
/// `find_person`), for a party in the middle of the table.
async fn plans(url: &str, parties: usize) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connects");
    let i = parties / 2 + 1;
    let phone = format!("+55119{}", 10_000_000 + i);
    let cpf = cpf_of(i);
    let queries: [(&str, String, &str); 3] = [
        (
            "contact -> candidates (find_candidates, the hit path's contact query)",
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
             SELECT cpf, cnpj, name FROM core.contact_candidates
              WHERE kind = $1 AND value = $2 ORDER BY position"
                .to_owned(),
            "phone",
        ),
        (
            "contact -> CPF (find_contact: lookup index, warming, lists from before candidates)",
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
             SELECT p.cpf FROM core.party_contacts c JOIN core.parties p ON p.id = c.party_id
              WHERE c.kind = $1 AND c.value = $2 AND c.source = 'lookup'
              ORDER BY c.created_at DESC, c.id DESC LIMIT 1"
                .to_owned(),
            "phone",
        ),
        (
            "CPF -> person (find_person)",
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
             SELECT e.data, e.fetched_at FROM core.party_enrichments e
               JOIN core.parties p ON p.id = e.party_id
              WHERE p.cpf = $1 AND e.fetched_at >= now() - interval '30 days'
              ORDER BY e.fetched_at DESC, e.id DESC LIMIT 1"
                .to_owned(),
            "",
        ),
    ];
    for (name, sql, kind) in queries {
        let q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        let q = if kind.is_empty() {
            q.bind(cpf.as_str().to_owned())
        } else {
            q.bind(kind.to_owned()).bind(phone.clone())
        };
        let lines: Vec<String> = q.fetch_all(&mut conn).await.expect("EXPLAIN");
        println!("plan, {name}:");
        for l in lines {
            println!("    {l}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. End to end.

/// Parties in a scattered order, so that database hits land all over the tables.
fn scattered(parties: usize) -> impl Iterator<Item = usize> {
    // A multiplier coprime with the count visits every party once.
    let step = (0.618_034 * parties as f64) as usize | 1;
    let step = (step..)
        .find(|s| gcd(*s, parties) == 1)
        .expect("a coprime step");
    (0..parties).map(move |k| (k * step) % parties + 1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The parties of a database generated before, if it holds the data set's tables.
async fn loaded(url: &str) -> Option<i64> {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connects");
    sqlx::query_scalar("SELECT count(*) FROM core.parties")
        .fetch_one(&mut conn)
        .await
        .ok()
}

async fn end_to_end(url: String, options: Options) {
    let Options {
        parties,
        hits,
        rate,
        rounds,
        ..
    } = options.clone();
    let configs = options.configs();
    println!(
        "\n## 2. Data set: {parties} parties, {} contacts, {parties} enrichments",
        parties * 26 / 10
    );
    if loaded(&url).await == Some(parties as i64) {
        println!("  already loaded in this database");
    } else {
        let took = generate(&url, parties).await;
        println!("  generated in {:.1} s", took.as_secs_f64());
    }
    plans(&url, parties).await;

    println!(
        "\n## 3. Hit path end to end (webhook sent -> message at the sandbox CRM, latency 0), \
         {rate} webhooks/s, {hits} per figure, {rounds} rounds"
    );
    for (name, vars) in configs {
        let shown: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "  {name}: {}",
            if shown.is_empty() {
                "the defaults".to_owned()
            } else {
                shown.join(" ")
            }
        );
    }
    {
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connects");
        if !autovacuum_on(&mut conn).await {
            println!(
                "  autovacuum is off on this server: the inbox is vacuumed before each figure, \
                 as autovacuum would between them"
            );
        }
    }
    let mut order = scattered(parties).skip(options.skip);
    let mut figures: HashMap<(usize, &str), Latencies> = HashMap::new();
    let mut floor_figures: Latencies = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (name, vars) in configs {
            let warm: Vec<usize> = order.by_ref().take(WARMUP).collect();
            let memory: Vec<usize> = order.by_ref().take(hits).collect();
            let database: Vec<usize> = order.by_ref().take(hits).collect();
            let load = load_average();
            let (mem, db) =
                one_configuration(&url, vars, rate, round, &warm, &memory, &database).await;
            println!(
                "  round {} {name:<7} memory hits p50 {:>8} p99 {:>8}; database hits p50 {:>8} p99 {:>8}  (load {load:.1})",
                round + 1,
                human(Stats::of(mem.0.clone()).median),
                human(Stats::of(mem.0.clone()).p99),
                human(Stats::of(db.0.clone()).median),
                human(Stats::of(db.0.clone()).p99),
            );
            if let Some(path) = &options.samples_out {
                append_samples(path, &options.label, name, &mem, &db);
            }
            for (kind, (e2e, ack)) in [(0, mem), (1, db)] {
                let entry = figures.entry((kind, name)).or_default();
                entry.0.extend(e2e);
                entry.1.extend(ack);
            }
        }
        // The floor reads no party: the numbers only name its leads, in a table of its own.
        let leads: Vec<usize> = (0..hits).collect();
        let load = load_average();
        let (e2e, ack) = floor(&url, rate, round, &leads).await;
        println!(
            "  round {} floor   insert, mark, post   p50 {:>8} p99 {:>8}  (load {load:.1})",
            round + 1,
            human(Stats::of(e2e.clone()).median),
            human(Stats::of(e2e.clone()).p99),
        );
        floor_figures.0.extend(e2e);
        floor_figures.1.extend(ack);
    }
    println!("\nall rounds together (webhook sent -> message received):");
    let baseline = configs[0].0;
    for (kind, label) in [(0, "memory hits"), (1, "database hits")] {
        let before = Stats::of(figures[&(kind, baseline)].0.clone());
        for (name, _) in configs {
            let against = (*name != baseline).then_some(&before);
            figure_rows(
                &format!("{label}, {name}"),
                &figures[&(kind, *name)],
                against,
            );
        }
    }
    let floor = figure_rows("floor: insert, mark, post", &floor_figures, None);
    let memory = Stats::of(figures[&(0, "after")].0.clone());
    let database = Stats::of(figures[&(1, "after")].0.clone());
    println!(
        "\n(ratios above: p99 against the p99 of \"{baseline}\")\ntarget memory-hit p99 <= 5 ms: {} ({}); database-hit p99 <= 15 ms: {} ({})",
        if memory.p99 <= 5e6 {
            "reached"
        } else {
            "missed"
        },
        human(memory.p99),
        if database.p99 <= 15e6 {
            "reached"
        } else {
            "missed"
        },
        human(database.p99),
    );
    println!(
        "the floor's p99 ({}) is {:.0} % of the memory-hit p99",
        human(floor.p99),
        100.0 * floor.p99 / memory.p99
    );
}

/// Prints one figure's row (its p99 as a ratio of `against`'s, or as the baseline) and the
/// line under it (the worst, and the 202 alone); returns the figure's statistics.
fn figure_rows(label: &str, (e2e, ack): &Latencies, against: Option<&Stats>) -> Stats {
    let s = Stats::of(e2e.clone());
    row(label, s, against.map(|b| s.p99 / b.p99));
    let ack = Stats::of(ack.clone());
    println!(
        "  {:<44} max {:>9}; of which the 202: p50 {:>9} p99 {:>9}",
        "",
        human(s.max),
        human(ack.median),
        human(ack.p99)
    );
    s
}

/// What the floor's handlers share.
#[derive(Clone)]
struct Floor {
    pool: sqlx::PgPool,
    client: reqwest::Client,
    crm: url::Url,
}

/// The floor (figure 4): a webhook service reduced to what the service's promises need before
/// a message leaves, run beside it. Returns the end-to-end and the 202 latencies, in
/// nanoseconds, measured as [`send`] measures the service's.
async fn floor(url: &str, rate: usize, round: usize, leads: &[usize]) -> Latencies {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        // As the service's pool: no ping before handing out a connection in use a moment ago.
        .test_before_acquire(false)
        .connect(url)
        .await
        .expect("floor pool");
    // `IF EXISTS`: a run stopped midway leaves its table behind.
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS floor_inbox;
         CREATE TABLE floor_inbox (
           id bigserial PRIMARY KEY, lead text NOT NULL UNIQUE, payload jsonb NOT NULL,
           sending_at timestamptz)",
    )
    .execute(&pool)
    .await
    .expect("floor table");
    let stop = CancellationToken::new();
    let sandbox = Sandbox::start(Duration::ZERO, stop.clone())
        .await
        .expect("floor sandbox");
    let state = Floor {
        pool,
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client"),
        crm: sandbox.base_url("c2s"),
    };
    let app = axum::Router::new()
        .route("/api/v1/webhooks/c2s", axum::routing::post(floor_webhook))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("floor port");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let serving = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let latencies = send(&sandbox, &base, rate, round, leads).await;
    stop.cancel();
    serving.await.expect("floor server").expect("floor served");
    // A database of the caller's (`BENCH_DATABASE_URL`) keeps only the service's tables.
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connects");
    sqlx::query("DROP TABLE floor_inbox")
        .execute(&mut conn)
        .await
        .expect("floor table dropped");
    latencies
}

/// The floor's webhook: the insert, then the 202; after it, the sending mark, then the POST.
async fn floor_webhook(
    axum::extract::State(floor): axum::extract::State<Floor>,
    body: bytes::Bytes,
) -> axum::http::StatusCode {
    let event: Value = serde_json::from_slice(&body).expect("webhook JSON");
    let lead = event["id"].as_str().expect("lead id").to_owned();
    let id: i64 =
        sqlx::query_scalar("INSERT INTO floor_inbox (lead, payload) VALUES ($1, $2) RETURNING id")
            .bind(&lead)
            .bind(sqlx::types::Json(&event))
            .fetch_one(&floor.pool)
            .await
            .expect("floor insert");
    tokio::spawn(async move {
        sqlx::query("UPDATE floor_inbox SET sending_at = now() WHERE id = $1")
            .bind(id)
            .execute(&floor.pool)
            .await
            .expect("floor mark");
        let at = floor
            .crm
            .join(&format!("integration/leads/{lead}/create_message"))
            .expect("message URL");
        floor
            .client
            .post(at)
            .json(&serde_json::json!({ "body": "floor" }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("floor message");
    });
    axum::http::StatusCode::ACCEPTED
}

/// Appends one figure's latencies to `path`: `label config kind e2e_ns ack_ns` per line.
fn append_samples(path: &str, label: &str, config: &str, mem: &Latencies, db: &Latencies) {
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("samples file");
    for (kind, (e2e, ack)) in [("memory", mem), ("database", db)] {
        for (e, a) in e2e.iter().zip(ack) {
            writeln!(out, "{label}\t{config}\t{kind}\t{e:.0}\t{a:.0}").expect("writes");
        }
    }
}

/// Builds the application with `vars`, runs the warm-up, the memory-hit figure and the
/// database-hit figure, stops it. Returns (end-to-end ns, 202 ns) for each figure.
async fn one_configuration(
    url: &str,
    extra: &[(&str, &str)],
    rate: usize,
    round: usize,
    warm: &[usize],
    memory: &[usize],
    database: &[usize],
) -> ((Vec<f64>, Vec<f64>), (Vec<f64>, Vec<f64>)) {
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", url.to_owned()),
        ("PORT", "0".to_owned()),
        ("ENRICHER__METRICS__PORT", "0".to_owned()),
        ("ENRICHER__SERVER__HOST", "127.0.0.1".to_owned()),
        ("ENRICHER__SANDBOX__ENABLED", "true".to_owned()),
        ("ENRICHER__SANDBOX__LATENCY_MS", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    // `BENCH_SETTINGS="ENRICHER__A=1 ENRICHER__B=2"`: settings to try, over the configuration's.
    if let Ok(more) = std::env::var("BENCH_SETTINGS") {
        for pair in more.split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .expect("BENCH_SETTINGS holds KEY=VALUE pairs");
            vars.insert(k.to_owned(), v.to_owned());
        }
    }
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let settings = Settings::load_from(AppEnv::Development, &config, &vars).expect("settings");
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());

    let sandbox = state.sandbox.clone().expect("sandbox on");
    send(&sandbox, &base, rate, round, warm).await;
    vacuum_inbox(url).await;
    for &i in memory {
        let key = ContactKey::Phone(Phone::parse(&phone_of(i)).expect("phone"));
        let (found, _) = state.resolver.contact(&key).await.expect("contact");
        let Lookup::Found(cpf) = found else {
            panic!("party {i}'s phone is in the data set")
        };
        state.resolver.person(&cpf).await.expect("person");
    }
    let before_mem = counts(&state);
    let steps = Steps::read(&state);
    let mem = send(&sandbox, &base, rate, round, memory).await;
    let after_mem = counts(&state);
    let steps = Steps::read(&state).since(&steps, "memory hits");
    vacuum_inbox(url).await;
    let db = send(&sandbox, &base, rate, round, database).await;
    let after_db = counts(&state);
    Steps::read(&state).since(&steps, "database hits");
    // Each figure must have been what it says: every lookup a hit of its tier.
    assert_eq!(
        (after_mem.0 - before_mem.0, after_mem.1 - before_mem.1),
        (2 * memory.len() as u64, 0),
        "memory-hit figure: lookups (memory, database)"
    );
    assert_eq!(
        (after_db.0 - after_mem.0, after_db.1 - after_mem.1),
        (0, 2 * database.len() as u64),
        "database-hit figure: lookups (memory, database)"
    );
    shutdown.cancel();
    running
        .await
        .expect("application task")
        .expect("application stopped cleanly");
    (mem, db)
}

/// The service's own step histograms (`enricher_event_stage_seconds`, and
/// `enricher_delivery_latency_seconds` as "whole"): per step, events, seconds in all, and
/// events slower than 5 ms. A build without them reads as empty.
#[derive(Default)]
struct Steps(Vec<(String, [f64; 3])>);

impl Steps {
    fn read(state: &AppState) -> Steps {
        let text = state
            .metrics
            .render(&enricher::metrics::Snapshot::default());
        let mut steps = Steps::default();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let label = |key: &str| {
                labels
                    .split(',')
                    .find_map(|l| l.strip_prefix(&format!("{key}=\"")))
                    .map(|v| v.trim_end_matches(['"', '}']).to_owned())
            };
            let (step, part) =
                if let Some(part) = name.strip_prefix("enricher_event_stage_seconds_") {
                    (label("stage"), part)
                } else if let Some(part) = name.strip_prefix("enricher_delivery_latency_seconds_") {
                    (Some("whole".to_owned()), part)
                } else {
                    continue;
                };
            let Some(step) = step else { continue };
            let slot = match part {
                "count" => 0,
                "sum" => 1,
                "bucket" if label("le").as_deref() == Some("0.005") => {
                    // Over 5 ms: the count minus this bucket, settled below.
                    steps.entry(&step)[2] -= value;
                    continue;
                }
                _ => continue,
            };
            steps.entry(&step)[slot] += value;
            if slot == 0 {
                steps.entry(&step)[2] += value;
            }
        }
        steps
    }

    fn entry(&mut self, step: &str) -> &mut [f64; 3] {
        if let Some(i) = self.0.iter().position(|(s, _)| s == step) {
            return &mut self.0[i].1;
        }
        self.0.push((step.to_owned(), [0.0; 3]));
        &mut self.0.last_mut().expect("just pushed").1
    }

    /// Prints what happened since `before` (mean per event, share over 5 ms), per step;
    /// returns the current reading.
    fn since(self, before: &Steps, figure: &str) -> Steps {
        let order = Stage::ALL.map(Stage::as_str);
        let mut shown = Vec::new();
        for step in order.into_iter().chain(["whole"]) {
            let Some((_, now)) = self.0.iter().find(|(s, _)| s == step) else {
                continue;
            };
            let was = before
                .0
                .iter()
                .find(|(s, _)| s == step)
                .map_or([0.0; 3], |(_, v)| *v);
            let n = now[0] - was[0];
            if n > 0.0 {
                shown.push(format!(
                    "{step} {:.2} ms ({:.1} % > 5 ms)",
                    (now[1] - was[1]) / n * 1e3,
                    (now[2] - was[2]) / n * 100.0
                ));
            }
        }
        if !shown.is_empty() {
            println!("      {figure}, mean per step: {}", shown.join(", "));
        }
        self
    }
}

/// Where the server runs without autovacuum (CI machines often do), what it would have done
/// between two figures: without it, the inbox keeps every dead version of every claim and
/// finish, and each figure would measure the bloat left by the ones before it.
async fn vacuum_inbox(url: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connects");
    if !autovacuum_on(&mut conn).await {
        sqlx::query("VACUUM webhook_inbox")
            .execute(&mut conn)
            .await
            .expect("VACUUM");
    }
}

async fn autovacuum_on(conn: &mut sqlx::PgConnection) -> bool {
    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
        .fetch_one(conn)
        .await
        .expect("SHOW autovacuum");
    autovacuum == "on"
}

/// (memory hits, database hits) over both kinds of lookup, and no provider call at all.
fn counts(state: &AppState) -> (u64, u64) {
    let c = state.metrics.tier_counts(LookupKind::Contact);
    let p = state.metrics.tier_counts(LookupKind::Cpf);
    assert_eq!(
        c.provider_call + p.provider_call,
        0,
        "a hit path calls no provider"
    );
    (c.memory_hit + p.memory_hit, c.database_hit + p.database_hit)
}

/// Sends one webhook per party at `rate` per second from a thread and runtime of its own, then
/// waits until the sandbox CRM received each one's message. Returns the end-to-end and the 202
/// latencies, in nanoseconds.
async fn send(
    sandbox: &Sandbox,
    base: &str,
    rate: usize,
    round: usize,
    parties: &[usize],
) -> (Vec<f64>, Vec<f64>) {
    let template: Value = serde_json::from_str(include_str!("../examples/c2s_webhook_create.json"))
        .expect("example webhook is JSON");
    let bodies: Vec<(String, String)> = parties
        .iter()
        .map(|&i| {
            let lead = format!("hit{round}x{i:012}");
            let mut event = template.clone();
            event["id"] = Value::from(lead.clone());
            event["attributes"]["customer"]["phone"] = Value::from(phone_of(i));
            // One contact per event: a phone, so one contact and one person lookup.
            event["attributes"]["customer"]
                .as_object_mut()
                .expect("customer")
                .remove("email");
            (lead, serde_json::to_string(&event).expect("serializes"))
        })
        .collect();
    let url = format!("{base}/api/v1/webhooks/c2s");
    let n = bodies.len();
    let generator = std::thread::spawn(move || generate_load(url, rate, bodies));

    let mut received: HashMap<String, OffsetDateTime> = HashMap::with_capacity(n);
    let deadline = Instant::now() + DRAIN_DEADLINE;
    let mut sent: Option<Vec<(String, OffsetDateTime, f64)>> = None;
    let mut generator = Some(generator);
    loop {
        // The sandbox keeps its last 1 000 messages; at 500/s, 100 ms is 50 of them.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for m in sandbox.messages() {
            if m.lead_id.starts_with(&format!("hit{round}x")) {
                received.entry(m.lead_id).or_insert(m.received_at);
            }
        }
        if sent.is_none() && generator.as_ref().is_some_and(|g| g.is_finished()) {
            sent = Some(generator.take().expect("once").join().expect("generator"));
        }
        if let Some(sent) = &sent
            && sent.iter().all(|(lead, _, _)| received.contains_key(lead))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages arrived within {DRAIN_DEADLINE:?}",
            received.len()
        );
    }
    let sent = sent.expect("joined");
    let e2e = sent
        .iter()
        .map(|(lead, at, _)| (received[lead] - *at).whole_nanoseconds() as f64)
        .collect();
    let acks = sent.iter().map(|(_, _, ack)| *ack).collect();
    (e2e, acks)
}

/// The open-loop load generator: one request every 1/`rate` s whether or not the earlier ones
/// were answered. Returns, per request: its lead, when it was sent, how long its 202 took.
fn generate_load(
    url: String,
    rate: usize,
    bodies: Vec<(String, String)>,
) -> Vec<(String, OffsetDateTime, f64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("generator runtime");
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(64)
            .build()
            .expect("http client");
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        let url = Arc::new(url);
        for (lead, body) in bodies {
            tick.tick().await;
            let (client, url) = (client.clone(), url.clone());
            tasks.spawn(async move {
                let at = OffsetDateTime::now_utc();
                let start = Instant::now();
                let response = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("POST webhook");
                assert_eq!(response.status(), 202);
                response.bytes().await.expect("intake body");
                (lead, at, start.elapsed().as_nanos() as f64)
            });
        }
        let mut out = Vec::new();
        while let Some(done) = tasks.join_next().await {
            out.push(done.expect("request task"));
        }
        out
    })
}
