//! Configuration: defaults, layering, and what production demands.

use std::collections::HashMap;
use std::path::Path;

use enricher::config::{AppEnv, ConfigError, Settings};
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
    ];
    for (pairs, name) in cases {
        let err = Settings::load_from(AppEnv::Development, Path::new("config"), &vars(&pairs))
            .unwrap_err();
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
}
