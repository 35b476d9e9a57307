//! Settings: where they come from, what they default to, and which ones production demands.
//!
//! Layers, later wins: the defaults compiled into the binary (`config/default.toml`), the same
//! file on disk when present, `config/{APP_ENV}.toml`, then the environment
//! (`ENRICHER__SECTION__KEY`, plus the platform conventions `DATABASE_URL` and `PORT`).
//! Secrets are `SecretString` from the moment they are read, so no `Debug` of the settings can
//! print one. [`describe`] tells, for `enricher check-config`, which layer set each value, with
//! secrets redacted. This module must not open connections or start anything.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat, Source as _};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// The compiled-in defaults: the service runs from any directory with nothing configured.
const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read the configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// Settings that must be present and non-empty (a secret set to "" counts as missing).
    #[error("missing or empty settings for {env}: {}", missing.join(", "))]
    Missing { env: String, missing: Vec<String> },
    #[error("invalid setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// A value that cannot be read as its type, named after whatever set it (from [`describe`]).
    #[error("invalid setting {name}: {reason}")]
    Unreadable { name: String, reason: String },
}

/// Which deployment this is; production turns the sandbox off and demands real credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

impl AppEnv {
    pub fn from_env() -> AppEnv {
        Self::parse(std::env::var("APP_ENV").ok().as_deref())
    }

    /// The environment named by `APP_ENV` in `vars`, like [`AppEnv::from_env`].
    pub fn from_vars(vars: &HashMap<String, String>) -> AppEnv {
        Self::parse(vars.get("APP_ENV").map(String::as_str))
    }

    fn parse(app_env: Option<&str>) -> AppEnv {
        match app_env {
            Some("production") | Some("prod") => AppEnv::Production,
            _ => AppEnv::Development,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AppEnv::Development => "development",
            AppEnv::Production => "production",
        }
    }
}

/// `Serialize` gives the redacted view `check-config` prints: every secret goes through a
/// `serialize_with` that hides it (secrecy gives `SecretString` no `Serialize`, so a secret field
/// without one does not compile).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    #[serde(skip, default = "default_env")]
    pub env: AppEnv,
    pub database: DatabaseSettings,
    pub server: ServerSettings,
    pub metrics: MetricsSettings,
    pub diretrix: DiretrixSettings,
    pub work_api: WorkApiSettings,
    pub c2s: C2sSettings,
    pub webhooks: WebhookSettings,
    pub admin: AdminSettings,
    pub sandbox: SandboxSettings,
    pub cache: CacheSettings,
    pub workers: WorkerSettings,
    pub delivery: DeliverySettings,
    pub message: MessageSettings,
}

fn default_env() -> AppEnv {
    AppEnv::Development
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://…`; may hold a password, hence secret.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: SecretString,
    /// Connections for intake, claims and reads/writes (Postgres: per instance).
    pub max_connections: u32,
    /// Postgres only: a separate pool for the cross-instance purchase locks, so instances
    /// waiting on one another can never take the connections intake needs. Bounds how many
    /// purchases this instance makes at once.
    pub lock_connections: u32,
    /// Postgres only: how long a purchase waits for another instance buying the same key
    /// before the event is retried later (never bought twice).
    pub lock_wait_ms: u64,
    /// Postgres only: claims and rendered messages commit without waiting for the WAL flush;
    /// the sending mark that follows them, before any message goes out, flushes them.
    pub async_commit_steps: bool,
}

impl DatabaseSettings {
    /// The URL without its password (in the user part or a `password` / `sslpassword` query
    /// parameter), for logs and `check-config`.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

fn redact_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else {
        return "<unparseable url>".to_owned();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let secret_param = |name: &str| name.to_ascii_lowercase().contains("password");
    if u.query_pairs().any(|(name, _)| secret_param(&name)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret_param(&name) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

fn serialize_redacted_url<S: Serializer>(url: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url.expose_secret()))
}

/// A provider base URL as `check-config` shows it: userinfo (`user:password@`) and
/// password-like query parameters redacted, since operators do paste credentials there.
fn serialize_optional_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        None => s.serialize_none(),
        Some(url) if holds_credentials(url) => s.serialize_str(&redact_url(&without_user(url))),
        // Shown as written when there is nothing to hide (no normalizing of the text).
        Some(url) => s.serialize_str(url),
    }
}

