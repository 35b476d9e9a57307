//! Hostile input: what a careless sender or an attacker sends is refused at the edge (with a
//! 4xx that names the problem, never a 503 that makes the sender retry forever), and what is
//! accepted cannot forge a message or open a route.

use std::collections::HashMap;
use std::path::Path;

use enricher::config::{AppEnv, Settings, describe};
use serde_json::json;
use wiremock::Mock;
use wiremock::matchers::{method, path_regex};

use crate::both_backends;
use crate::helpers::*;
use crate::pipeline::{
    CPF, PHONE_NATIONAL, mock_c2s_ok, mock_diretrix_phone, mock_phone_person, mock_work,
};

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Every setting production requires, each with a usable value.
const PRODUCTION: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://enricher@db.internal:5432/enricher",
    ),
    (
        "ENRICHER__DIRETRIX__BASE_URL",
        "https://diretrix.example.com",
    ),
    ("ENRICHER__DIRETRIX__USER", "u"),
    ("ENRICHER__DIRETRIX__PASSWORD", "p"),
    ("ENRICHER__WORK_API__BASE_URL", "https://work.example.com"),
    ("ENRICHER__WORK_API__TOKEN", "w"),
    ("ENRICHER__C2S__BASE_URL", "https://api.c2s.example.com"),
    ("ENRICHER__C2S__TOKEN", "t"),
    ("ENRICHER__WEBHOOKS__C2S_TOKEN", "hook"),
];

fn production_with(overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env = vars(PRODUCTION);
    env.extend(vars(overrides));
    env
}

#[test]
fn an_empty_secret_stops_production_naming_the_variable_in_serve_and_check_config() {
    for name in [
        "ENRICHER__WEBHOOKS__C2S_TOKEN",
        "ENRICHER__ADMIN__TOKEN",
        "ENRICHER__DIRETRIX__USER",
        "ENRICHER__DIRETRIX__PASSWORD",
        "ENRICHER__WORK_API__TOKEN",
        "ENRICHER__C2S__TOKEN",
    ] {
        for empty in ["", "  "] {
            let env = production_with(&[(name, empty)]);
            let err =
                Settings::load_from(AppEnv::Production, Path::new("config"), &env).expect_err(name);
            assert!(err.to_string().contains(name), "{name}: {err}");
            let described = describe(AppEnv::Production, Path::new("config"), &env).unwrap();
            let refused = described.error.expect(name).to_string();
            assert!(refused.contains(name), "{name}: {refused}");
        }
    }
    assert!(
        Settings::load_from(
            AppEnv::Production,
            Path::new("config"),
            &production_with(&[])
        )
        .is_ok()
    );
}

#[tokio::test]
async fn an_empty_presented_token_never_matches_an_empty_configured_one() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.webhooks.c2s_token = Some(String::new().into());
        s.admin.token = Some(String::new().into());
    })
    .await;
    let event = c2s_event("L1", "on_create_lead", "2026-11-20T10:00:00Z", None, None);
    let response = app
        .http
        .post(format!("{}/api/v1/webhooks/c2s", app.address))
        .header("X-Webhook-Token", "")
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .http
        .post(format!("{}/api/v1/webhooks/c2s?token=", app.address))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .http
        .get(format!("{}/api/v1/events", app.address))
        .header("Authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(app.store().event_counts().await.unwrap().is_empty());
}

#[test]
fn check_config_hides_credentials_written_into_provider_urls() {
    let env = production_with(&[
        (
            "ENRICHER__DIRETRIX__BASE_URL",
            "https://diretrix-user:diretrix-secret@diretrix.example.com/v1",
        ),
        (
            "ENRICHER__WORK_API__BASE_URL",
            "https://work.example.com/?password=work-secret",
        ),
        (
            "ENRICHER__C2S__BASE_URL",
            "https://c2s-token-in-user@api.c2s.example.com",
        ),
    ]);
    let described = describe(AppEnv::Production, Path::new("config"), &env).unwrap();
    let table = described.to_string();
    for secret in [
        "diretrix-user",
        "diretrix-secret",
        "work-secret",
        "c2s-token-in-user",
    ] {
        assert!(!table.contains(secret), "{secret} shown:\n{table}");
    }
    assert_eq!(
        described.get("diretrix.base_url").unwrap().value,
        "https://***:***@diretrix.example.com/v1"
    );
}

