//! No CPF, phone, email, name, bought value or credential appears in any log line, at any
//! level, in either log format, on either backend, over a scripted run that takes every route
//! (webhooks accepted, duplicate, 401, 400, 422; every admin route, with personal data in the
//! path and the query) and every failure class (provider 5xx, timeout, malformed JSON, 404,
//! CRM 4xx and 5xx, a panic). The forbidden list is the whole bought record in raw and
//! formatted forms. The log filter is checked too: pinned dependency targets stay at warn.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::dump::maria_values;
use crate::helpers::*;

/// The fixture person: the same values as `tests/api/pipeline.rs`.
const CPF: &str = "52601815906";
const PHONE_NATIONAL: &str = "11987654321";
const EMAIL: &str = "maria.souza@example.com";

const WEBHOOK_SECRET: &str = "webhook-secret-in-the-query";
const REQUEST_ID: &str = "req-e2e-7f3a";
const MARIA_LEAD: &str = "a1b2c3d4e5f60718293a4b5c";
/// A valid synthetic CPF for the person whose Work API answer does not decode.
const DECODE_CPF: &str = "11144477735";
const STATIC_PANIC: &str = "a literal panic message reaches the log";

/// Personal data of the other leads of the run, beside Maria's.
const OTHERS: &[&str] = &[
    "21998765401",
    "99876-5401",
    "31998765402",
    "99876-5402",
    "41998765403",
    "99876-5403",
    DECODE_CPF,
    "111.444.777-35",
    "joao.lima",
    "ana.cinco",
    "pedro.tempo",
    "João Lima",
    "Ana Cinco",
    "Pedro Tempo",
    "Paulo Decode",
    "PAULO DECODE",
    "Rita Recusa",
    "rita.recusa",
];

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn lead(id: &str, name: &str, phone: Option<&str>, email: Option<&str>) -> Value {
    let mut event = c2s_event(id, "on_create_lead", "2026-11-20T10:00:00Z", phone, email);
    event["attributes"]["customer"]["name"] = json!(name);
    event
}

async fn mount(server: &MockServer, mock: Mock) {
    mock.mount(server).await;
}

/// Every provider answer the run needs; this test counts log lines, not calls.
async fn mock_everything(app: &TestApp) {
    let found = |name: &str, cpf: &str| json!([{"nome": name, "cpf": cpf}]);
    let diretrix_phone = |national: &str| {
        Mock::given(method("GET")).and(path(format!("/Consultas/Pessoa/Telefone/{national}")))
    };
    let diretrix_email = |email: &str| {
        Mock::given(method("GET")).and(path(format!("/Consultas/Pessoa/Email/{email}")))
    };
    for mock in [
        diretrix_phone(PHONE_NATIONAL)
            .respond_with(ResponseTemplate::new(200).set_body_json(fixture("diretrix_found.json"))),
        diretrix_email(EMAIL)
            .respond_with(ResponseTemplate::new(200).set_body_json(fixture("diretrix_found.json"))),
        // Timeout: slower than the configured provider timeout.
        diretrix_phone("21998765401").respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(Duration::from_secs(2)),
        ),
        // Found, but the person's data will not decode.
        diretrix_phone("31998765402").respond_with(
            ResponseTemplate::new(200).set_body_json(found("PAULO DECODE", DECODE_CPF)),
        ),
        // 404: nobody.
        diretrix_email("joao.lima@example.org").respond_with(ResponseTemplate::new(404)),
        diretrix_email("pedro.tempo@example.net").respond_with(ResponseTemplate::new(404)),
        diretrix_email("rita.recusa@example.net").respond_with(ResponseTemplate::new(404)),
        // 5xx.
        diretrix_email("ana.cinco@example.net").respond_with(ResponseTemplate::new(500)),
        // Nobody, for the lead the CRM rejects.
        diretrix_phone("41998765403")
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([]))),
    ] {
        mount(&app.diretrix, mock).await;
    }
    let work = |cpf: &str| {
        Mock::given(method("GET"))
            .and(path("/api"))
            .and(query_param("consulta", cpf))
    };
    mount(
        &app.work_api,
        work(CPF).respond_with(
            ResponseTemplate::new(200).set_body_json(fixture("work_api_person.json")),
        ),
    )
    .await;
    mount(
        &app.work_api,
        work(DECODE_CPF).respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .set_body_string(r#"{"DadosBasicos": {"nome": "PAULO DECODE", "cpf": 111444"#),
        ),
    )
    .await;
    // The CRM: 5xx once for Maria's first message, 4xx always for Rita's, 201 otherwise.
    Mock::given(method("POST"))
        .and(path_regex("/create_message$"))
        .and(body_partial_json(json!({"leadId": MARIA_LEAD})))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.c2s)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("/create_message$"))
        .and(body_partial_json(json!({"leadId": "L-rejected"})))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"error": "Rita Recusa"})))
        .with_priority(1)
        .mount(&app.c2s)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .with_priority(10)
        .mount(&app.c2s)
        .await;
}