/// Whether the URL carries userinfo or a password-like query parameter (or cannot be read,
/// in which case it is not shown verbatim either).
fn holds_credentials(raw: &str) -> bool {
    match url::Url::parse(raw) {
        Ok(u) => {
            !u.username().is_empty()
                || u.password().is_some()
                || u.query_pairs()
                    .any(|(name, _)| name.to_ascii_lowercase().contains("password"))
        }
        Err(_) => true,
    }
}

/// The URL with its user name masked: in a provider URL a user name alone can be a credential
/// (`https://TOKEN@host`), unlike the database's role name.
fn without_user(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if !u.username().is_empty() => {
            let _ = u.set_username("***");
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

/// What `check-config` shows for a secret that is set.
pub const REDACTED: &str = "(set, redacted)";
/// What `check-config` shows for a setting no layer sets.
pub const UNSET: &str = "(unset)";

fn serialize_redacted<S: Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        None => s.serialize_str(UNSET),
        // Saying that it is empty gives nothing away and explains a refused request.
        Some(secret) if secret.expose_secret().is_empty() => s.serialize_str("(set, empty)"),
        Some(_) => s.serialize_str(REDACTED),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    /// Events one webhook request may carry; more is a 413.
    pub max_events_per_request: usize,
    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection stays open waiting for the next request.
    pub header_read_timeout_secs: u64,
    /// Largest request head (request line and headers) read, in bytes; past it HTTP/1 answers
    /// 431 and HTTP/2 refuses the stream.
    pub max_header_bytes: usize,
    /// Group commit: the inserts of concurrent webhook requests share one transaction of at
    /// most this many events; 0 gives every request a transaction of its own.
    pub group_commit_max_events: usize,
    /// Longest a batch waits for more requests once it could start committing (µs).
    pub group_commit_wait_us: u64,
    /// Batches committing at once; requests arriving while all of them commit form the next.
    pub group_commit_in_flight: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MetricsSettings {
    /// Address the metrics listener binds; keep it off the public interface where possible.
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DiretrixSettings {
    #[serde(serialize_with = "serialize_optional_url")]
    pub base_url: Option<String>,
    #[serde(serialize_with = "serialize_redacted")]
    pub user: Option<SecretString>,
    #[serde(serialize_with = "serialize_redacted")]
    pub password: Option<SecretString>,
    pub timeout_ms: u64,
    pub price_per_call: f64,
    /// Largest answer body read; a bigger one is a permanent provider error.
    pub max_answer_bytes: usize,
    /// Consecutive failed calls (timeouts, 429, 5xx, connection) that open the circuit
    /// breaker; 0 turns it off.
    pub breaker_failures: u32,
    /// How long an open breaker turns calls away before one probe is let through.
    pub breaker_open_secs: u64,
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// Calls started per second (the provider's quota); 0 means no limit.
    pub max_calls_per_sec: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WorkApiSettings {
    #[serde(serialize_with = "serialize_optional_url")]
    pub base_url: Option<String>,
    #[serde(serialize_with = "serialize_redacted")]
    pub token: Option<SecretString>,
    pub timeout_ms: u64,
    pub price_per_call: f64,
    /// Largest answer body read; a bigger one is a permanent provider error.
    pub max_answer_bytes: usize,
    /// Consecutive failed calls (timeouts, 429, 5xx, connection) that open the circuit
    /// breaker; 0 turns it off.
    pub breaker_failures: u32,
    /// How long an open breaker turns calls away before one probe is let through.
    pub breaker_open_secs: u64,
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// Calls started per second (the provider's quota); 0 means no limit.
    pub max_calls_per_sec: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct C2sSettings {
    #[serde(serialize_with = "serialize_optional_url")]
    pub base_url: Option<String>,
    #[serde(serialize_with = "serialize_redacted")]
    pub token: Option<SecretString>,
    pub timeout_ms: u64,
    /// Consecutive failed calls (timeouts, 429, 5xx, connection) that open the circuit
    /// breaker; 0 turns it off.
    pub breaker_failures: u32,
    /// How long an open breaker turns calls away before one probe is let through.
    pub breaker_open_secs: u64,
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// Calls started per second (the provider's quota); 0 means no limit.
    pub max_calls_per_sec: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct WebhookSettings {
    #[serde(serialize_with = "serialize_redacted")]
    pub c2s_token: Option<SecretString>,
    #[serde(serialize_with = "serialize_redacted")]
    pub google_ads_key: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct AdminSettings {
    #[serde(serialize_with = "serialize_redacted")]
    pub token: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SandboxSettings {
    /// `None` means "on unless production"; see [`Settings::sandbox_enabled`].
    pub enabled: Option<bool>,
    /// Simulated provider latency, so demos and benchmarks feel the cost of a miss.
    pub latency_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CacheSettings {
    pub ttl_secs: u64,
    pub negative_ttl_secs: u64,
    pub max_bytes: u64,
    /// Person data older than this is bought again on its next use.
    pub max_age_days: u64,
    /// People loaded from the database into memory at start (most recently enriched first).
    pub warm_on_start: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WorkerSettings {
    /// Events processed at once by this instance.
    pub concurrency: usize,
    /// How often idle workers look for due retries; new events wake them at once.
    pub poll_interval_ms: u64,
    /// How long a claimed event stays ours; after that another worker may take it over.
    pub lease_secs: u64,
    /// On shutdown, how long in-flight events may take to finish.
    pub drain_secs: u64,
    /// Done events older than this are deleted (each lead's latest is kept); 0 keeps all.
    pub retention_days: u64,
    /// Raw payloads (the CRM's copy of the customer) and rendered messages of done events
    /// are purged after this many days; the rows stay for duplicate detection. 0 keeps them.
    pub payload_retention_days: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DeliverySettings {
    /// Attempts per event (resolution and delivery together) before it is dead-lettered.
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_secs: u64,
    /// A POST sent whose answer never came (timeout after sending, crash mid-POST) may have
    /// been posted: it is posted again at most this many times, then dead-lettered.
    pub unknown_outcome_reposts: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct MessageSettings {
    pub template_path: Option<String>,
    /// Longest message posted, in bytes; a longer one is cut with a marker.
    pub max_bytes: usize,
}

impl Settings {
    /// Reads every layer for the environment named by `APP_ENV`.
    pub fn load() -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::load_from(AppEnv::from_env(), Path::new("config"), &vars)
    }

    /// Reads every layer with an explicit environment, config directory and set of environment
    /// variables, so tests can check layering without touching the process environment.
    pub fn load_from(
        env: AppEnv,
        dir: &Path,
        vars: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let settings = Self::read(env, dir, vars)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every layer merged and typed, not yet validated.
    fn read(
        env: AppEnv,
        dir: &Path,
        vars: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let sources: Vec<Box<dyn config::Source + Send + Sync>> = layers(env, dir, vars)?
            .into_iter()
            .map(|layer| layer.source)
            .collect();
        let mut settings: Settings = Config::builder()
            .add_source(sources)
            .build()?
            .try_deserialize()?;
        settings.env = env;
        Ok(settings)
    }

    /// Whether the in-process simulator of the outside APIs runs.
    pub fn sandbox_enabled(&self) -> bool {
        self.sandbox
            .enabled
            .unwrap_or(self.env != AppEnv::Production)
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache.ttl_secs)
    }

    pub fn negative_ttl(&self) -> Duration {
        Duration::from_secs(self.cache.negative_ttl_secs)
    }

    /// Checks values and, without the sandbox, that every provider setting is present. The
    /// error names the environment variables an operator has to set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers.concurrency == 0 {
            return Err(ConfigError::Invalid {
                name: "ENRICHER__WORKERS__CONCURRENCY",
                reason: "must be at least 1".into(),
            });
        }
        if self.workers.lease_secs < 3 {
            // The heartbeat renews every third of the lease; below three seconds a busy
            // database or a pause can let a live worker's lease run out.
            return Err(ConfigError::Invalid {
                name: "ENRICHER__WORKERS__LEASE_SECS",
                reason: "must be at least 3".into(),
            });
        }
        if self.delivery.max_attempts == 0 {
            return Err(ConfigError::Invalid {
                name: "ENRICHER__DELIVERY__MAX_ATTEMPTS",
                reason: "must be at least 1".into(),
            });
        }
        if self.cache.negative_ttl_secs > self.cache.ttl_secs {
            return Err(ConfigError::Invalid {
                name: "ENRICHER__CACHE__NEGATIVE_TTL_SECS",
                reason: "must not exceed ENRICHER__CACHE__TTL_SECS".into(),
            });
        }
        let scheme = self.database.url.expose_secret();
        if !(scheme.starts_with("postgres://")
            || scheme.starts_with("postgresql://")
            || scheme.starts_with("sqlite:"))
        {
            return Err(ConfigError::Invalid {
                name: "DATABASE_URL",
                reason: "must start with postgres://, postgresql:// or sqlite:".into(),
            });
        }
        for (name, url) in [
            ("ENRICHER__DIRETRIX__BASE_URL", &self.diretrix.base_url),
            ("ENRICHER__WORK_API__BASE_URL", &self.work_api.base_url),
            ("ENRICHER__C2S__BASE_URL", &self.c2s.base_url),
        ] {
            if let Some(url) = url
                && url::Url::parse(url).is_err()
            {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "not a valid URL".into(),
                });
            }
        }

        for (name, value) in [
            (
                "ENRICHER__SERVER__MAX_EVENTS_PER_REQUEST",
                self.server.max_events_per_request,
            ),
            (
                "ENRICHER__DIRETRIX__MAX_ANSWER_BYTES",
                self.diretrix.max_answer_bytes,
            ),
            (
                "ENRICHER__WORK_API__MAX_ANSWER_BYTES",
                self.work_api.max_answer_bytes,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be at least 1".into(),
                });
            }
        }

        // hyper reads HTTP/1 heads into a buffer of at least 8 KiB.
        if self.server.max_header_bytes < 8192 {
            return Err(ConfigError::Invalid {
                name: "ENRICHER__SERVER__MAX_HEADER_BYTES",
                reason: "must be at least 8192".into(),
            });
        }
        // The wait is added to every webhook's answer when the service is idle; beyond a
        // tenth of a second it only delays senders.
        if self.server.group_commit_wait_us > 100_000 {
            return Err(ConfigError::Invalid {
                name: "ENRICHER__SERVER__GROUP_COMMIT_WAIT_US",
                reason: "must be at most 100000 (0.1 s)".into(),
            });
        }

        // Each batch in flight holds a database connection; none would store nothing.
        if self.server.group_commit_in_flight == 0 || self.server.group_commit_in_flight > 64 {
            return Err(ConfigError::Invalid {
                name: "ENRICHER__SERVER__GROUP_COMMIT_IN_FLIGHT",
                reason: "must be between 1 and 64".into(),
            });
        }

        if self.server.header_read_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                name: "ENRICHER__SERVER__HEADER_READ_TIMEOUT_SECS",
                reason: "must be at least 1".into(),
            });
        }

        let mut missing = Vec::new();
        if !self.sandbox_enabled() {
            let required: [(&str, bool); 7] = [
                (
                    "ENRICHER__DIRETRIX__BASE_URL",
                    self.diretrix.base_url.is_some(),
                ),
                ("ENRICHER__DIRETRIX__USER", is_set(&self.diretrix.user)),
                (
                    "ENRICHER__DIRETRIX__PASSWORD",
                    is_set(&self.diretrix.password),
                ),
                (
                    "ENRICHER__WORK_API__BASE_URL",
                    self.work_api.base_url.is_some(),
                ),
                ("ENRICHER__WORK_API__TOKEN", is_set(&self.work_api.token)),
                ("ENRICHER__C2S__BASE_URL", self.c2s.base_url.is_some()),
                ("ENRICHER__C2S__TOKEN", is_set(&self.c2s.token)),
            ];
            missing.extend(
                required
                    .iter()
                    .filter(|(_, present)| !present)
                    .map(|(name, _)| (*name).to_owned()),
            );
        }
        if self.env == AppEnv::Production {
            if !is_set(&self.webhooks.c2s_token) {
                // An open webhook in production lets anyone spend the provider budget.
                missing.push("ENRICHER__WEBHOOKS__C2S_TOKEN".to_owned());
            }
            // Optional secrets may be unset (the feature is off), never set to nothing: an
            // empty admin token would read as "configured" to someone checking the fleet.
            for (name, secret) in [
                ("ENRICHER__ADMIN__TOKEN", &self.admin.token),
                (
                    "ENRICHER__WEBHOOKS__GOOGLE_ADS_KEY",
                    &self.webhooks.google_ads_key,
                ),
            ] {
                if secret.is_some() && !is_set(secret) {
                    missing.push(name.to_owned());
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Missing {
                env: self.env.as_str().to_owned(),
                missing,
            })
        }
    }
}

/// A secret that is present and holds more than blanks.
fn is_set(secret: &Option<SecretString>) -> bool {
    secret
        .as_ref()
        .is_some_and(|s| !s.expose_secret().trim().is_empty())
}

/// Environment variables read under their platform names rather than `ENRICHER__…`, and the
/// setting each one sets. They are the last layers, in this order.
const PLATFORM_VARIABLES: [(&str, &str); 2] =
    [("DATABASE_URL", "database.url"), ("PORT", "server.port")];

/// One layer of the configuration; the loader merges them in order, later wins.
struct Layer {
    kind: LayerKind,
    source: Box<dyn config::Source + Send + Sync>,
}

enum LayerKind {
    Defaults,
    File(PathBuf),
    /// `ENRICHER__SECTION__KEY`: each key is named after its own variable.
    Prefixed,
    Variable(&'static str),
}

/// The layers [`Settings::load_from`] merges, in its order; [`describe`] reads the same list.
fn layers(
    env: AppEnv,
    dir: &Path,
    vars: &HashMap<String, String>,
) -> Result<Vec<Layer>, config::ConfigError> {
    let default_file = dir.join("default.toml");
    let env_file = dir.join(format!("{}.toml", env.as_str()));
    let mut layers = vec![
        Layer {
            kind: LayerKind::Defaults,
            source: Box::new(File::from_str(DEFAULTS, FileFormat::Toml)),
        },
        Layer {
            source: Box::new(File::from(default_file.clone()).required(false)),
            kind: LayerKind::File(default_file),
        },
        Layer {
            source: Box::new(File::from(env_file.clone()).required(false)),
            kind: LayerKind::File(env_file),
        },
        Layer {
            kind: LayerKind::Prefixed,
            source: Box::new(prefixed(vars.clone())),
        },
    ];
    for (name, key) in PLATFORM_VARIABLES {
        if let Some(value) = vars.get(name) {
            let single = Config::builder()
                .set_override(key, value.clone())?
                .build()?;
            layers.push(Layer {
                kind: LayerKind::Variable(name),
                source: Box::new(single),
            });
        }
    }
    Ok(layers)
}

/// The `ENRICHER__SECTION__KEY` variables among `vars`.
fn prefixed(vars: impl IntoIterator<Item = (String, String)>) -> Environment {
    // No `try_parsing`: a token like `0123` must stay a string. Numbers and booleans are
    // converted from strings when the typed field asks for them.
    Environment::with_prefix("ENRICHER")
        .prefix_separator("__")
        .separator("__")
        .source(Some(vars.into_iter().collect()))
}

/// One source on its own, as dotted keys (`cache.ttl_secs`) and their raw values.
fn collect_flat(
    source: Box<dyn config::Source + Send + Sync>,
) -> Result<BTreeMap<String, config::Value>, config::ConfigError> {
    let table = Config::builder()
        .add_source(vec![source])
        .build()?
        .collect()?;
    let mut flat = BTreeMap::new();
    flatten_table("", table, &mut flat);
    Ok(flat)
}

fn flatten_table(
    prefix: &str,
    table: config::Map<String, config::Value>,
    out: &mut BTreeMap<String, config::Value>,
) {
    for (name, value) in table {
        let key = dotted(prefix, &name);
        match value.kind {
            config::ValueKind::Table(inner) if !inner.is_empty() => flatten_table(&key, inner, out),
            // Empty tables stay: a section like `[webhooks]` must exist even with nothing in it.
            _ => {
                out.insert(key, value);
            }
        }
    }
}

fn dotted(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Where an effective value came from: the last layer that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingSource {
    /// The defaults compiled into the binary, or no layer at all (an unset optional setting).
    Default,
    /// A configuration file on disk, as the loader found it (`config/production.toml`).
    File(PathBuf),
    /// An environment variable, by its name (`ENRICHER__CACHE__TTL_SECS`, `PORT`).
    Env(String),
}

impl fmt::Display for SettingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingSource::Default => f.write_str("default"),
            SettingSource::File(path) => write!(f, "file: {}", path.display()),
            SettingSource::Env(name) => write!(f, "env: {name}"),
        }
    }
}

/// One effective setting as `check-config` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedSetting {
    /// Dotted key: `server.port`, `diretrix.base_url`, `app_env`.
    pub key: String,
    /// What it is set to, secrets redacted; `(unset)` when nothing sets it, `(invalid)` when its
    /// value cannot be read (then `error` says why).
    pub value: String,
    pub source: SettingSource,
}

/// The effective configuration with the source of every value, for `enricher check-config`.
/// It holds no secret: secrets are redacted before they get here.
#[derive(Debug)]
pub struct Description {
    pub env: AppEnv,
    /// `None` when `sandbox.enabled` could not be read.
    pub sandbox_enabled: Option<bool>,
    /// Every setting, sorted by key.
    pub settings: Vec<DescribedSetting>,
    /// Keys some layer sets that are not settings (a misspelt variable, say); the value is not
    /// shown, since it could be a secret.
    pub ignored: Vec<(String, SettingSource)>,
    /// Why [`Settings::load_from`] would refuse this configuration, if it would.
    pub error: Option<ConfigError>,
}

impl Description {
    pub fn get(&self, key: &str) -> Option<&DescribedSetting> {
        self.settings.iter().find(|s| s.key == key)
    }
}

/// A line naming the environment and the sandbox, then a table of key, value and source.
impl fmt::Display for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sandbox = match self.sandbox_enabled {
            Some(true) => "on",
            Some(false) => "off",
            None => "unknown",
        };
        writeln!(f, "environment: {}, sandbox: {sandbox}", self.env.as_str())?;
        let values: Vec<String> = self.settings.iter().map(|s| printable(&s.value)).collect();
        let key_width = self.settings.iter().map(|s| s.key.chars().count()).max();
        let key_width = key_width.unwrap_or(0).max("KEY".len());
        let value_width = values.iter().map(|v| v.chars().count()).max();
        let value_width = value_width.unwrap_or(0).max("VALUE".len());
        writeln!(f, "{:key_width$}  {:value_width$}  SOURCE", "KEY", "VALUE")?;
        for (setting, value) in self.settings.iter().zip(&values) {
            writeln!(
                f,
                "{:key_width$}  {value:value_width$}  {}",
                setting.key, setting.source
            )?;
        }
        Ok(())
    }
}

