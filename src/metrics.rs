//! Metrics: what the service receives, resolves, spends, saves and delivers, in Prometheus
//! text format on its own port.
//!
//! Each application owns its recorder (no global one), so tests can run several applications
//! in one process and assert exact values. Counters that operators also read through
//! `/cache/stats` (lookups per tier) and the money counters are kept here as atomics: money is
//! fractional, which the exporter's integer counters cannot carry, so those few series are
//! rendered by hand in the same exposition. Gauges (cache size, inbox depth, uptime) are set
//! right before each scrape from their sources, so they are never stale.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::store::EventState;

const METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

/// Latency buckets for provider calls, in seconds: the providers answer in 0.5 to 5 s.
const LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0];

/// Buckets for the steps of an event and its whole way to the CRM, in seconds: a step on
/// the database or a memory hit takes a millisecond or less, a provider call seconds, so they
/// start finer and reach further than [`LATENCY_BUCKETS`].
const STAGE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Where an event spends its time, per step (`enricher_event_stage_seconds`).
const STAGE_SECONDS: &str = "enricher_event_stage_seconds";

/// From when the event became due (intake's insert for a webhook) to the CRM's answer, for
/// messages delivered at the event's first attempt.
const DELIVERY_SECONDS: &str = "enricher_delivery_latency_seconds";

/// The steps of an event a worker carries, timed one by one so that a slow event shows where
/// it waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Due, not yet taken by a worker: from intake's insert for a new event, from its retry
    /// time for a retry (the wait before it is on purpose).
    Queued,
    /// Contacts and persons resolved, and the message rendered.
    Resolve,
    /// The message and the "sending" mark committed.
    Save,
    /// The CRM's answer to the message.
    Post,
    /// The event's end written.
    Finish,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Queued,
        Stage::Resolve,
        Stage::Save,
        Stage::Post,
        Stage::Finish,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::Resolve => "resolve",
            Stage::Save => "save",
            Stage::Post => "post",
            Stage::Finish => "finish",
        }
    }
}

/// The two lookup kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    Contact,
    Cpf,
}

impl LookupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LookupKind::Contact => "contact",
            LookupKind::Cpf => "cpf",
        }
    }

    /// The provider a miss of this kind pays.
    pub fn provider(self) -> Provider {
        match self {
            LookupKind::Contact => Provider::Diretrix,
            LookupKind::Cpf => Provider::WorkApi,
        }
    }
}

/// How a lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    MemoryHit,
    DatabaseHit,
    /// A remembered "nobody", from memory or the database.
    NegativeHit,
    ProviderCall,
}

impl LookupResult {
    pub const ALL: [LookupResult; 4] = [
        LookupResult::MemoryHit,
        LookupResult::DatabaseHit,
        LookupResult::NegativeHit,
        LookupResult::ProviderCall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LookupResult::MemoryHit => "memory_hit",
            LookupResult::DatabaseHit => "database_hit",
            LookupResult::NegativeHit => "negative_hit",
            LookupResult::ProviderCall => "provider_call",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The paid providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Diretrix,
    WorkApi,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Diretrix => "diretrix",
            Provider::WorkApi => "work_api",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Lookups answered per kind and result, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TierCounts {
    pub memory_hit: u64,
    pub database_hit: u64,
    pub negative_hit: u64,
    pub provider_call: u64,
}

impl TierCounts {
    /// Share of lookups that did not pay a provider; `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let total = self.memory_hit + self.database_hit + self.negative_hit + self.provider_call;
        (total > 0).then(|| (total - self.provider_call) as f64 / total as f64)
    }
}

/// Values read at scrape time from their owners.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub cache_entries: u64,
    pub cache_weighted_bytes: u64,
    pub negative_entries: i64,
    pub inbox: Vec<(EventState, i64)>,
    /// Each provider's circuit breaker state (`closed`, `open`, `half_open`).
    pub circuits: Vec<(&'static str, &'static str)>,
}

