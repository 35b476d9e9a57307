//! Settings: where they come from, what they default to, and which ones production demands.
//!
//! Layers, later wins: the defaults compiled into the binary (`config/default.toml`), the same
//! file on disk when present, `config/{APP_ENV}.toml`, then the environment
//! (`ENRICHER__SECTION__KEY`, plus the platform conventions `DATABASE_URL` and `PORT`).
//! Secrets are `SecretString` from the moment they are read, so no `Debug` of the settings can
//! print one. [`describe`] tells, for `enricher check-config`, which layer set each value, with
//! secrets redacted. This module must not open connections or start anything.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat, Source as _};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

mod describe;

pub use describe::{DescribedSetting, Description, SettingSource, describe};

/// The compiled-in defaults: the service runs from any directory with nothing configured.
const DEFAULTS: &str = include_str!("../../config/default.toml");

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
    /// Postgres only: claims (and messages kept for store-only events) commit without waiting
    /// for the WAL flush; the message and sending mark that follow a claim, committed before
    /// any message goes out, flush it. The end of a done event does not wait either (see
    /// [`crate::store::Inbox::finish_and_look`]).
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
    /// How long a connection with no request in flight stays open, any protocol. HTTP/1
    /// keep-alive is also bounded by `header_read_timeout_secs`; HTTP/2 only by this.
    pub idle_timeout_secs: u64,
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
    /// Longest candidate name kept from an answer, in characters; longer ones are cut.
    pub max_field_chars: usize,
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
    /// Longest text field kept from an answer, in characters; longer ones are cut.
    pub max_field_chars: usize,
    /// Most entries kept of each list in an answer (phones, e-mails, addresses, companies).
    pub max_list_items: usize,
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
    /// Largest answer body read (a page of listed leads, a created lead's id); a bigger one
    /// is a permanent provider error.
    pub max_answer_bytes: usize,
    /// Longest description of a lead created in C2S (Google Ads), in characters; longer is cut
    /// on a character boundary.
    pub description_max_chars: usize,
    /// How often recently updated leads are listed to catch lost webhooks; 0 turns it off.
    pub reconcile_secs: u64,
    /// With no stored watermark yet, how far back reconciliation looks.
    pub reconcile_lookback_hours: u64,
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
    /// The key of the erasure audit's CPF hash (HMAC-SHA256). Its own secret, so rotating
    /// the admin token keeps past erasures answerable. Required in production when the admin
    /// token is set; elsewhere [`DEV_ERASURE_KEY`] stands in.
    #[serde(default, serialize_with = "serialize_redacted")]
    pub erasure_key: Option<SecretString>,
}

/// The erasure key outside production when none is configured: fixed, so a development
/// database's audit stays answerable across restarts, and public, so never a protection.
pub const DEV_ERASURE_KEY: &str = "enricher-development-erasure-key";

impl AdminSettings {
    /// The configured erasure key, or [`DEV_ERASURE_KEY`] (production refuses to start
    /// without one when erasure is reachable; see `Settings::validate`).
    pub fn erasure_key(&self) -> SecretString {
        self.erasure_key
            .clone()
            .unwrap_or_else(|| SecretString::from(DEV_ERASURE_KEY))
    }
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
    /// A minijinja template replacing the built-in description of leads created in the CRM
    /// (`config/templates/google_ads_description.txt.j2`).
    #[serde(default)]
    pub description_template_path: Option<String>,
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
            ("ENRICHER__C2S__MAX_ANSWER_BYTES", self.c2s.max_answer_bytes),
            (
                "ENRICHER__C2S__RECONCILE_LOOKBACK_HOURS",
                self.c2s.reconcile_lookback_hours as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be at least 1".into(),
                });
            }
        }

        // Room for the cut marker and a readable start.
        if self.c2s.description_max_chars < crate::message::description::MIN_CHARS {
            return Err(ConfigError::Invalid {
                name: "ENRICHER__C2S__DESCRIPTION_MAX_CHARS",
                reason: format!(
                    "must be at least {}",
                    crate::message::description::MIN_CHARS
                ),
            });
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
        // The field cap also applies to CPFs, phones and CNPJs (a formatted CNPJ is 18
        // characters): below 32 it would cut identifiers, not just stop hostile text. A list
        // cap of 0 would drop every phone and address.
        for (name, value, least) in [
            (
                "ENRICHER__DIRETRIX__MAX_FIELD_CHARS",
                self.diretrix.max_field_chars,
                32,
            ),
            (
                "ENRICHER__WORK_API__MAX_FIELD_CHARS",
                self.work_api.max_field_chars,
                32,
            ),
            (
                "ENRICHER__WORK_API__MAX_LIST_ITEMS",
                self.work_api.max_list_items,
                1,
            ),
        ] {
            if value < least {
                return Err(ConfigError::Invalid {
                    name,
                    reason: format!("must be at least {least}"),
                });
            }
        }
        if self.server.idle_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                name: "ENRICHER__SERVER__IDLE_TIMEOUT_SECS",
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
            // Erasure is reachable once the admin token is set; its audit hash must then be
            // keyed by a secret of this deployment, not the public development key.
            if self.admin.token.is_some() && !is_set(&self.admin.erasure_key) {
                missing.push("ENRICHER__ADMIN__ERASURE_KEY".to_owned());
            }
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