/// One line per value, whatever it holds; an empty string shows as `""`.
fn printable(value: &str) -> String {
    if value.is_empty() {
        "\"\"".to_owned()
    } else if value.chars().any(char::is_control) {
        value.escape_debug().to_string()
    } else {
        value.to_owned()
    }
}

/// Every effective setting with its value and the layer that set it, and whatever
/// [`Settings::load_from`] would refuse. Secrets show as `(set, redacted)` or `(unset)`, the
/// database URL without its password.
///
/// A value that cannot be read as its type (`PORT=eighty`) shows as `(invalid)` and the rest is
/// read without it, so the table is still complete. `Err` only when not even that is possible,
/// e.g. a configuration file that is not TOML.
pub fn describe(
    env: AppEnv,
    dir: &Path,
    vars: &HashMap<String, String>,
) -> Result<Description, ConfigError> {
    let stacks = layer_stacks(env, dir, vars)?;
    let top = |key: &str| stacks.get(key).and_then(|stack| stack.last());

    let (settings, invalid, error) = match Settings::read(env, dir, vars) {
        Ok(settings) => {
            let error = settings.validate().err();
            (settings, BTreeMap::new(), error)
        }
        Err(ConfigError::Load(e)) => {
            let error = match type_error_key(&e).and_then(|key| Some((top(&key)?.0.clone(), key))) {
                Some((source, key)) => ConfigError::Unreadable {
                    name: match source {
                        SettingSource::Env(name) => name,
                        SettingSource::File(path) => format!("{key} in {}", path.display()),
                        SettingSource::Default => key,
                    },
                    reason: e.to_string(),
                },
                None => ConfigError::Load(e),
            };
            match read_around_invalid(env, &stacks) {
                Some((settings, invalid)) => (settings, invalid, Some(error)),
                None => return Err(error),
            }
        }
        Err(other) => return Err(other),
    };

    let view = serde_json::to_value(&settings)
        .map_err(|e| config::ConfigError::Message(format!("could not describe: {e}")))?;
    let mut shown = BTreeMap::new();
    flatten_view("", view, &mut shown);
    let mut described: Vec<DescribedSetting> = shown
        .iter()
        .map(|(key, value)| match invalid.get(key) {
            Some(source) => DescribedSetting {
                key: key.clone(),
                value: "(invalid)".to_owned(),
                source: source.clone(),
            },
            None => DescribedSetting {
                key: key.clone(),
                value: value.clone(),
                source: top(key).map_or(SettingSource::Default, |(s, _)| s.clone()),
            },
        })
        .collect();
    described.push(DescribedSetting {
        key: "app_env".to_owned(),
        value: env.as_str().to_owned(),
        source: if vars.contains_key("APP_ENV") {
            SettingSource::Env("APP_ENV".to_owned())
        } else {
            SettingSource::Default
        },
    });
    described.sort_by(|a, b| a.key.cmp(&b.key));

    let under_invalid = |key: &str| {
        invalid.keys().any(|bad| {
            key.strip_prefix(bad.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
        })
    };
    let ignored = stacks
        .iter()
        .filter(|(key, stack)| {
            let section = stack.iter().all(|(_, value)| is_empty_table(value));
            !shown.contains_key(*key) && !under_invalid(key) && !section
        })
        .filter_map(|(key, stack)| Some((key.clone(), stack.last()?.0.clone())))
        .collect();

    Ok(Description {
        env,
        sandbox_enabled: (!invalid.contains_key("sandbox.enabled"))
            .then(|| settings.sandbox_enabled()),
        settings: described,
        ignored,
        error,
    })
}

/// Per dotted key, every layer that sets it with its value, in loader order: the last one is
/// the effective one.
type Stacks = BTreeMap<String, Vec<(SettingSource, config::Value)>>;

fn layer_stacks(
    env: AppEnv,
    dir: &Path,
    vars: &HashMap<String, String>,
) -> Result<Stacks, ConfigError> {
    // The variable behind each `ENRICHER__…` key, found by reading each variable on its own.
    let mut names = HashMap::new();
    for (name, value) in vars {
        // The only variables the prefixed layer reads (it compares lowercased names).
        if name.to_lowercase().starts_with("enricher__") {
            let single = prefixed([(name.clone(), value.clone())]);
            for key in collect_flat(Box::new(single))?.into_keys() {
                names.insert(key, name.clone());
            }
        }
    }
    let mut stacks = Stacks::new();
    for layer in layers(env, dir, vars)? {
        for (key, value) in collect_flat(layer.source)? {
            let source = match &layer.kind {
                LayerKind::Defaults => SettingSource::Default,
                LayerKind::File(path) => SettingSource::File(path.clone()),
                LayerKind::Prefixed => {
                    SettingSource::Env(names.get(&key).cloned().unwrap_or_else(|| {
                        format!("ENRICHER__{}", key.replace('.', "__").to_uppercase())
                    }))
                }
                LayerKind::Variable(name) => SettingSource::Env((*name).to_owned()),
            };
            stacks.entry(key).or_default().push((source, value));
        }
    }
    Ok(stacks)
}

fn is_empty_table(value: &config::Value) -> bool {
    matches!(&value.kind, config::ValueKind::Table(t) if t.is_empty())
}

/// The dotted key a type error is about, when the `config` crate knows it.
fn type_error_key(e: &config::ConfigError) -> Option<String> {
    match e {
        config::ConfigError::Type { key: Some(key), .. }
        | config::ConfigError::At { key: Some(key), .. } => Some(key.clone()),
        _ => None,
    }
}

/// Reads the settings without the values that cannot be read as their type, each time falling
/// back to the layer below (or to nothing), and says which keys those were and who set them.
fn read_around_invalid(
    env: AppEnv,
    stacks: &Stacks,
) -> Option<(Settings, BTreeMap<String, SettingSource>)> {
    let mut stacks = stacks.clone();
    let mut invalid = BTreeMap::new();
    // Each round drops a layer's value for one key, so this ends.
    for _ in 0..=stacks.values().map(Vec::len).sum::<usize>() {
        let mut builder = Config::builder();
        for (key, stack) in &stacks {
            if let Some((_, value)) = stack.last() {
                builder = builder.set_override(key, value.clone()).ok()?;
            }
        }
        let error = match builder.build().ok()?.try_deserialize::<Settings>() {
            Ok(mut settings) => {
                settings.env = env;
                return Some((settings, invalid));
            }
            Err(e) => e,
        };
        let bad = type_error_key(&error)?;
        // The key itself, or the keys below it when a layer made a table of a plain value.
        let mut dropped = None;
        for (key, stack) in stacks.iter_mut() {
            let below = key
                .strip_prefix(bad.as_str())
                .is_some_and(|rest| rest.starts_with('.'));
            if *key == bad || below {
                let (source, _) = stack.pop()?;
                dropped.get_or_insert(source);
            }
        }
        invalid.entry(bad).or_insert(dropped?);
    }
    None
}

/// The redacted view as dotted keys and display values.
fn flatten_view(prefix: &str, value: serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, value) in fields {
                flatten_view(&dotted(prefix, &name), value, out);
            }
        }
        leaf => {
            let shown = match leaf {
                serde_json::Value::Null => UNSET.to_owned(),
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            out.insert(prefix.to_owned(), shown);
        }
    }
}
