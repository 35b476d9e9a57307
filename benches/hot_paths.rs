//! Hot-path benchmarks: `cargo bench --bench hot_paths` (optimized build; the run itself takes
//! about 10 s on 2 cores).
//!
//! A plain `fn main` (no harness, no criterion). The machine these run on is shared and noisy,
//! so every figure is printed next to a baseline measured in the same run, and samples of a
//! figure and of its baseline are interleaved so that a burst of noise hits both alike:
//!
//! 1. `Phone::parse` over ten ways of writing Brazilian numbers, against stripping non-digits
//!    (what the old service did).
//! 2. Resolution (`contact` then `person`) through the three tiers over SQLite, with
//!    in-process providers that answer at once: memory hit (the baseline), database hit, and
//!    the provider path (our own bookkeeping: store writes and cache insert); with the parts
//!    of the memory tier and the floor of one sqlx statement on the same file for context.
//! 3. The real application on loopback: POSTs of C2S webhooks against `GET /health` (the
//!    HTTP stack alone), then the time until every event is done through the sandbox
//!    providers; on SQLite, and on Postgres when one listens on the loopback.
//!
//! Nothing here downloads or leaves the loopback. See BENCHMARKS.md for the latest figures.

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::machine::{cpu_model, rss};
use common::stats::{Stats, human, row};
use enricher::config::{AppEnv, DatabaseSettings, Settings};
use enricher::domain::{ContactKey, Cpf, Person, Phone};
use enricher::metrics::{LookupKind, LookupResult, Metrics};
use enricher::providers::work_api::WorkApiAnswer;
use enricher::providers::{CpfCandidate, CpfLookup, PersonData, ProviderError};
use enricher::resolution::{Resolver, Tier, Ttls};
use enricher::startup::Application;
use enricher::store::{DynStore, Lookup, SqliteStore};
use phonenumber::Mode;
use phonenumber::country::Id::BR;
use serde_json::Value;
use tokio::sync::Semaphore;

/// Samples per phone benchmark; each sample runs the ten formats enough times to last
/// at least [`MIN_SAMPLE`].
const PHONE_SAMPLES: usize = 300;
const MIN_SAMPLE: Duration = Duration::from_micros(200);
/// Resolution: keys measured per tier, after [`RESOLVE_WARMUP`] unmeasured ones.
const RESOLVE_KEYS: usize = 2_000;
const RESOLVE_WARMUP: usize = 100;
/// How far the database and memory measurements trail the provider one (in keys), so a key
/// is read back after other work, not straight after it was written.
const RESOLVE_LAG: usize = 50;
/// Intake: requests per figure, and how many are in flight at once.
const INTAKE_REQUESTS: usize = 500;
const INTAKE_CONCURRENCY: usize = 16;
/// Events processed before measuring, so the application starts measured work warm.
const INTAKE_WARMUP: usize = 16;
/// Give up waiting for the workers after this long.
const DRAIN_DEADLINE: Duration = Duration::from_secs(90);

/// Ten ways people write Brazilian numbers (all valid, so the old code and the new agree on
/// what to do with them).
const PHONE_FORMATS: [&str; 10] = [
    "(11) 98765-4321",
    "+55 11 98765 4321",
    "011 98765-4321",
    "5511987654321",
    "11987654321",
    "0xx11 98765-4321",
    "0 21 11 98765-4321",
    "+55 (11) 9.8765-4321",
    "11 8765-4321",
    "(11) 3800-1234",
];

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary too, without
    // it, in a debug build where the figures would mean nothing. Say so and stop there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("hot_paths: skipped outside `cargo bench`");
        return;
    }
    let started = Instant::now();
    println!("Enricher hot-path benchmarks (cargo bench --bench hot_paths)");
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

    phone_normalization();
    memory("after phone normalization");

    resolution_tiers().await;
    memory("after resolution tiers");

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("intake.db").display());
    intake("3", "SQLite", url).await;
    memory("after intake (SQLite)");

    match common::postgres::postgres_admin().await {
        Ok((admin_url, conn)) => {
            intake_postgres(admin_url, conn).await;
            memory("after intake (Postgres)");
        }
        Err(why) => println!("\n## 3b. Intake (Postgres): skipped, {why}"),
    }

    let (hwm, _) = rss();
    println!(
        "\npeak RSS of the whole run (VmHWM): {:.1} MiB; total time {:.1} s",
        hwm as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Measuring helpers.

/// A synchronous benchmark: `f` does `ops` operations per call.
struct SyncBench<'a> {
    name: &'a str,
    ops: usize,
    f: Box<dyn FnMut() + 'a>,
}