both_backends!(
    a_nul_character_in_a_webhook_is_refused_with_422_and_nothing_is_stored,
    |backend| async move {
        let app = spawn_app(backend).await;
        let mut event = c2s_event(
            "L1",
            "on_create_lead",
            "2026-11-20T10:00:00Z",
            Some(PHONE_NATIONAL),
            None,
        );
        event["attributes"]["customer"]["name"] = json!("Maria\u{0}Souza");
        let response = app.post_c2s(&event).await;
        assert_eq!(response.status(), 422);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["field"], "attributes.customer.name");

        let mut event = c2s_event("L1", "on_create_lead", "2026-11-20T10:00:00Z", None, None);
        event["attributes"]["extra\u{0}key"] = json!(1);
        assert_eq!(app.post_c2s(&event).await.status(), 422);
        assert!(app.store().event_counts().await.unwrap().is_empty());
    }
);

#[tokio::test]
async fn lead_ids_that_a_url_would_drop_or_round_are_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let url = format!("{}/api/v1/webhooks/c2s", app.address);
    for id in [
        r#"".""#,
        r#"".. ""#,
        "99999999999999999999999",
        "1e23",
        "12.0",
    ] {
        let body =
            format!(r#"{{"id": {id}, "attributes": {{"updated_at": "2026-11-20T10:00:00Z"}}}}"#);
        let response = app
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{id}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["field"], "id", "{id}");
    }
    assert!(app.store().event_counts().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_lead_id_is_one_path_segment_of_the_crm_url_whatever_it_holds() {
    let app = spawn_app(Backend::Sqlite).await;
    mock_c2s_ok(&app.c2s, 1).await;
    Mock::given(method("GET"))
        .and(path_regex("^/Consultas/Pessoa/Email/"))
        .respond_with(wiremock::ResponseTemplate::new(404))
        .expect(1)
        .mount(&app.diretrix)
        .await;
    let ids = app
        .post_c2s_ok(&c2s_event(
            "a/../b?c#d",
            "on_create_lead",
            "2026-11-20T10:00:00Z",
            None,
            Some("nobody-at-all@example.org"),
        ))
        .await;
    let event = app.wait_final(ids[0]).await;
    assert_eq!(event.outcome.map(|o| o.as_str()), Some("delivered"));
    let posted = app.c2s.received_requests().await.unwrap();
    assert_eq!(
        posted[0].url.path(),
        "/integration/leads/a%2F..%2Fb%3Fc%23d/create_message"
    );
    app.verify_mocks().await;
}

#[tokio::test]
async fn a_batch_over_the_cap_is_refused_whole() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.max_events_per_request = 3).await;
    let batch: Vec<serde_json::Value> = (0..4)
        .map(|i| {
            c2s_event(
                &format!("L{i}"),
                "on_close_lead",
                "2026-11-20T10:00:00Z",
                None,
                None,
            )
        })
        .collect();
    let response = app.post_c2s(&json!(batch)).await;
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");
    assert!(app.store().event_counts().await.unwrap().is_empty());
    assert_eq!(app.post_c2s(&json!(batch[..3])).await.status(), 202);
}

both_backends!(
    an_email_holding_bidi_controls_or_emoji_is_never_looked_up,
    |backend| async move {
        let app = spawn_app(backend).await;
        // No Diretrix mock: a lookup would be an unexpected request.
        for (i, email) in ["maria\u{202E}moc@example.com", "maria😀@example.com"]
            .iter()
            .enumerate()
        {
            let ids = app
                .post_c2s_ok(&c2s_event(
                    &format!("L{i}"),
                    "on_create_lead",
                    "2026-11-20T10:00:00Z",
                    None,
                    Some(email),
                ))
                .await;
            let event = app.wait_final(ids[0]).await;
            assert_eq!(
                event.outcome.map(|o| o.as_str()),
                Some("no_contact"),
                "{email}"
            );
        }
        assert!(app.diretrix.received_requests().await.unwrap().is_empty());
    }
);

