//! Intake: authentication before parsing, shapes, limits, duplicates, and durability.

use futures::StreamExt;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

const SECRET: &str = "webhook-secret-test-value";

fn with_secret(s: &mut enricher::config::Settings) {
    s.webhooks.c2s_token = Some(SECRET.to_owned().into());
}

async fn inbox_is_empty(app: &TestApp) -> bool {
    app.store().event_counts().await.unwrap().is_empty()
}

#[tokio::test]
async fn a_request_without_the_secret_is_rejected_before_its_body_is_read() {
    let app = spawn_app_with(Backend::Sqlite, with_secret).await;
    let url = format!("{}/api/v1/webhooks/c2s", app.address);
    let event = c2s_event(
        "L1",
        "on_create_lead",
        "2026-11-20T14:03:11-03:00",
        None,
        None,
    );

    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("no token", app.http.post(&url).json(&event)),
        (
            "wrong header token",
            app.http
                .post(&url)
                .header("X-Webhook-Token", "nope")
                .json(&event),
        ),
        (
            "wrong query token",
            app.http.post(format!("{url}?token=nope")).json(&event),
        ),
        (
            "broken JSON without a token",
            app.http
                .post(&url)
                .header("content-type", "application/json")
                .body("{not json"),
        ),
    ];
    for (case, request) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{case}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{case}");
    }

    // A body that never ends: only a server that answers without reading it can answer at
    // all. The deadline is for a broken build; a correct one answers at once.
    let endless = || {
        let start = futures::stream::once(async {
            Ok::<_, std::io::Error>(br#"{"id": "L1", "attributes": {"pad": ""#.to_vec())
        });
        reqwest::Body::wrap_stream(start.chain(futures::stream::pending()))
    };
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("no token", app.http.post(&url)),
        (
            "wrong header token",
            app.http.post(&url).header("X-Webhook-Token", "nope"),
        ),
        (
            "wrong query token",
            app.http.post(format!("{url}?token=nope")),
        ),
    ];
    for (case, request) in cases {
        let request = request
            .header("content-type", "application/json")
            .body(endless());
        let response = tokio::time::timeout(std::time::Duration::from_secs(5), request.send())
            .await
            .unwrap_or_else(|_| panic!("{case}: no answer while the body was still arriving"))
            .unwrap();
        assert_eq!(response.status(), 401, "{case}");
    }
    assert!(inbox_is_empty(&app).await, "nothing may be stored");
}