async fn webhook(app: &TestApp, body: Value) -> Value {
    let response = app
        .http
        .post(format!(
            "{}/api/v1/webhooks/c2s?token={WEBHOOK_SECRET}",
            app.address
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

async fn event_id(app: &TestApp, body: Value) -> i64 {
    webhook(app, body).await["events"][0]["event_id"]
        .as_i64()
        .unwrap()
}

async fn admin(app: &TestApp, method: Method, path: &str, status: u16) -> Value {
    let response = app.admin(method.clone(), path).send().await.unwrap();
    assert_eq!(response.status(), status, "{method} {path}");
    response.json().await.unwrap_or(Value::Null)
}

async fn wait_attempted(app: &TestApp, id: i64) {
    let store = app.store().clone();
    wait_for(
        &format!("event {id} to fail an attempt"),
        Duration::from_secs(10),
        || {
            let store = store.clone();
            async move { store.event(id).await.ok()?.filter(|e| e.attempts >= 1) }
        },
    )
    .await;
}

/// The whole script. Runs inside the capturing subscriber, on this thread.
async fn scripted_run(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.webhooks.c2s_token = Some(WEBHOOK_SECRET.to_owned().into());
        s.admin.token = Some(ADMIN_TOKEN.to_owned().into());
        s.diretrix.timeout_ms = 300;
    })
    .await;
    mock_everything(&app).await;
    let url = format!("{}/api/v1/webhooks/c2s", app.address);
    let maria = fixture("c2s_webhook_create.json");

    // Webhooks: 401 (token in the query), 400 (broken JSON holding personal data), 422.
    let rejected = app
        .http
        .post(format!("{url}?token=wrong-{WEBHOOK_SECRET}"))
        .json(&maria)
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 401);
    let broken = app
        .http
        .post(format!("{url}?token={WEBHOOK_SECRET}"))
        .header("content-type", "application/json")
        .body(r#"{"id": "x", "attributes": {"customer": {"phone": "(11) 98765-4321", "email": "maria.souza@example.com""#)
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 400);
    let mut shapeless = maria.clone();
    shapeless["attributes"]["updated_at"] = json!("(11) 98765-4321");
    let shapeless = app
        .http
        .post(format!("{url}?token={WEBHOOK_SECRET}"))
        .json(&shapeless)
        .send()
        .await
        .unwrap();
    assert_eq!(shapeless.status(), 422);

    // Accepted (the CRM answers 503 once, then 201), then the same delivery again.
    let response = app
        .http
        .post(format!("{url}?token={WEBHOOK_SECRET}"))
        .header("x-request-id", REQUEST_ID)
        .json(&maria)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-request-id"], REQUEST_ID, "propagated");
    let body: Value = response.json().await.unwrap();
    let maria_id = body["events"][0]["event_id"].as_i64().unwrap();
    let event = app.wait_final(maria_id).await;
    assert_eq!(event.outcome.map(|o| o.as_str()), Some("delivered"));
    assert_eq!(event.attempts, 1, "the CRM's 503 was retried");
    let duplicate = webhook(&app, maria.clone()).await;
    assert_eq!(duplicate["events"][0]["status"], "duplicate");

    // Provider failures: timeout, malformed JSON, 404, 5xx; and a CRM 4xx.
    let timeout = event_id(
        &app,
        lead(
            "L-timeout",
            "Pedro Tempo",
            Some("(21) 99876-5401"),
            Some("pedro.tempo@example.net"),
        ),
    )
    .await;
    let decode = event_id(
        &app,
        lead("L-decode", "Paulo Decode", Some("(31) 99876-5402"), None),
    )
    .await;
    let nobody = event_id(
        &app,
        lead("L-nobody", "João Lima", None, Some("joao.lima@example.org")),
    )
    .await;
    let five = event_id(
        &app,
        lead("L-5xx", "Ana Cinco", None, Some("ana.cinco@example.net")),
    )
    .await;
    let crm_rejects = event_id(
        &app,
        lead(
            "L-rejected",
            "Rita Recusa",
            Some("(41) 99876-5403"),
            Some("rita.recusa@example.net"),
        ),
    )
    .await;
    for id in [timeout, decode, five] {
        wait_attempted(&app, id).await;
    }
    assert_eq!(
        app.wait_final(nobody).await.outcome.map(|o| o.as_str()),
        Some("delivered")
    );
    assert_eq!(app.wait_final(crm_rejects).await.state.as_str(), "dead");

    // Every admin route, with personal data in the query and the path.
    let unauthorized = app
        .http
        .get(format!("{}/cache/lookup?cpf={CPF}", app.address))
        .bearer_auth("wrong-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    admin(&app, Method::GET, "/cache/stats", 200).await;
    for query in [
        "phone=(11)%2098765-4321&reveal=true",
        "phone=%2B5511987654321",
        "email=Maria.Souza%40Example.COM&reveal=true",
        "email=joao.lima%40example.org",
        "cpf=526.018.159-06&reveal=true",
        "cpf=52601815906",
    ] {
        admin(&app, Method::GET, &format!("/cache/lookup?{query}"), 200).await;
    }
    admin(
        &app,
        Method::GET,
        "/cache/lookup?phone=(11)%208765-432",
        422,
    )
    .await;
    admin(&app, Method::GET, "/cache/lookup?cpf=526.018.159-07", 422).await;
    admin(
        &app,
        Method::DELETE,
        "/cache/entries?email=maria.souza%40example.com",
        200,
    )
    .await;
    admin(
        &app,
        Method::DELETE,
        "/cache/entries?email=joao.lima%40example.org&negative=true",
        200,
    )
    .await;
    admin(&app, Method::POST, "/cache/warm?limit=10", 200).await;
    admin(&app, Method::GET, "/api/v1/events", 200).await;
    admin(&app, Method::GET, "/api/v1/events?state=dead&limit=10", 200).await;
    admin(
        &app,
        Method::POST,
        &format!("/api/v1/events/{crm_rejects}/replay"),
        202,
    )
    .await;
    assert_eq!(app.wait_final(crm_rejects).await.state.as_str(), "dead");
    admin(&app, Method::POST, "/api/v1/events/replay?state=dead", 202).await;
    let refresh = admin(
        &app,
        Method::POST,
        &format!("/api/v1/leads/{MARIA_LEAD}/refresh"),
        202,
    )
    .await;
    let refreshed = app.wait_final(refresh["event_id"].as_i64().unwrap()).await;
    assert_eq!(refreshed.outcome.map(|o| o.as_str()), Some("delivered"));
    admin(&app, Method::DELETE, "/cache?negative=true", 200).await;
    let erased = admin(&app, Method::DELETE, "/api/v1/parties/526.018.159-06", 200).await;
    assert_eq!(erased["found"], true);
    admin(&app, Method::DELETE, &format!("/api/v1/parties/{CPF}"), 200).await;
    admin(&app, Method::DELETE, "/api/v1/parties/526.018.159-07", 422).await;
    for route in ["/health", "/ready", "/openapi.json"] {
        let response = app
            .http
            .get(format!("{}{route}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{route}");
    }
    app.scrape().await;

    // A panic, literal and formatted, logged by the service's panic hook.
    let panics = with_service_panic_hook(async {
        let mut panicked = 0;
        for literal in [true, false] {
            let task = tokio::spawn(async move {
                if literal {
                    panic!("a literal panic message reaches the log");
                }
                // Values known only at run time, as an `expect` on a parsed lead would hold.
                let phone = std::hint::black_box(String::from("(11) 98765-4321"));
                let cpf = std::hint::black_box(String::from("526.018.159-06"));
                panic!("lead phone {phone} cpf {cpf}");
            });
            panicked += usize::from(task.await.unwrap_err().is_panic());
        }
        panicked
    })
    .await;
    assert_eq!(panics, 2);
}

/// Runs `f` with the service's panic hook for panics on this thread; other tests running in
/// this process at the same time keep the default hook (and their failure messages).
async fn with_service_panic_hook<T>(f: impl std::future::Future<Output = T>) -> T {
    let this = std::thread::current().id();
    let previous = Arc::new(std::panic::take_hook());
    let fallback = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == this {
            enricher::telemetry::log_panic(info);
        } else {
            fallback(info);
        }
    }));
    let out = f.await;
    drop(std::panic::take_hook());
    let previous = Arc::try_unwrap(previous).unwrap_or_else(|_| panic!("hook still shared"));
    std::panic::set_hook(previous);
    out
}