pub struct Metrics {
    /// This application's recorder; rendered on `/metrics`.
    recorder: PrometheusRecorder,
    started: Instant,
    /// Price of one call, per provider, in the operator's currency.
    prices: [f64; 2],
    /// [kind][result] lookup counts.
    lookups: [[AtomicU64; 4]; 2],
    /// Money, in millionths, per provider: spent and saved.
    spent_micros: [AtomicU64; 2],
    saved_micros: [AtomicU64; 2],
    /// The `instance` label of every series (see [`instance_name`]).
    instance: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The name every series of this process carries in its `instance` label: Fly's machine id
/// when running there, else the host name, so series from several instances add up in PromQL
/// without colliding.
pub fn instance_name() -> String {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    from_env("FLY_MACHINE_ID")
        .or_else(|| from_env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Metrics {
    /// A recorder with the given prices per call (Diretrix, Work API).
    pub fn new(diretrix_price: f64, work_api_price: f64) -> Metrics {
        Metrics::for_instance(diretrix_price, work_api_price, &instance_name())
    }

    /// [`Metrics::new`] with an explicit `instance` label.
    pub fn for_instance(diretrix_price: f64, work_api_price: f64, instance: &str) -> Metrics {
        // Only invalid (empty) bucket lists fail, and these are constants.
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(STAGE_SECONDS.into()), STAGE_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(DELIVERY_SECONDS.into()), STAGE_BUCKETS)
            })
            .expect("latency buckets are valid")
            .build_recorder();
        let metrics = Metrics {
            recorder,
            started: Instant::now(),
            prices: [diretrix_price.max(0.0), work_api_price.max(0.0)],
            lookups: Default::default(),
            spent_micros: Default::default(),
            saved_micros: Default::default(),
            instance: instance.to_owned(),
        };
        metrics
            .recorder
            .register_gauge(
                &metrics.key(
                    "enricher_build_info",
                    &[("version", env!("CARGO_PKG_VERSION"))],
                ),
                &METADATA,
            )
            .set(1.0);
        // Present from the start, so a dashboard tells "never reconnected" from "not scraped".
        metrics.counter("enricher_invalidation_reconnects_total", &[], 0);
        metrics
    }

    /// A series key: its labels, then `instance`.
    fn key(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .chain(std::iter::once(Label::new(
                "instance",
                self.instance.clone(),
            )))
            .collect();
        Key::from_parts(name, labels)
    }