#[tokio::test]
async fn the_secret_is_accepted_in_the_header_or_in_the_query() {
    let app = spawn_app_with(Backend::Sqlite, with_secret).await;
    let url = format!("{}/api/v1/webhooks/c2s", app.address);
    let response = app
        .http
        .post(&url)
        .header("X-Webhook-Token", SECRET)
        .json(&c2s_event(
            "L1",
            "on_close_lead",
            "2026-11-20T10:00:00Z",
            None,
            None,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let response = app
        .http
        .post(format!("{url}?token={SECRET}"))
        .json(&c2s_event(
            "L2",
            "on_close_lead",
            "2026-11-20T10:00:00Z",
            None,
            None,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

both_backends!(
    single_and_array_bodies_answer_per_event_with_duplicates_recognised,
    |backend| async move {
        let app = spawn_app(backend).await;
        let first = app
            .post_c2s(&c2s_event(
                "L1",
                "on_close_lead",
                "2026-11-20T14:03:11-03:00",
                None,
                None,
            ))
            .await;
        assert_eq!(first.status(), 202);
        let first: serde_json::Value = first.json().await.unwrap();
        assert_eq!(first["events"][0]["status"], "accepted");
        assert_eq!(first["events"][0]["lead_id"], "L1");

        // The same instant in the two other formats, plus a new event, in one array.
        let batch = json!([
            c2s_event(
                "L1",
                "on_close_lead",
                "2026-11-20 14:03:11 -0300",
                None,
                None
            ),
            c2s_event("L1", "on_close_lead", "2026-11-20 17:03:11", None, None),
            c2s_event("L1", "on_close_lead", "2026-11-20 17:03:12.250", None, None),
        ]);
        let response = app.post_c2s(&batch).await;
        assert_eq!(response.status(), 202);
        let body: serde_json::Value = response.json().await.unwrap();
        let statuses: Vec<&str> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["duplicate", "duplicate", "accepted"]);
        assert_eq!(app.store().events(None, 10).await.unwrap().len(), 2);
    }
);

both_backends!(
    malformed_requests_get_the_right_status_and_leave_nothing_behind,
    |backend| async move {
        let app = spawn_app(backend).await;
        let url = format!("{}/api/v1/webhooks/c2s", app.address);
        let json_ct = "application/json";
        // (case, content type, body, expected status, field named in the error)
        type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, Option<&'a str>);
        let cases: Vec<Case> = vec![
        ("not JSON", Some(json_ct), b"{\"id\": ".to_vec(), 400, None),
        ("no content type", None, b"{}".to_vec(), 415, None),
        ("text/plain", Some("text/plain"), b"{}".to_vec(), 415, None),
        ("missing id", Some(json_ct), br#"{"attributes": {"updated_at": "2026-11-20T10:00:00Z"}}"#.to_vec(), 422, Some("id")),
        ("missing attributes", Some(json_ct), br#"{"id": "L1"}"#.to_vec(), 422, Some("attributes")),
        ("attributes not an object", Some(json_ct), br#"{"id": "L1", "attributes": 3}"#.to_vec(), 422, Some("attributes")),
        ("bad updated_at", Some(json_ct), br#"{"id": "L1", "attributes": {"updated_at": "soon"}}"#.to_vec(), 422, Some("attributes.updated_at")),
        ("second event of a batch broken", Some(json_ct),
            br#"[{"id": "L1", "attributes": {"updated_at": "2026-11-20T10:00:00Z"}}, {"id": "L2"}]"#.to_vec(),
            422, Some("[1].attributes")),
        ("empty array", Some(json_ct), b"[]".to_vec(), 422, Some("(body)")),
        ("over the 1 MiB limit", Some(json_ct), {
            let mut big = br#"{"id": "L1", "attributes": {"updated_at": "2026-11-20T10:00:00Z", "pad": ""#.to_vec();
            big.extend(std::iter::repeat_n(b'x', 1024 * 1024));
            big.extend(br#""}}"#);
            big
        }, 413, None),
    ];
        for (case, content_type, body, status, field) in cases {
            let mut request = app.http.post(&url).body(body);
            if let Some(ct) = content_type {
                request = request.header("content-type", ct);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{case}");
            let json: serde_json::Value = response.json().await.unwrap();
            assert!(json["message"].is_string(), "{case}: a JSON error body");
            if let Some(field) = field {
                assert_eq!(json["field"], field, "{case}");
            }
        }
        assert!(inbox_is_empty(&app).await, "nothing may be stored");
    }
);

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_without_a_content_length() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.body_limit_bytes = 1024).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b' '; 800]), Ok(vec![b' '; 800])];
    let response = app
        .http
        .post(format!("{}/api/v1/webhooks/c2s", app.address))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(inbox_is_empty(&app).await);
}

#[tokio::test]
async fn with_the_database_gone_intake_answers_503_so_the_sender_retries() {
    let app = spawn_app(Backend::Postgres).await;
    app.db.destroy().await;
    let response = app
        .post_c2s(&c2s_event(
            "L1",
            "on_create_lead",
            "2026-11-20T10:00:00Z",
            Some("11987654321"),
            None,
        ))
        .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    let ready = app
        .http
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn health_and_ready_answer_when_the_database_is_up() {
    let app = spawn_app(Backend::Sqlite).await;
    let health = app
        .http
        .get(format!("{}/health", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = app
        .http
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "sqlite");
    assert!(
        health.headers().contains_key("x-request-id"),
        "request ids are propagated"
    );
}
