//! `enricher check-config`: which layer set each effective value, with secrets redacted.
//!
//! It reads the same layers [`Settings::load_from`](super::Settings::load_from) merges (the
//! list lives in `mod.rs`, so the description cannot drift from the loader) one at a time.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use config::Config;

use super::{
    AppEnv, ConfigError, LayerKind, Settings, UNSET, collect_flat, dotted, layers, prefixed,
};

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