/// Every forbidden value: Maria's whole record, the other leads' data, and every secret.
fn forbidden() -> Vec<String> {
    let basic = "ZGlyZXRyaXgtdXNlci10ZXN0OmRpcmV0cml4LXBhc3N3b3JkLXRlc3QtdmFsdWU"; // base64 user:password
    let mut values = maria_values();
    values.extend(OTHERS.iter().map(|v| v.to_lowercase()));
    values.extend(
        [
            WEBHOOK_SECRET,
            C2S_TOKEN,
            WORK_TOKEN,
            DIRETRIX_PASSWORD,
            DIRETRIX_USER,
            ADMIN_TOKEN,
            "wrong-admin-token",
            basic,
        ]
        .map(str::to_lowercase),
    );
    values
}

fn assert_clean(logs: &str) {
    let intake_lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("webhook event received"))
        .collect();
    assert!(
        intake_lines.iter().any(|l| l.contains(REQUEST_ID)),
        "the request id is on the request's lines: {intake_lines:?}"
    );
    // The capture saw the run, including each failure class and the panic hook.
    for seen in [
        "message delivered",
        "timeout",
        "decode",
        "event dead-lettered",
        STATIC_PANIC,
        enricher::telemetry::PANIC_MESSAGE_WITHHELD,
    ] {
        assert!(logs.contains(seen), "the capture lacks {seen:?}:\n{logs}");
    }
    let forbidden = forbidden();
    for (n, line) in logs.lines().enumerate() {
        if let Some(value) = crate::dump::leak(line, &forbidden) {
            panic!("log line {n} leaks {value:?}: {line}");
        }
    }
}