    /// The invalidation listener lost its connection and subscribed again.
    pub fn listener_reconnected(&self) {
        self.counter("enricher_invalidation_reconnects_total", &[], 1);
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, &str)], by: u64) {
        self.recorder
            .register_counter(&self.key(name, labels), &METADATA)
            .increment(by);
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        self.recorder
            .register_gauge(&self.key(name, labels), &METADATA)
            .set(value);
    }

    /// One webhook event (or rejected request) by source and outcome; `reason` for rejections.
    pub fn webhook(&self, source: &str, outcome: &str, reason: &str) {
        self.counter(
            "enricher_webhooks_total",
            &[("source", source), ("outcome", outcome), ("reason", reason)],
            1,
        );
    }

    /// One lead form received (`accepted`, `duplicate`), labelled `test` when the source
    /// marked it as test data, so operators' integration checks never count as real leads.
    pub fn lead_form(&self, source: &str, outcome: &str, is_test: bool) {
        self.counter(
            "enricher_lead_forms_total",
            &[
                ("source", source),
                ("outcome", outcome),
                ("test", if is_test { "true" } else { "false" }),
            ],
            1,
        );
    }

    /// One lead the CRM was asked to create, by outcome (`created`, `already_created`, or an
    /// error class), labelled `test` like [`Metrics::lead_form`].
    pub fn crm_lead(&self, source: &str, outcome: &str, is_test: bool) {
        self.counter(
            "enricher_crm_leads_total",
            &[
                ("source", source),
                ("outcome", outcome),
                ("test", if is_test { "true" } else { "false" }),
            ],
            1,
        );
    }

    /// One lookup answered; a hit also counts the money it saved.
    pub fn lookup(&self, kind: LookupKind, result: LookupResult) {
        self.lookups[kind as usize][result.index()].fetch_add(1, Ordering::Relaxed);
        self.counter(
            "enricher_lookups_total",
            &[("kind", kind.as_str()), ("result", result.as_str())],
            1,
        );
        if result != LookupResult::ProviderCall {
            let provider = kind.provider();
            self.saved_micros[provider.index()]
                .fetch_add(micros(self.prices[provider.index()]), Ordering::Relaxed);
        }
    }

    /// One provider call with its outcome (`ok` or an error class) and latency. Every call
    /// that reached the provider is counted as paid, whatever it answered.
    pub fn provider_call(&self, provider: Provider, outcome: &str, latency: Duration) {
        self.counter(
            "enricher_provider_calls_total",
            &[("provider", provider.as_str()), ("outcome", outcome)],
            1,
        );
        if outcome != "ok" {
            self.counter(
                "enricher_provider_errors_total",
                &[("provider", provider.as_str()), ("class", outcome)],
                1,
            );
        }
        self.histogram(
            "enricher_provider_latency_seconds",
            &[("provider", provider.as_str())],
            latency,
        );
        // A call that never connected (or that an open circuit stopped) never reached the
        // provider, so it cost nothing.
        if !matches!(outcome, "connect" | "circuit_open") {
            self.spent_micros[provider.index()]
                .fetch_add(micros(self.prices[provider.index()]), Ordering::Relaxed);
        }
    }

    /// One delivery attempt to the CRM: `ok` or an error class.
    pub fn delivery(&self, outcome: &str) {
        self.counter("enricher_deliveries_total", &[("outcome", outcome)], 1);
    }

    /// How an event was left: done (with its outcome), retry, or dead.
    pub fn event_finished(&self, state: &str, outcome: &str) {
        self.counter(
            "enricher_events_total",
            &[("state", state), ("outcome", outcome)],
            1,
        );
        match state {
            "retry" => self.counter("enricher_retries_total", &[], 1),
            "dead" => self.counter("enricher_dead_letters_total", &[], 1),
            _ => {}
        }
    }

    /// How long one event spent in one step.
    pub fn stage(&self, stage: Stage, took: Duration) {
        self.histogram(STAGE_SECONDS, &[("stage", stage.as_str())], took);
    }

    /// How long a message delivered at its event's first attempt took from when the event
    /// became due (intake's insert for a webhook) to the CRM's answer.
    pub fn delivered_after(&self, took: Duration) {
        self.histogram(DELIVERY_SECONDS, &[], took);
    }

    fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)], took: Duration) {
        self.recorder
            .register_histogram(&self.key(name, labels), &METADATA)
            .record(took.as_secs_f64());
    }

    /// One lead's choice among a contact's candidates, by how sure it is: `confirmed`,
    /// `unconfirmed` (the lead's name agrees with nobody listed) or `no_lead_name`.
    pub fn name_match(&self, quality: crate::domain::name::Match) {
        self.counter(
            "enricher_name_matches_total",
            &[("quality", quality.as_str())],
            1,
        );
    }

    /// Inbox payloads purged by retention.
    pub fn payloads_purged(&self, n: u64) {
        self.counter("enricher_payloads_purged_total", &[], n);
    }

    /// Lookups per result for one kind, since start.
    pub fn tier_counts(&self, kind: LookupKind) -> TierCounts {
        let row = &self.lookups[kind as usize];
        let get = |r: LookupResult| row[r.index()].load(Ordering::Relaxed);
        TierCounts {
            memory_hit: get(LookupResult::MemoryHit),
            database_hit: get(LookupResult::DatabaseHit),
            negative_hit: get(LookupResult::NegativeHit),
            provider_call: get(LookupResult::ProviderCall),
        }
    }

    /// Money spent and saved for one provider, since start.
    pub fn money(&self, provider: Provider) -> (f64, f64) {
        (
            from_micros(self.spent_micros[provider.index()].load(Ordering::Relaxed)),
            from_micros(self.saved_micros[provider.index()].load(Ordering::Relaxed)),
        )
    }

    /// The full exposition, with the gauges set from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        self.gauge("enricher_cache_entries", &[], snapshot.cache_entries as f64);
        self.gauge(
            "enricher_cache_weighted_bytes",
            &[],
            snapshot.cache_weighted_bytes as f64,
        );
        self.gauge(
            "enricher_negative_entries",
            &[],
            snapshot.negative_entries as f64,
        );
        for &state in EventState::ALL {
            let depth = snapshot
                .inbox
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            let label = [("state", state.as_str())];
            self.gauge("enricher_inbox_events", &label, depth as f64);
        }
        for (provider, circuit) in &snapshot.circuits {
            for state in ["closed", "open", "half_open"] {
                let value = if state == *circuit { 1.0 } else { 0.0 };
                self.gauge(
                    "enricher_provider_circuit",
                    &[("provider", provider), ("state", state)],
                    value,
                );
            }
        }
        self.gauge(
            "enricher_uptime_seconds",
            &[],
            self.started.elapsed().as_secs_f64(),
        );
        let handle = self.recorder.handle();
        handle.run_upkeep();
        let mut out = handle.render();
        for (name, help, values) in [
            (
                "enricher_provider_spend_total",
                "Money spent on provider calls (calls x configured price).",
                &self.spent_micros,
            ),
            (
                "enricher_provider_saved_total",
                "Money saved by lookups a cache tier answered (avoided calls x configured price).",
                &self.saved_micros,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for provider in [Provider::Diretrix, Provider::WorkApi] {
                let value = from_micros(values[provider.index()].load(Ordering::Relaxed));
                let _ = writeln!(
                    out,
                    "{name}{{provider=\"{}\",instance=\"{}\"}} {value}",
                    provider.as_str(),
                    self.instance
                );
            }
        }
        out
    }
}