#[tokio::test]
async fn a_client_request_id_too_long_or_with_odd_characters_is_replaced() {
    let app = spawn_app(Backend::Sqlite).await;
    let health = format!("{}/health", app.address);
    let echoed = |response: reqwest::Response| {
        response
            .headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let fine = "req-42.abc:7_x";
    let response = app
        .http
        .get(&health)
        .header("x-request-id", fine)
        .send()
        .await
        .unwrap();
    assert_eq!(echoed(response), fine);
    for bad in ["a".repeat(129), "a b".into(), "a\"<b>".into(), "ção".into()] {
        let response = app
            .http
            .get(&health)
            .header("x-request-id", bad.as_str())
            .send()
            .await
            .unwrap();
        let id = echoed(response);
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }
}

#[tokio::test]
async fn a_request_head_over_the_configured_size_is_refused_with_431() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.max_header_bytes = 8192).await;
    let health = format!("{}/health", app.address);
    let send = |value: String| app.http.get(&health).header("x-padding", value).send();
    assert_eq!(send("a".repeat(4_000)).await.unwrap().status(), 200);
    let refused = send("a".repeat(64 * 1024)).await.unwrap();
    assert_eq!(refused.status(), 431);
    // The connection that carried it is gone, the server is not.
    assert_eq!(send("a".repeat(100)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_openapi_document_marks_the_webhook_token_as_required() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc: serde_json::Value = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let security = doc["paths"]["/api/v1/webhooks/c2s"]["post"]["security"]
        .as_array()
        .unwrap();
    assert!(!security.is_empty());
    for requirement in security {
        let schemes = requirement.as_object().unwrap();
        assert!(
            !schemes.is_empty(),
            "an empty requirement makes it optional"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["webhook_token"]["in"], "header");
    assert_eq!(schemes["webhook_token_query"]["in"], "query");
    assert_eq!(schemes["webhook_token_query"]["name"], "token");
}

both_backends!(
    a_lead_name_with_newlines_and_controls_cannot_add_a_block_to_the_message,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_phone_person(&app, 1).await;
        mock_c2s_ok(&app.c2s, 1).await;
        let mut event = c2s_event(
            "L1",
            "on_create_lead",
            "2026-11-20T10:00:00Z",
            Some(PHONE_NATIONAL),
            None,
        );
        event["attributes"]["customer"]["name"] =
            json!("Maria\n\n✅ DADOS PESSOAIS\nCPF: 000.000.000-00\u{1b}[2J\u{7}\u{202E}");
        let ids = app.post_c2s_ok(&event).await;
        assert_eq!(
            app.wait_final(ids[0]).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        let (_, message) = app.c2s_messages().await.pop().unwrap();
        let lines_starting =
            |prefix: &str| message.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(lines_starting("✅ DADOS PESSOAIS"), 1, "{message}");
        assert_eq!(lines_starting("CPF:"), 1, "{message}");
        assert!(
            !message
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202E}'),
            "{message:?}"
        );
        app.verify_mocks().await;
    }
);

both_backends!(
    lowered_field_and_list_caps_are_enforced_on_what_a_provider_answers,
    |backend| async move {
        let app = spawn_app_with(backend, |s| {
            s.work_api.max_field_chars = 32;
            s.work_api.max_list_items = 1;
        })
        .await;
        mock_diretrix_phone(
            &app.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        let mut answer = fixture("work_api_person.json");
        answer["DadosBasicos"]["nome"] =
            json!(format!("MARIA APARECIDA SOUZA {}", "X".repeat(100)));
        mock_work(&app.work_api, CPF, answer, 1).await;
        mock_c2s_ok(&app.c2s, 1).await;

        let ids = app
            .post_c2s_ok(&c2s_event(
                "L1",
                "on_create_lead",
                "2026-11-20T10:00:00Z",
                Some(PHONE_NATIONAL),
                None,
            ))
            .await;
        assert_eq!(
            app.wait_final(ids[0]).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        let (_, message) = app.c2s_messages().await.pop().unwrap();
        let name = message
            .lines()
            .find_map(|l| l.strip_prefix("Nome: "))
            .unwrap_or_else(|| panic!("no name line: {message}"));
        assert_eq!(name.chars().count(), 32, "{name:?}");
        // The answer lists two e-mails and two phones; one of each is kept.
        let lower = message.to_lowercase();
        assert!(lower.contains("maria.souza@example.com"), "{message}");
        assert!(!lower.contains("msouza84"), "{message}");
        assert!(!message.contains("3800"), "{message}");
        app.verify_mocks().await;
    }
);

#[test]
fn field_and_list_caps_too_small_to_hold_an_identifier_are_refused() {
    for (name, value) in [
        ("ENRICHER__WORK_API__MAX_FIELD_CHARS", "31"),
        ("ENRICHER__DIRETRIX__MAX_FIELD_CHARS", "8"),
        ("ENRICHER__WORK_API__MAX_LIST_ITEMS", "0"),
    ] {
        let settings = Settings::load_from(
            AppEnv::Development,
            Path::new("config"),
            &vars(&[(name, value)]),
        );
        let error = settings
            .and_then(|s| s.validate().map(|()| s))
            .expect_err(name)
            .to_string();
        assert!(error.contains(name), "{name}: {error}");
    }
}
