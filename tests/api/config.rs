//! Configuration: defaults, layering, and what production demands.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use enricher::config::{AppEnv, ConfigError, Description, SettingSource, Settings, describe};
use secrecy::ExposeSecret;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const PRODUCTION: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://enricher:pw@db.internal:5432/enricher",
    ),
    (
        "ENRICHER__DIRETRIX__BASE_URL",
        "https://diretrix.example.com",
    ),
    ("ENRICHER__DIRETRIX__USER", "u"),
    ("ENRICHER__DIRETRIX__PASSWORD", "p"),
    ("ENRICHER__WORK_API__BASE_URL", "https://work.example.com"),
    ("ENRICHER__WORK_API__TOKEN", "0123"),
    ("ENRICHER__C2S__BASE_URL", "https://api.c2s.example.com"),
    ("ENRICHER__C2S__TOKEN", "t"),
    ("ENRICHER__WEBHOOKS__C2S_TOKEN", "w"),
];

#[test]
fn with_nothing_configured_development_runs_on_sqlite_with_the_sandbox() {
    let s = Settings::load_from(AppEnv::Development, Path::new("config"), &HashMap::new()).unwrap();
    assert_eq!(s.database.url.expose_secret(), "sqlite://data/enricher.db");
    assert_eq!(s.server.port, 8080);
    assert_eq!(s.metrics.port, 9091);
    assert!(s.sandbox_enabled());
    assert_eq!(s.cache.ttl_secs, 86_400);
    assert_eq!(s.cache.negative_ttl_secs, 3_600);
    assert_eq!(s.cache.max_bytes, 64 * 1024 * 1024);
    assert_eq!(s.server.body_limit_bytes, 1024 * 1024);
}

#[test]
fn the_compiled_in_defaults_work_from_any_directory() {
    let empty = tempfile::tempdir().unwrap();
    let s = Settings::load_from(AppEnv::Development, empty.path(), &HashMap::new()).unwrap();
    assert_eq!(s.server.port, 8080);
}

#[test]
fn production_without_provider_settings_names_every_missing_one() {
    let err =
        Settings::load_from(AppEnv::Production, Path::new("config"), &HashMap::new()).unwrap_err();
    let text = err.to_string();
    for name in [
        "ENRICHER__DIRETRIX__BASE_URL",
        "ENRICHER__DIRETRIX__USER",
        "ENRICHER__DIRETRIX__PASSWORD",
        "ENRICHER__WORK_API__BASE_URL",
        "ENRICHER__WORK_API__TOKEN",
        "ENRICHER__C2S__BASE_URL",
        "ENRICHER__C2S__TOKEN",
        "ENRICHER__WEBHOOKS__C2S_TOKEN",
    ] {
        assert!(text.contains(name), "{name} not named in: {text}");
    }
    assert!(matches!(err, ConfigError::Missing { .. }));
}

#[test]
fn production_with_every_setting_turns_the_sandbox_off_and_keeps_secrets_as_written() {
    let s =
        Settings::load_from(AppEnv::Production, Path::new("config"), &vars(PRODUCTION)).unwrap();
    assert!(!s.sandbox_enabled());
    assert_eq!(
        s.work_api.token.as_ref().unwrap().expose_secret(),
        "0123",
        "no number parsing of secrets"
    );
    let debug = format!("{s:?}");
    for secret in ["pw@", "0123"] {
        assert!(!debug.contains(secret), "Debug leaks {secret}");
    }
    assert_eq!(
        s.database.redacted_url(),
        "postgres://enricher:***@db.internal:5432/enricher"
    );
}

#[test]
fn environment_variables_override_files_and_platform_names_work() {
    let s = Settings::load_from(
        AppEnv::Development,
        Path::new("config"),
        &vars(&[
            ("PORT", "9000"),
            ("ENRICHER__CACHE__TTL_SECS", "7200"),
            ("ENRICHER__METRICS__PORT", "9500"),
        ]),
    )
    .unwrap();
    assert_eq!(s.server.port, 9000);
    assert_eq!(s.cache.ttl_secs, 7200);
    assert_eq!(s.metrics.port, 9500);
}