fn micros(amount: f64) -> u64 {
    (amount * 1_000_000.0).round() as u64
}

fn from_micros(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_save_and_calls_spend_the_configured_price() {
        let m = Metrics::for_instance(0.35, 1.2, "m1");
        m.lookup(LookupKind::Contact, LookupResult::ProviderCall);
        m.provider_call(Provider::Diretrix, "ok", Duration::from_millis(700));
        m.lookup(LookupKind::Contact, LookupResult::MemoryHit);
        m.lookup(LookupKind::Cpf, LookupResult::DatabaseHit);
        assert_eq!(m.money(Provider::Diretrix), (0.35, 0.35));
        assert_eq!(m.money(Provider::WorkApi), (0.0, 1.2));
        let text = m.render(&Snapshot::default());
        assert!(
            text.contains(
                "enricher_provider_spend_total{provider=\"diretrix\",instance=\"m1\"} 0.35"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "enricher_provider_saved_total{provider=\"work_api\",instance=\"m1\"} 1.2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "enricher_lookups_total{kind=\"contact\",result=\"memory_hit\",instance=\"m1\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "enricher_provider_latency_seconds_bucket{provider=\"diretrix\",instance=\"m1\",le=\"1\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_hit_ratio_counts_every_answer_that_did_not_pay() {
        let counts = TierCounts {
            memory_hit: 2,
            database_hit: 1,
            negative_hit: 1,
            provider_call: 4,
        };
        assert_eq!(counts.hit_ratio(), Some(0.5));
        assert_eq!(TierCounts::default().hit_ratio(), None);
    }
}
