//! Settings: where they come from, what they default to, and which ones production demands.
//!
//! Layers, later wins: the defaults compiled into the binary (`config/default.toml`), the same
//! file on disk when present, `config/{APP_ENV}.toml`, then the environment
//! (`ENRICHER__SECTION__KEY`, plus the platform conventions `DATABASE_URL` and `PORT`).
//! Secrets are `SecretString` from the moment they are read, so no `Debug` of the settings can
//! print one. This module must not open connections or start anything.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The compiled-in defaults: the service runs from any directory with nothing configured.
const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read the configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("missing settings for {env}: {}", missing.join(", "))]
    Missing { env: String, missing: Vec<String> },
    #[error("invalid setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Which deployment this is; production turns the sandbox off and demands real credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

impl AppEnv {
    pub fn from_env() -> AppEnv {
        match std::env::var("APP_ENV").as_deref() {
            Ok("production") | Ok("prod") => AppEnv::Production,
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://…`; may hold a password, hence secret.
    pub url: SecretString,
    pub max_connections: u32,
}

impl DatabaseSettings {
    /// The URL without its password, for logs and `check-config`.
    pub fn redacted_url(&self) -> String {
        let raw = self.url.expose_secret();
        match url::Url::parse(raw) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            Ok(u) => u.to_string(),
            Err(_) => "<unparseable url>".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DiretrixSettings {
    pub base_url: Option<String>,
    pub user: Option<SecretString>,
    pub password: Option<SecretString>,
    pub timeout_ms: u64,
    pub price_per_call: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkApiSettings {
    pub base_url: Option<String>,
    pub token: Option<SecretString>,
    pub timeout_ms: u64,
    pub price_per_call: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct C2sSettings {
    pub base_url: Option<String>,
    pub token: Option<SecretString>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct WebhookSettings {
    pub c2s_token: Option<SecretString>,
    pub google_ads_key: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct AdminSettings {
    pub token: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SandboxSettings {
    /// `None` means "on unless production"; see [`Settings::sandbox_enabled`].
    pub enabled: Option<bool>,
    /// Simulated provider latency, so demos and benchmarks feel the cost of a miss.
    pub latency_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CacheSettings {
    pub ttl_secs: u64,
    pub negative_ttl_secs: u64,
    pub max_bytes: u64,
    /// Person data older than this is bought again on its next use.
    pub max_age_days: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// Events processed at once by this instance.
    pub concurrency: usize,
    /// How often idle workers look for due retries; new events wake them at once.
    pub poll_interval_ms: u64,
    /// How long a claimed event stays ours; after that another worker may take it over.
    pub lease_secs: u64,
    /// On shutdown, how long in-flight events may take to finish.
    pub drain_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeliverySettings {
    /// Attempts per event (resolution and delivery together) before it is dead-lettered.
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct MessageSettings {
    pub template_path: Option<String>,
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
        let builder = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::from(dir.join("default.toml")).required(false))
            .add_source(File::from(dir.join(format!("{}.toml", env.as_str()))).required(false))
            // No `try_parsing`: a token like `0123` must stay a string. Numbers and booleans
            // are converted from strings when the typed field asks for them.
            .add_source(
                Environment::with_prefix("ENRICHER")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(vars.clone().into_iter().collect())),
            )
            .set_override_option("database.url", vars.get("DATABASE_URL").cloned())?
            .set_override_option("server.port", vars.get("PORT").cloned())?;
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.env = env;
        settings.validate()?;
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

        let mut missing = Vec::new();
        if !self.sandbox_enabled() {
            let required: [(&str, bool); 7] = [
                (
                    "ENRICHER__DIRETRIX__BASE_URL",
                    self.diretrix.base_url.is_some(),
                ),
                ("ENRICHER__DIRETRIX__USER", self.diretrix.user.is_some()),
                (
                    "ENRICHER__DIRETRIX__PASSWORD",
                    self.diretrix.password.is_some(),
                ),
                (
                    "ENRICHER__WORK_API__BASE_URL",
                    self.work_api.base_url.is_some(),
                ),
                ("ENRICHER__WORK_API__TOKEN", self.work_api.token.is_some()),
                ("ENRICHER__C2S__BASE_URL", self.c2s.base_url.is_some()),
                ("ENRICHER__C2S__TOKEN", self.c2s.token.is_some()),
            ];
            missing.extend(
                required
                    .iter()
                    .filter(|(_, present)| !present)
                    .map(|(name, _)| (*name).to_owned()),
            );
        }
        if self.env == AppEnv::Production && self.webhooks.c2s_token.is_none() {
            // An open webhook in production lets anyone spend the provider budget.
            missing.push("ENRICHER__WEBHOOKS__C2S_TOKEN".to_owned());
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