/// Runs the script with the service's own subscriber (trace level) writing into memory.
/// One capture at a time: each scoped subscriber's arrival and departure rebuilds tracing's
/// per-callsite interest cache, and a rebuild racing another test's registration can leave a
/// span callsite disabled for a moment (its lines then lack the request span).
static CAPTURE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn captured_run(backend: Backend, json: bool) -> String {
    let _one_at_a_time = CAPTURE.lock().await;
    let capture = Capture::default();
    let subscriber = enricher::telemetry::subscriber(json, "trace", capture.clone());
    // As in production: records of crates that log through `log` (reqwest) reach tracing.
    let _ = tracing_log::LogTracer::init();
    let guard = tracing::subscriber::set_default(subscriber);
    // Computed again now that this subscriber is registered, so no interest cached while it
    // was arriving stays stale.
    tracing::callsite::rebuild_interest_cache();
    scripted_run(backend).await;
    drop(guard);
    capture.text()
}

/// A JSON capture: every line parses, and no pinned dependency logs below warn.
fn assert_json_and_filtered(logs: &str) {
    let mut levels = std::collections::BTreeSet::new();
    for line in logs.lines() {
        let record: Value = serde_json::from_str(line).expect("every line is JSON");
        let target = record["target"].as_str().unwrap_or_default();
        let level = record["level"].as_str().unwrap_or_default();
        if target.starts_with("enricher") {
            levels.insert(level.to_owned());
        }
        let krate = target.split("::").next().unwrap_or_default();
        if [
            "reqwest",
            "hyper",
            "hyper_util",
            "h2",
            "rustls",
            "sqlx",
            "tower",
            "wiremock",
        ]
        .contains(&krate)
        {
            assert!(
                matches!(level, "WARN" | "ERROR"),
                "a pinned dependency logged at {level}: {line}"
            );
        }
    }
    assert!(
        levels.contains("DEBUG") || levels.contains("TRACE"),
        "the filter let the service's own debug lines through: {levels:?}"
    );
}

