//! No CPF, phone, email, name or credential appears unmasked in any log line, at any level,
//! in either log format, over a full run that also takes the error paths.

use std::io::Write;
use std::sync::{Arc, Mutex};

use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;
use crate::pipeline::{EMAIL, mock_maria};

const WEBHOOK_SECRET: &str = "webhook-secret-in-the-query";
const REQUEST_ID: &str = "req-e2e-7f3a";

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

async fn full_run() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.webhooks.c2s_token = Some(WEBHOOK_SECRET.to_owned().into());
    })
    .await;
    mock_maria(&app).await;
    // First delivery fails (warn path), the retry succeeds.
    Mock::given(method("POST"))
        .and(path_regex("/create_message$"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.c2s)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&app.c2s)
        .await;
    // A second lead whose phone is a placeholder and whose email Diretrix fails on.
    Mock::given(method("GET"))
        .and(path_regex("/Email/"))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(10)
        .mount(&app.diretrix)
        .await;

    let url = format!("{}/api/v1/webhooks/c2s?token={WEBHOOK_SECRET}", app.address);
    let rejected = app
        .http
        .post(format!(
            "{}/api/v1/webhooks/c2s?token=wrong-{WEBHOOK_SECRET}",
            app.address
        ))
        .json(&fixture("c2s_webhook_create.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 401);
    let response = app
        .http
        .post(&url)
        .header("x-request-id", REQUEST_ID)
        .json(&fixture("c2s_webhook_create.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-request-id"], REQUEST_ID, "propagated");
    let body: serde_json::Value = response.json().await.unwrap();
    let id = body["events"][0]["event_id"].as_i64().unwrap();
    assert_eq!(
        app.wait_final(id).await.outcome.as_deref(),
        Some("delivered")
    );

    let other = c2s_event(
        "L-2",
        "on_create_lead",
        "2026-11-20T10:00:00Z",
        Some("(11) 99999-9999"),
        Some("joao.lima@example.org"),
    );
    let response = app.http.post(&url).json(&other).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    let id = body["events"][0]["event_id"].as_i64().unwrap();
    let store = app.store().clone();
    wait_for(
        "the failing lookup to be recorded",
        std::time::Duration::from_secs(10),
        || {
            let store = store.clone();
            async move { store.event(id).await.ok()?.filter(|e| e.attempts >= 1) }
        },
    )
    .await;
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
    assert!(
        logs.contains("message delivered"),
        "the capture saw the run:\n{logs}"
    );
    let basic = "ZGlyZXRyaXgtdXNlci10ZXN0OmRpcmV0cml4LXBhc3N3b3JkLXRlc3QtdmFsdWU"; // base64 user:password
    let forbidden = [
        "52601815906",
        "526.018.159-06",
        "526018159",
        "11987654321",
        "987654321",
        "98765-4321",
        "98765 4321",
        "+5511987654321",
        EMAIL,
        "Maria.Souza",
        "maria.souza",
        "joao.lima",
        "99999-9999",
        "APARECIDA",
        "Aparecida",
        WEBHOOK_SECRET,
        C2S_TOKEN,
        WORK_TOKEN,
        DIRETRIX_PASSWORD,
        DIRETRIX_USER,
        basic,
    ];
    for (n, line) in logs.lines().enumerate() {
        for needle in forbidden {
            assert!(
                !line.contains(needle),
                "log line {n} leaks {needle:?}: {line}"
            );
        }
    }
}

/// Runs the full scenario with the service's own subscriber writing into memory.
async fn captured_run(json: bool) -> String {
    let capture = Capture::default();
    let subscriber = enricher::telemetry::subscriber(json, "trace", capture.clone());
    // As in production: records of crates that log through `log` (reqwest) reach tracing.
    let _ = tracing_log::LogTracer::init();
    let guard = tracing::subscriber::set_default(subscriber);
    full_run().await;
    drop(guard);
    String::from_utf8(capture.0.lock().unwrap().clone()).unwrap()
}

#[tokio::test]
async fn human_readable_logs_of_a_full_run_hold_no_personal_data_or_secrets() {
    assert_clean(&captured_run(false).await);
}

#[tokio::test]
async fn json_logs_of_a_full_run_hold_no_personal_data_or_secrets() {
    let logs = captured_run(true).await;
    assert_clean(&logs);
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every line is JSON");
    }
}