#[test]
fn google_ads_and_reconciliation_settings_default_to_off_5000_characters_and_24_hours() {
    let s = Settings::load_from(AppEnv::Development, Path::new("config"), &HashMap::new()).unwrap();
    assert_eq!(s.c2s.description_max_chars, 5000);
    assert_eq!(s.c2s.reconcile_secs, 0);
    assert_eq!(s.c2s.reconcile_lookback_hours, 24);
    assert!(s.webhooks.google_ads_key.is_none());
}

#[test]
fn invalid_values_are_refused_with_the_setting_named() {
    let cases = [
        (vec![("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
        (
            vec![("ENRICHER__WORKERS__CONCURRENCY", "0")],
            "ENRICHER__WORKERS__CONCURRENCY",
        ),
        (
            vec![("ENRICHER__DIRETRIX__BASE_URL", "not a url")],
            "ENRICHER__DIRETRIX__BASE_URL",
        ),
        (
            vec![("ENRICHER__CACHE__NEGATIVE_TTL_SECS", "999999")],
            "ENRICHER__CACHE__NEGATIVE_TTL_SECS",
        ),
        (vec![("PORT", "eighty")], "port"),
        (
            vec![("ENRICHER__C2S__DESCRIPTION_MAX_CHARS", "50")],
            "ENRICHER__C2S__DESCRIPTION_MAX_CHARS",
        ),
        (
            vec![("ENRICHER__C2S__MAX_ANSWER_BYTES", "0")],
            "ENRICHER__C2S__MAX_ANSWER_BYTES",
        ),
        (
            vec![("ENRICHER__C2S__RECONCILE_LOOKBACK_HOURS", "0")],
            "ENRICHER__C2S__RECONCILE_LOOKBACK_HOURS",
        ),
        (
            vec![("ENRICHER__SERVER__GROUP_COMMIT_IN_FLIGHT", "0")],
            "ENRICHER__SERVER__GROUP_COMMIT_IN_FLIGHT",
        ),
        (
            vec![("ENRICHER__SERVER__GROUP_COMMIT_IN_FLIGHT", "65")],
            "ENRICHER__SERVER__GROUP_COMMIT_IN_FLIGHT",
        ),
    ];
    for (pairs, name) in cases {
        let err = Settings::load_from(AppEnv::Development, Path::new("config"), &vars(&pairs))
            .unwrap_err();
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
}

// check-config: `describe` and the `enricher check-config` command.

/// The value and source `check-config` shows for `key`.
fn shown(d: &Description, key: &str) -> (String, String) {
    let s = d
        .get(key)
        .unwrap_or_else(|| panic!("{key} not described:\n{d}"));
    (s.value.clone(), s.source.to_string())
}

fn pair(value: &str, source: &str) -> (String, String) {
    (value.to_owned(), source.to_owned())
}

/// Secrets with values that cannot appear in a table by accident.
const SECRETS: &[(&str, &str)] = &[
    ("ENRICHER__DIRETRIX__USER", "diretrix-user-4f1c"),
    ("ENRICHER__DIRETRIX__PASSWORD", "diretrix-pass-9a7e"),
    ("ENRICHER__WORK_API__TOKEN", "work-token-77b2"),
    ("ENRICHER__C2S__TOKEN", "c2s-token-31d0"),
    ("ENRICHER__WEBHOOKS__C2S_TOKEN", "webhook-token-c5e8"),
    ("ENRICHER__WEBHOOKS__GOOGLE_ADS_KEY", "ads-key-0b6d"),
    ("ENRICHER__ADMIN__TOKEN", "admin-token-e2a4"),
    ("ENRICHER__ADMIN__ERASURE_KEY", "erasure-key-8d3b"),
];

#[test]
fn check_config_names_the_layer_that_set_each_value() {
    let dir = tempfile::tempdir().unwrap();
    let production_toml = dir.path().join("production.toml");
    std::fs::write(
        &production_toml,
        "[sandbox]\nenabled = false\n\n[cache]\nmax_age_days = 30\n",
    )
    .unwrap();
    let mut env = vars(PRODUCTION);
    env.extend(vars(&[
        ("APP_ENV", "production"),
        ("PORT", "9000"),
        ("ENRICHER__CACHE__TTL_SECS", "7200"),
    ]));

    let d = describe(AppEnv::Production, dir.path(), &env).unwrap();

    assert!(d.error.is_none(), "{:?}", d.error);
    assert_eq!(shown(&d, "cache.max_bytes"), pair("67108864", "default"));
    assert_eq!(shown(&d, "server.port"), pair("9000", "env: PORT"));
    assert_eq!(
        shown(&d, "cache.ttl_secs"),
        pair("7200", "env: ENRICHER__CACHE__TTL_SECS")
    );
    let from_file = format!("file: {}", production_toml.display());
    assert_eq!(shown(&d, "cache.max_age_days"), pair("30", &from_file));
    assert_eq!(shown(&d, "sandbox.enabled"), pair("false", &from_file));
    assert_eq!(
        shown(&d, "diretrix.base_url"),
        pair(
            "https://diretrix.example.com",
            "env: ENRICHER__DIRETRIX__BASE_URL"
        )
    );
    assert_eq!(shown(&d, "app_env"), pair("production", "env: APP_ENV"));
    assert_eq!(d.sandbox_enabled, Some(false));
    assert!(
        d.to_string()
            .starts_with("environment: production, sandbox: off\n"),
        "{d}"
    );
}

#[test]
fn check_config_names_the_repository_config_files_it_read() {
    let d = describe(AppEnv::Production, Path::new("config"), &vars(PRODUCTION)).unwrap();
    assert_eq!(
        shown(&d, "server.host"),
        pair("0.0.0.0", "file: config/default.toml")
    );
    assert_eq!(
        shown(&d, "sandbox.enabled"),
        pair("false", "file: config/production.toml")
    );
}

#[test]
fn check_config_shows_every_setting_even_those_nothing_sets_sorted_by_key() {
    let empty = tempfile::tempdir().unwrap();
    let d = describe(AppEnv::Development, empty.path(), &HashMap::new()).unwrap();

    assert!(d.error.is_none(), "{:?}", d.error);
    for key in [
        "diretrix.base_url",
        "diretrix.user",
        "diretrix.password",
        "work_api.base_url",
        "work_api.token",
        "c2s.base_url",
        "c2s.token",
        "webhooks.c2s_token",
        "webhooks.google_ads_key",
        "admin.token",
        "sandbox.enabled",
        "message.template_path",
    ] {
        assert_eq!(shown(&d, key), pair("(unset)", "default"), "{key}");
    }
    assert_eq!(shown(&d, "app_env"), pair("development", "default"));
    assert_eq!(
        shown(&d, "database.url"),
        pair("sqlite://data/enricher.db", "default")
    );
    assert_eq!(d.sandbox_enabled, Some(true));
    assert!(
        d.settings.windows(2).all(|w| w[0].key < w[1].key),
        "not sorted:\n{d}"
    );

    // A header line, a column header, then one aligned row per setting.
    let text = d.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "environment: development, sandbox: on");
    assert_eq!(lines.len(), d.settings.len() + 2);
    let value_column = lines[1].find("VALUE").unwrap();
    let source_column = lines[1].find("SOURCE").unwrap();
    for (line, setting) in lines[2..].iter().zip(&d.settings) {
        assert!(line.starts_with(&setting.key), "{line}");
        assert_eq!(line[value_column..].find(&setting.value), Some(0), "{line}");
        assert_eq!(line[source_column..], setting.source.to_string(), "{line}");
    }
}

#[test]
fn check_config_never_shows_a_secret_set_in_the_environment_and_says_it_is_redacted() {
    let mut env = vars(PRODUCTION);
    env.extend(vars(SECRETS));
    env.insert(
        "DATABASE_URL".into(),
        "postgres://enricher:db-pass-5c3f@db.internal:5432/enricher".into(),
    );

    let d = describe(AppEnv::Production, Path::new("config"), &env).unwrap();

    assert!(d.error.is_none(), "{:?}", d.error);
    let text = d.to_string();
    let debug = format!("{d:?}");
    for (name, secret) in SECRETS.iter().chain(&[("DATABASE_URL", "db-pass-5c3f")]) {
        assert!(!text.contains(secret), "{name} leaks in the table:\n{text}");
        assert!(!debug.contains(secret), "{name} leaks in Debug");
    }
    for (key, name) in [
        ("diretrix.user", "ENRICHER__DIRETRIX__USER"),
        ("diretrix.password", "ENRICHER__DIRETRIX__PASSWORD"),
        ("work_api.token", "ENRICHER__WORK_API__TOKEN"),
        ("c2s.token", "ENRICHER__C2S__TOKEN"),
        ("webhooks.c2s_token", "ENRICHER__WEBHOOKS__C2S_TOKEN"),
        (
            "webhooks.google_ads_key",
            "ENRICHER__WEBHOOKS__GOOGLE_ADS_KEY",
        ),
        ("admin.token", "ENRICHER__ADMIN__TOKEN"),
        ("admin.erasure_key", "ENRICHER__ADMIN__ERASURE_KEY"),
    ] {
        assert_eq!(
            shown(&d, key),
            pair("(set, redacted)", &format!("env: {name}"))
        );
    }
}

#[test]
fn check_config_masks_the_database_password() {
    let env = vars(&[(
        "DATABASE_URL",
        "postgres://enricher:db-pass-5c3f@db.internal:5432/enricher?sslpassword=key-pass-8d21&application_name=enricher",
    )]);
    let d = describe(AppEnv::Development, Path::new("config"), &env).unwrap();

    assert_eq!(
        shown(&d, "database.url"),
        pair(
            "postgres://enricher:***@db.internal:5432/enricher?sslpassword=***&application_name=enricher",
            "env: DATABASE_URL"
        )
    );
    let text = d.to_string();
    assert!(!text.contains("db-pass-5c3f") && !text.contains("key-pass-8d21"));
}

#[test]
fn check_config_refuses_invalid_values_naming_the_variable_and_still_shows_the_rest() {
    let cases = [
        (vec![("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
        (
            vec![("ENRICHER__WORKERS__CONCURRENCY", "0")],
            "ENRICHER__WORKERS__CONCURRENCY",
        ),
        (
            vec![("ENRICHER__DIRETRIX__BASE_URL", "not a url")],
            "ENRICHER__DIRETRIX__BASE_URL",
        ),
        (
            vec![("ENRICHER__CACHE__NEGATIVE_TTL_SECS", "999999")],
            "ENRICHER__CACHE__NEGATIVE_TTL_SECS",
        ),
        (vec![("PORT", "eighty")], "PORT"),
        (
            vec![("ENRICHER__CACHE__MAX_BYTES", "lots")],
            "ENRICHER__CACHE__MAX_BYTES",
        ),
    ];
    for (pairs, name) in cases {
        let d = describe(AppEnv::Development, Path::new("config"), &vars(&pairs)).unwrap();
        let error = d
            .error
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(error.contains(name), "{name} not named in: {error:?}");
        assert_eq!(shown(&d, "workers.lease_secs").0, "15", "{name}");
    }

    // A value that cannot be read as its type shows as invalid, attributed to its source.
    let d = describe(
        AppEnv::Development,
        Path::new("config"),
        &vars(&[("PORT", "eighty")]),
    )
    .unwrap();
    assert_eq!(shown(&d, "server.port"), pair("(invalid)", "env: PORT"));
}

#[test]
fn check_config_names_the_file_and_key_of_an_unreadable_value_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("development.toml");
    std::fs::write(&file, "[workers]\nconcurrency = \"many\"\n").unwrap();

    let d = describe(AppEnv::Development, dir.path(), &HashMap::new()).unwrap();

    let error = d.error.as_ref().unwrap().to_string();
    assert!(
        error.contains(&format!("workers.concurrency in {}", file.display())),
        "{error}"
    );
    assert_eq!(
        d.get("workers.concurrency").unwrap().source,
        SettingSource::File(file)
    );
}

#[test]
fn check_config_in_production_without_providers_still_shows_the_table_and_names_the_missing() {
    let d = describe(
        AppEnv::Production,
        Path::new("config"),
        &vars(&[("APP_ENV", "production")]),
    )
    .unwrap();
    let error = d
        .error
        .as_ref()
        .expect("production without providers is refused");
    assert!(matches!(error, ConfigError::Missing { .. }));
    for name in [
        "ENRICHER__DIRETRIX__BASE_URL",
        "ENRICHER__WEBHOOKS__C2S_TOKEN",
    ] {
        assert!(error.to_string().contains(name), "{name}: {error}");
    }
    assert_eq!(d.sandbox_enabled, Some(false));
    assert_eq!(shown(&d, "diretrix.base_url"), pair("(unset)", "default"));
}

#[test]
fn check_config_lists_a_misspelt_variable_as_ignored_without_its_value() {
    let env = vars(&[("ENRICHER__ADMIN__TOKNE", "typo-secret-61fa")]);
    let d = describe(AppEnv::Development, Path::new("config"), &env).unwrap();

    assert_eq!(
        d.ignored,
        vec![(
            "admin.tokne".to_owned(),
            SettingSource::Env("ENRICHER__ADMIN__TOKNE".to_owned())
        )]
    );
    assert!(!format!("{d}{d:?}").contains("typo-secret-61fa"));
}

/// `enricher check-config` run as an operator would, with nothing but `env` (and `PATH`) in
/// its environment, from a directory without `config/`.
fn run_check_config(env: &[(&str, &str)]) -> (Output, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_enricher"));
    command
        .arg("check-config")
        .env_clear()
        .current_dir(dir.path())
        .envs(env.iter().copied());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    let output = command.output().expect("run enricher check-config");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

#[test]
fn the_check_config_command_fails_in_production_without_provider_settings_naming_them() {
    let (output, stdout, stderr) = run_check_config(&[("APP_ENV", "production")]);

    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("ENRICHER__DIRETRIX__BASE_URL"), "{stderr}");
    assert!(
        stdout.starts_with("environment: production, sandbox: off\n"),
        "{stdout}"
    );
    assert!(stdout.contains("diretrix.base_url"), "{stdout}");
}

#[test]
fn the_check_config_command_prints_the_table_without_the_secret_and_succeeds() {
    let (output, stdout, stderr) =
        run_check_config(&[("ENRICHER__WORK_API__TOKEN", "some-secret-value")]);

    assert!(output.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("work_api.token "))
        .unwrap_or_else(|| panic!("no work_api.token in:\n{stdout}"));
    assert!(line.contains("(set, redacted)"), "{line}");
    assert!(line.contains("env: ENRICHER__WORK_API__TOKEN"), "{line}");
    assert!(!stdout.contains("some-secret-value"), "{stdout}");
    assert!(!stderr.contains("some-secret-value"), "{stderr}");
}

#[test]
fn the_check_config_command_shows_an_unreadable_value_and_names_its_variable() {
    let (output, stdout, stderr) = run_check_config(&[("PORT", "eighty")]);

    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("PORT"), "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("server.port ") && l.contains("(invalid)")),
        "{stdout}"
    );
}

#[test]
fn production_with_an_admin_token_requires_an_erasure_key_of_its_own() {
    let mut env = vars(PRODUCTION);
    env.extend(vars(&[("ENRICHER__ADMIN__TOKEN", "admin-token-e2a4")]));
    let err = Settings::load_from(AppEnv::Production, Path::new("config"), &env).unwrap_err();
    assert!(
        err.to_string().contains("ENRICHER__ADMIN__ERASURE_KEY"),
        "{err}"
    );
    for empty in ["", "  "] {
        env.insert("ENRICHER__ADMIN__ERASURE_KEY".into(), empty.into());
        let err = Settings::load_from(AppEnv::Production, Path::new("config"), &env).unwrap_err();
        assert!(
            err.to_string().contains("ENRICHER__ADMIN__ERASURE_KEY"),
            "{err}"
        );
    }
    env.insert(
        "ENRICHER__ADMIN__ERASURE_KEY".into(),
        "erasure-key-8d3b".into(),
    );
    Settings::load_from(AppEnv::Production, Path::new("config"), &env).unwrap();
}