#[tokio::test]
async fn human_readable_logs_of_a_scripted_run_on_postgres_hold_no_personal_data_or_secrets() {
    assert_clean(&captured_run(Backend::Postgres, false).await);
}

#[tokio::test]
async fn human_readable_logs_of_a_scripted_run_on_sqlite_hold_no_personal_data_or_secrets() {
    assert_clean(&captured_run(Backend::Sqlite, false).await);
}

#[tokio::test]
async fn json_logs_of_a_scripted_run_on_postgres_hold_no_personal_data_or_secrets() {
    let logs = captured_run(Backend::Postgres, true).await;
    assert_clean(&logs);
    assert_json_and_filtered(&logs);
}

#[tokio::test]
async fn json_logs_of_a_scripted_run_on_sqlite_hold_no_personal_data_or_secrets() {
    let logs = captured_run(Backend::Sqlite, true).await;
    assert_clean(&logs);
    assert_json_and_filtered(&logs);
}

/// Emits one event per level for `target` through the service's subscriber with `spec`, and
/// returns which levels were written.
fn levels_written(spec: &str, target_is_reqwest: bool) -> Vec<&'static str> {
    let capture = Capture::default();
    let subscriber = enricher::telemetry::subscriber(true, spec, capture.clone());
    tracing::subscriber::with_default(subscriber, || {
        if target_is_reqwest {
            tracing::trace!(target: "reqwest::connect", "level TRACE");
            tracing::debug!(target: "reqwest::connect", "level DEBUG");
            tracing::info!(target: "reqwest::connect", "level INFO");
            tracing::warn!(target: "reqwest::connect", "level WARN");
        } else {
            tracing::trace!(target: "enricher::worker", "level TRACE");
            tracing::debug!(target: "enricher::worker", "level DEBUG");
            tracing::info!(target: "enricher::worker", "level INFO");
            tracing::warn!(target: "enricher::worker", "level WARN");
        }
    });
    let text = capture.text();
    ["TRACE", "DEBUG", "INFO", "WARN"]
        .into_iter()
        .filter(|level| text.contains(&format!("level {level}")))
        .collect()
}

#[test]
fn the_log_filter_holds_pinned_dependencies_at_warn_unless_the_spec_names_them() {
    assert_eq!(levels_written("trace", true), ["WARN"]);
    assert_eq!(
        levels_written("trace", false),
        ["TRACE", "DEBUG", "INFO", "WARN"]
    );
    assert_eq!(levels_written("info", false), ["INFO", "WARN"]);
    assert_eq!(
        levels_written("info,reqwest=debug", true),
        ["DEBUG", "INFO", "WARN"],
        "an operator who names the crate gets what they asked for"
    );
}