/// Runs each benchmark `samples` times, interleaved (one sample of each in turn), each sample
/// repeating `f` enough to last at least [`MIN_SAMPLE`]; returns ns per operation.
fn run_interleaved(benches: &mut [SyncBench<'_>], samples: usize) -> Vec<Stats> {
    // Calibration doubles the repetitions until a sample is long enough; it is also warm-up.
    let reps: Vec<usize> = benches
        .iter_mut()
        .map(|b| {
            let mut reps = 1;
            loop {
                let start = Instant::now();
                for _ in 0..reps {
                    (b.f)();
                }
                if start.elapsed() >= MIN_SAMPLE {
                    break reps;
                }
                reps *= 2;
            }
        })
        .collect();
    let mut times = vec![Vec::with_capacity(samples); benches.len()];
    for _ in 0..samples {
        for (i, b) in benches.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..reps[i] {
                (b.f)();
            }
            let ns = start.elapsed().as_nanos() as f64;
            times[i].push(ns / (reps[i] * b.ops) as f64);
        }
    }
    times.into_iter().map(Stats::of).collect()
}

/// Runs `f` and returns its output and how long it took, in nanoseconds.
async fn timed<F: Future>(f: F) -> (F::Output, f64) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed().as_nanos() as f64)
}

fn memory(when: &str) {
    let (hwm, now) = rss();
    println!(
        "  memory {when}: RSS {:.1} MiB, peak so far {:.1} MiB",
        now as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Phone normalization.

/// What the old service did: keep the digits, nothing else.
fn strip_non_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn phone_normalization() {
    println!(
        "\n## 1. Phone normalization ({} formats)",
        PHONE_FORMATS.len()
    );
    for s in PHONE_FORMATS {
        let phone = Phone::parse(s).unwrap_or_else(|e| panic!("{s:?} must parse: {e}"));
        assert!(phone.e164().starts_with("+55"));
    }
    let mut all = [
        strip_baseline(),
        SyncBench {
            name: "Phone::parse",
            ops: PHONE_FORMATS.len(),
            f: Box::new(|| {
                for s in PHONE_FORMATS {
                    let _ = black_box(Phone::parse(black_box(s)));
                }
            }),
        },
    ];
    println!("per operation, mean over the formats within a sample:");
    report(&mut all, PHONE_SAMPLES);

    // Which formats cost what.
    let mut each = vec![strip_baseline()];
    each.extend(PHONE_FORMATS.iter().map(|&s| SyncBench {
        name: s,
        ops: 1,
        f: Box::new(move || {
            let _ = black_box(Phone::parse(black_box(s)));
        }),
    }));
    println!("Phone::parse per format:");
    report(&mut each, PHONE_SAMPLES / 3);

    // Where the time goes: the libphonenumber steps `Phone::parse` runs for one mobile
    // (`validate` in src/domain/phone.rs), each alone.
    let number = phonenumber::parse(Some(BR), "+5511987654321").expect("valid number");
    let mut steps = [
        strip_baseline(),
        SyncBench {
            name: "phonenumber::parse(BR, \"+55...\")",
            ops: 1,
            f: Box::new(|| {
                let _ = black_box(phonenumber::parse(Some(BR), black_box("+5511987654321")));
            }),
        },
        SyncBench {
            name: "phonenumber::is_valid",
            ops: 1,
            f: Box::new(|| {
                black_box(phonenumber::is_valid(black_box(&number)));
            }),
        },
        SyncBench {
            name: "PhoneNumber::number_type",
            ops: 1,
            f: Box::new(|| {
                black_box(black_box(&number).number_type(&phonenumber::metadata::DATABASE));
            }),
        },
        SyncBench {
            name: "format E.164",
            ops: 1,
            f: Box::new(|| {
                black_box(black_box(&number).format().mode(Mode::E164).to_string());
            }),
        },
    ];
    println!("libphonenumber steps inside Phone::parse, each alone:");
    report(&mut steps, PHONE_SAMPLES / 3);
}

/// The old service's normalization over the ten formats: the baseline of every phone block.
fn strip_baseline<'a>() -> SyncBench<'a> {
    SyncBench {
        name: "strip non-digits (old service, baseline)",
        ops: PHONE_FORMATS.len(),
        f: Box::new(|| {
            for s in PHONE_FORMATS {
                black_box(strip_non_digits(black_box(s)));
            }
        }),
    }
}

/// Measures a block whose first benchmark is its baseline and prints each ratio to it.
fn report(benches: &mut [SyncBench<'_>], samples: usize) {
    let stats = run_interleaved(benches, samples);
    for (k, (b, s)) in benches.iter().zip(&stats).enumerate() {
        let name = if k == 0 || b.name.starts_with(|c: char| c.is_alphabetic()) {
            b.name.to_owned()
        } else {
            format!("{:?}", b.name)
        };
        row(&name, *s, (k > 0).then(|| s.median / stats[0].median));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Resolution tiers.

/// Diretrix that answers at once. Each contact gets its own CPF (from the last nine digits of
/// the phone), so the provider path also buys a new person every time instead of finding the
/// previous key's person in memory.
struct InstantDiretrix;

#[async_trait]
impl CpfLookup for InstantDiretrix {
    async fn lookup(&self, key: &ContactKey) -> Result<Option<CpfCandidate>, ProviderError> {
        Ok(Some(CpfCandidate {
            cpf: cpf_for(key),
            name: Some("MARIA APARECIDA SOUZA".to_owned()),
        }))
    }
}

fn cpf_for(key: &ContactKey) -> Cpf {
    let digits: Vec<u8> = key
        .value()
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    let mut base = [0u8; 9];
    base.copy_from_slice(&digits[digits.len() - 9..]);
    Cpf::from_base(base)
}

/// The Work API answering at once with the fixture person, under the CPF asked for.
struct InstantWorkApi {
    raw: Value,
    person: Person,
}

impl InstantWorkApi {
    fn new() -> InstantWorkApi {
        let raw: Value =
            serde_json::from_str(include_str!("../tests/fixtures/work_api_person.json"))
                .expect("fixture is JSON");
        let person = match WorkApiAnswer::parse(&raw).expect("fixture is a Work API answer") {
            WorkApiAnswer::Found(p) => p,
            WorkApiAnswer::NotFound => panic!("fixture is a found person"),
        };
        let fixed = Cpf::parse("52601815906").expect("fixture CPF");
        assert_eq!(person.cpf, fixed);
        InstantWorkApi { raw, person }
    }
}

#[async_trait]
impl PersonData for InstantWorkApi {
    async fn fetch(&self, cpf: &Cpf) -> Result<(Value, WorkApiAnswer), ProviderError> {
        let mut raw = self.raw.clone();
        raw["DadosBasicos"]["cpf"] = Value::from(cpf.as_str());
        let mut person = self.person.clone();
        person.cpf = cpf.clone();
        Ok((raw, WorkApiAnswer::Found(person)))
    }
}

/// `n` distinct valid mobile numbers in area code `ddd`, written `(DD) 9XXXX-XXXX`.
fn phone_strings(n: usize, ddd: u32) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    // A stride co-prime with 10^7 spreads the numbers so they do not look like one run.
    let mut x: u64 = 1_234_567;
    while out.len() < n {
        x = (x + 7_654_321) % 10_000_000;
        let s = format!("({ddd}) 98{:03}-{:04}", x / 10_000, x % 10_000);
        if let Ok(p) = Phone::parse(&s)
            && seen.insert(p.e164().to_owned())
        {
            out.push(s);
        }
    }
    out
}

fn resolver(
    store: &DynStore,
    diretrix: &Arc<InstantDiretrix>,
    work: &Arc<InstantWorkApi>,
) -> Resolver {
    Resolver::new(
        store.clone(),
        diretrix.clone(),
        work.clone(),
        Ttls {
            positive: Duration::from_secs(86_400),
            negative: Duration::from_secs(3_600),
            max_age: Duration::from_secs(180 * 86_400),
        },
        64 * 1024 * 1024,
        Arc::new(Metrics::new(0.0, 0.0)),
    )
}

/// One lookup as a worker does it: contact -> CPF, then CPF -> person. Returns the tiers
/// and how long each half took (ns).
async fn resolve(r: &Resolver, key: &ContactKey) -> ((Tier, Tier), [f64; 2]) {
    let (contact, contact_ns) = timed(r.contact(key)).await;
    let (found, contact_tier) = contact.expect("contact resolves");
    let Lookup::Found(cpf) = found else {
        panic!("the instant Diretrix always finds someone");
    };
    let (person, person_ns) = timed(r.person(&cpf)).await;
    let (person, person_tier) = person.expect("person resolves");
    assert!(matches!(person, Lookup::Found(_)), "person found");
    ((contact_tier, person_tier), [contact_ns, person_ns])
}

/// Per-tier samples: both halves together, contact alone, person alone.
#[derive(Default)]
struct TierSamples {
    both: Vec<f64>,
    contact: Vec<f64>,
    person: Vec<f64>,
}

impl TierSamples {
    fn push(&mut self, [contact, person]: [f64; 2]) {
        self.both.push(contact + person);
        self.contact.push(contact);
        self.person.push(person);
    }
}

async fn resolution_tiers() {
    println!("\n## 2. Resolution tiers (contact + person, SQLite, instant in-process providers)");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("resolve.db").display());
    let settings = DatabaseSettings {
        url: url.clone().into(),
        max_connections: 5,
        lock_connections: 2,
        lock_wait_ms: 5000,
        async_commit_steps: true,
    };
    let store = enricher::store::connect(&settings)
        .await
        .expect("sqlite store");
    store.migrate().await.expect("migrations");
    let diretrix = Arc::new(InstantDiretrix);
    let work = Arc::new(InstantWorkApi::new());
    // `buying` takes every key first (provider path); `reading` starts with empty memory over
    // the same store, so its first look at a key is a database hit and its second a memory hit.
    let buying = resolver(&store, &diretrix, &work);
    let reading = resolver(&store, &diretrix, &work);

    let total = RESOLVE_WARMUP + RESOLVE_KEYS;
    let keys: Vec<ContactKey> = phone_strings(total, 11)
        .iter()
        .map(|s| ContactKey::Phone(Phone::parse(s).expect("generated phones are valid")))
        .collect();
    // Floors: what one trivial statement and one empty write transaction cost through sqlx
    // on the same database file (a second pool), measured in the same loop.
    let raw = SqliteStore::connect(&url, 1).await.expect("second pool");
    let pool = raw.pool();
    let (mut memory, mut database, mut provider) = (
        TierSamples::default(),
        TierSamples::default(),
        TierSamples::default(),
    );
    let (mut select_ns, mut write_tx_ns, mut peek_ns, mut count_ns) =
        (vec![], vec![], vec![], vec![]);
    let metrics = Metrics::new(0.0, 0.0);
    // Interleaved: in one round, key i is bought, key i-LAG read from the database and key
    // i-2*LAG from memory, so noise lands on all three tiers alike.
    for i in 0..total + 2 * RESOLVE_LAG {
        let measured = |j: usize| j >= RESOLVE_WARMUP;
        if i < total {
            let (tiers, ns) = resolve(&buying, &keys[i]).await;
            assert_eq!(tiers, (Tier::Provider, Tier::Provider), "key {i}");
            if measured(i) {
                provider.push(ns);
            }
        }
        if let Some(j) = i.checked_sub(RESOLVE_LAG).filter(|&j| j < total) {
            let (tiers, ns) = resolve(&reading, &keys[j]).await;
            assert_eq!(tiers, (Tier::Database, Tier::Database), "key {j}");
            if measured(j) {
                database.push(ns);
            }
        }
        if let Some(j) = i.checked_sub(2 * RESOLVE_LAG).filter(|&j| j < total) {
            let (tiers, ns) = resolve(&reading, &keys[j]).await;
            assert_eq!(tiers, (Tier::Memory, Tier::Memory), "key {j}");
            if measured(j) {
                memory.push(ns);
            }
        }
        if let Some(j) = i
            .checked_sub(2 * RESOLVE_LAG)
            .filter(|&j| measured(j) && j < total)
        {
            // The same memory entries read without the tiers' bookkeeping (no metrics, no
            // entry API): the floor of the memory tier.
            let ((cpf, person), ns) = timed(async {
                let Some(Lookup::Found(cpf)) = reading.peek_contact(&keys[j]).await else {
                    panic!("key {j} in memory");
                };
                let person = reading.peek_person(&cpf).await;
                (cpf, person)
            })
            .await;
            assert!(
                matches!(person, Some(Lookup::Found(_))),
                "{cpf:?} in memory"
            );
            peek_ns.push(ns);
            // What a pair of memory hits adds to the counters.
            let start = Instant::now();
            metrics.lookup(LookupKind::Contact, LookupResult::MemoryHit);
            metrics.lookup(LookupKind::Cpf, LookupResult::MemoryHit);
            count_ns.push(start.elapsed().as_nanos() as f64);
        }
        if measured(i) && i < total {
            let (one, ns) = timed(sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(pool)).await;
            assert_eq!(one.expect("SELECT 1"), 1);
            select_ns.push(ns);
            let (done, ns) = timed(async {
                let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                tx.commit().await
            })
            .await;
            done.expect("empty write transaction");
            write_tx_ns.push(ns);
        }
    }
    let base = Stats::of(memory.both.clone());
    println!("per lookup (contact + person), {RESOLVE_KEYS} distinct keys per tier:");
    for (k, (name, samples)) in [
        ("(a) memory hit (baseline)", &memory),
        ("(b) database hit", &database),
        ("(c) provider path, instant providers", &provider),
    ]
    .into_iter()
    .enumerate()
    {
        let both = Stats::of(samples.both.clone());
        row(name, both, (k > 0).then(|| both.median / base.median));
        let contact = Stats::of(samples.contact.clone());
        let person = Stats::of(samples.person.clone());
        row(
            "      of which contact -> CPF",
            contact,
            Some(contact.median / base.median),
        );
        row(
            "      of which CPF -> person",
            person,
            Some(person.median / base.median),
        );
    }
    let peek = Stats::of(peek_ns);
    println!("parts of the memory tier, same entries:");
    row(
        "peek_contact + peek_person (moka get alone)",
        peek,
        Some(peek.median / base.median),
    );
    let count = Stats::of(count_ns);
    row(
        "Metrics::lookup x2 (the hits' counters)",
        count,
        Some(count.median / base.median),
    );
    let select = Stats::of(select_ns);
    let write_tx = Stats::of(write_tx_ns);
    println!("floors through sqlx on the same SQLite file:");
    row("one SELECT 1", select, Some(select.median / base.median));
    row(
        "empty write tx (BEGIN IMMEDIATE + COMMIT)",
        write_tx,
        Some(write_tx.median / base.median),
    );
    let (entries, bytes) = reading.cache_usage().await;
    println!(
        "  memory tier after the run: {entries} entries, {:.1} KiB weighted (~{:.0} B per entry)",
        bytes as f64 / 1024.0,
        bytes as f64 / entries.max(1) as f64
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Intake throughput, end to end.

/// A C2S "lead created" webhook shaped like `examples/c2s_webhook_create.json`, with its own
/// lead id, phone and e-mail.
fn webhook(template: &Value, i: usize, phone: &str) -> Value {
    let mut event = template.clone();
    event["id"] = Value::from(format!("bench{i:019x}"));
    event["attributes"]["customer"]["phone"] = Value::from(phone);
    event["attributes"]["customer"]["email"] = Value::from(format!("lead{i}@example.com"));
    event
}

/// Runs `n` requests, at most `concurrency` at once, each as its own task; returns the wall
/// time and each request's latency in nanoseconds.
async fn drive<F, Fut>(n: usize, concurrency: usize, request: F) -> (Duration, Vec<f64>)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for i in 0..n {
        let permit = slots.clone().acquire_owned().await.expect("semaphore open");
        let request = request(i);
        tasks.spawn(async move {
            let (_, ns) = timed(request).await;
            drop(permit);
            ns
        });
    }
    let mut latencies = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        latencies.push(done.expect("request task"));
    }
    (start.elapsed(), latencies)
}

async fn event_states(store: &DynStore) -> HashMap<String, i64> {
    store
        .event_counts()
        .await
        .expect("event counts")
        .into_iter()
        .map(|(state, n)| (state.to_string(), n))
        .collect()
}

/// Polls the inbox until `expected` events are done or dead; returns when that happened.
/// Panics at the deadline: a run whose events never finish has no figures worth printing.
async fn wait_finished(store: &DynStore, expected: i64) -> Instant {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        let states = event_states(store).await;
        let finished =
            states.get("done").copied().unwrap_or(0) + states.get("dead").copied().unwrap_or(0);
        if finished >= expected {
            return Instant::now();
        }
        assert!(
            Instant::now() <= deadline,
            "{expected} events not finished within {DRAIN_DEADLINE:?}: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn intake(section: &str, label: &str, database_url: String) {
    println!(
        "\n## {section}. Intake end to end ({label}, sandbox providers, {INTAKE_REQUESTS} requests, \
         {INTAKE_CONCURRENCY} in flight)"
    );
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", database_url),
        ("PORT", "0".to_owned()),
        ("ENRICHER__METRICS__PORT", "0".to_owned()),
        ("ENRICHER__SERVER__HOST", "127.0.0.1".to_owned()),
        ("ENRICHER__SANDBOX__ENABLED", "true".to_owned()),
        ("ENRICHER__WORKERS__POLL_INTERVAL_MS", "20".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let settings = Settings::load_from(AppEnv::Development, &config, &vars).expect("settings");
    let workers = settings.workers.concurrency;
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());

    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(INTAKE_CONCURRENCY)
        .build()
        .expect("http client");
    let health_url = format!("{base}/health");
    let hook_url = format!("{base}/api/v1/webhooks/c2s");
    let template: Value = serde_json::from_str(include_str!("../examples/c2s_webhook_create.json"))
        .expect("example webhook is JSON");
    let phones = phone_strings(INTAKE_WARMUP + INTAKE_REQUESTS, 21);
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        phones
            .iter()
            .enumerate()
            .map(|(i, p)| serde_json::to_vec(&webhook(&template, i, p)).expect("serializes"))
            .collect(),
    );

    let get_health = |_: usize| {
        let (client, url) = (client.clone(), health_url.clone());
        async move {
            let response = client.get(url).send().await.expect("GET /health");
            assert_eq!(response.status(), 200);
            response.bytes().await.expect("health body");
        }
    };
    let post_hook = |offset: usize| {
        let (client, url, bodies) = (client.clone(), hook_url.clone(), bodies.clone());
        move |i: usize| {
            let (client, url, bodies) = (client.clone(), url.clone(), bodies.clone());
            async move {
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(bodies[offset + i].clone())
                    .send()
                    .await
                    .expect("POST webhook");
                assert_eq!(response.status(), 202);
                let text = response.text().await.expect("intake body");
                assert!(text.contains("\"accepted\""), "event accepted: {text}");
            }
        }
    };

    // Warm-up: connections open, a few events all the way through, then an idle application.
    drive(2 * INTAKE_CONCURRENCY, INTAKE_CONCURRENCY, get_health).await;
    drive(INTAKE_WARMUP, INTAKE_CONCURRENCY, post_hook(0)).await;
    wait_finished(&state.store, INTAKE_WARMUP as i64).await;

    let (health_wall, health_ns) = drive(INTAKE_REQUESTS, INTAKE_CONCURRENCY, get_health).await;
    let t0 = Instant::now();
    let (post_wall, post_ns) = drive(
        INTAKE_REQUESTS,
        INTAKE_CONCURRENCY,
        post_hook(INTAKE_WARMUP),
    )
    .await;
    let at_intake_end = event_states(&state.store).await;
    let finished = wait_finished(&state.store, (INTAKE_WARMUP + INTAKE_REQUESTS) as i64).await;
    let states = event_states(&state.store).await;
    let delivered = state.sandbox.as_ref().map_or(0, |s| s.messages().len());

    let health = Stats::of(health_ns);
    let over_50ms = post_ns.iter().filter(|&&ns| ns > 50e6).count();
    let post = Stats::of(post_ns);
    let health_rps = INTAKE_REQUESTS as f64 / health_wall.as_secs_f64();
    let post_rps = INTAKE_REQUESTS as f64 / post_wall.as_secs_f64();
    println!("latency of the answer, and requests per second:");
    row("GET /health (HTTP stack, baseline)", health, None);
    println!("  {:<44} {health_rps:>8.0} req/s", "");
    row(
        "POST /api/v1/webhooks/c2s -> 202",
        post,
        Some(post.median / health.median),
    );
    println!(
        "  {:<44} {post_rps:>8.0} req/s   ({:.2}x the baseline's throughput)",
        "",
        post_rps / health_rps
    );
    println!(
        "  {:<44} slowest 202 {}; {over_50ms} of {INTAKE_REQUESTS} over 50 ms",
        "",
        human(post.max),
    );
    println!(
        "  when the last 202 came back ({:.2} s): inbox {at_intake_end:?}",
        post_wall.as_secs_f64()
    );
    let took = finished - t0;
    println!(
        "end to end: {INTAKE_REQUESTS} events done {:.2} s after the first POST = {:.0} events/s \
         ({workers} workers, sandbox over loopback HTTP)",
        took.as_secs_f64(),
        INTAKE_REQUESTS as f64 / took.as_secs_f64()
    );
    let contact = state.metrics.tier_counts(LookupKind::Contact);
    let cpf = state.metrics.tier_counts(LookupKind::Cpf);
    println!(
        "  inbox {states:?}; sandbox CRM received {delivered} messages; \
         lookups contact {contact:?}, cpf {cpf:?}"
    );

    shutdown.cancel();
    running
        .await
        .expect("application task")
        .expect("application stopped cleanly");
}

// ---------------------------------------------------------------------------------------------
// 3b. The same on Postgres, in a throwaway database.

async fn intake_postgres(admin_url: String, mut conn: sqlx::PgConnection) {
    let name = format!("enricher_bench_{}", uuid::Uuid::new_v4().simple());
    let create = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let mut url = url::Url::parse(&admin_url).expect("checked above");
    url.set_path(&format!("/{name}"));
    // Run in its own task so that a panic still drops the database before it propagates.
    let outcome = tokio::spawn(intake("3b", "Postgres", url.to_string())).await;
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(&mut conn)
        .await
        .expect("DROP DATABASE");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
