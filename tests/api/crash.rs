//! Real crashes: the `enricher` binary is SIGKILLed at chosen points of an event's way, then a
//! new process starts on the same database. Every event must end (done, or dead as "delivery
//! outcome unknown" when the POST may have reached the CRM), no lead may get a message twice,
//! and nothing that was stored may be bought again: each mock's `.expect(n)` counts the calls
//! of both processes.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_backends;
use crate::helpers::*;
use crate::pipeline::{CPF, EMAIL, PHONE_NATIONAL, mock_diretrix_email, mock_diretrix_phone};
use crate::process::{Process, World};

/// Long enough that a stalled call is still waiting when the process is killed.
const STALL: Duration = Duration::from_secs(60);

/// The real binary's own output (stdout and stderr, as an operator's log shipper reads it)
/// names none of Maria's values.
fn assert_logs_clean(processes: &[&Process]) {
    let forbidden = crate::dump::maria_values();
    for process in processes {
        let output = process.output();
        assert!(output.contains("listening"), "output captured:\n{output}");
        for line in output.lines() {
            if let Some(value) = crate::dump::leak(line, &forbidden) {
                panic!("the child's output leaks {value:?}: {line}");
            }
        }
    }
}

/// Posts a webhook to a process and returns the accepted event ids.
async fn post(process: &Process, body: &Value) -> Vec<i64> {
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/webhooks/c2s", process.address))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_i64().expect("accepted"))
        .collect()
}

/// Waits until `server` has received `n` requests whose path ends with `suffix`.
async fn wait_received(server: &MockServer, suffix: &str, n: usize) {
    wait_for(
        &format!("{n} request(s) to …{suffix}"),
        Duration::from_secs(20),
        || async move {
            let got = received(server, |p| p.ends_with(suffix)).await;
            (got >= n).then_some(())
        },
    )
    .await
}

fn maria_lead(id: &str) -> Value {
    c2s_event(
        id,
        "on_create_lead",
        "2026-11-20T15:00:00Z",
        Some("(11) 98765-4321"),
        Some(EMAIL),
    )
}

/// Maria's Work API answer, `times` times.
async fn mock_work_ok(server: &MockServer, times: u64) {
    Mock::given(method("GET"))
        .and(path("/api"))
        .and(query_param("consulta", CPF))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("work_api_person.json")))
        .expect(times)
        .with_priority(3)
        .mount(server)
        .await;
}

/// The first Work API call for Maria never answers in time.
async fn mock_work_stalls_once(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api"))
        .and(query_param("consulta", CPF))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(fixture("work_api_person.json"))
                .set_delay(STALL),
        )
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(server)
        .await;
}

async fn mock_c2s_ok(server: &MockServer, times: u64) {
    Mock::given(method("POST"))
        .and(path_regex("/create_message$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "m-1"})))
        .expect(times)
        .mount(server)
        .await;
}

both_backends!(
    events_acknowledged_but_never_claimed_before_a_kill_are_each_delivered_once_after_restart,
    |backend| async move {
        let w = World::new(backend).await;
        // A lead whose lookup stalls holds the only worker of the first process, so the
        // events behind it are acknowledged and stored but never claimed.
        Mock::given(method("GET"))
            .and(path("/Consultas/Pessoa/Telefone/21998765400"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!([]))
                    .set_delay(STALL),
            )
            .up_to_n_times(1)
            .expect(1)
            .with_priority(1)
            .mount(&w.diretrix)
            .await;
        Mock::given(method("GET"))
            .and(path("/Consultas/Pessoa/Telefone/21998765400"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
            .expect(1)
            .with_priority(2)
            .mount(&w.diretrix)
            .await;
        mock_diretrix_phone(
            &w.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_diretrix_email(&w.diretrix, EMAIL, fixture("diretrix_found.json"), 1).await;
        mock_work_ok(&w.work_api, 1).await;
        mock_c2s_ok(&w.c2s, 4).await;

        let mut first = w.process(&[("ENRICHER__WORKERS__CONCURRENCY", "1")]).await;
        let blocker = c2s_event(
            "L-blocker",
            "on_create_lead",
            "2026-11-20T15:00:00Z",
            Some("(21) 99876-5400"),
            None,
        );
        let blocker = post(&first, &blocker).await[0];
        wait_received(&w.diretrix, "/21998765400", 1).await;
        let batch = json!([maria_lead("L-1"), maria_lead("L-2"), maria_lead("L-3")]);
        let waiting = post(&first, &batch).await;
        for id in &waiting {
            let event = w.event(*id).await;
            assert_eq!(
                (event.state.as_str(), event.attempts),
                ("pending", 0),
                "never claimed"
            );
        }
        first.kill();

        let second = w.process(&[]).await;
        for id in waiting.iter().chain([&blocker]) {
            let event = w.wait_final(*id).await;
            assert_eq!(
                (event.state.as_str(), event.outcome.map(|o| o.as_str())),
                ("done", Some("delivered")),
                "event {id}"
            );
        }
        let mut leads = w.posted_leads().await;
        leads.sort();
        assert_eq!(
            leads,
            ["L-1", "L-2", "L-3", "L-blocker"],
            "one message per lead"
        );
        w.verify_mocks().await;
        assert_logs_clean(&[&first, &second]);
    }
);

both_backends!(
    a_kill_while_waiting_on_a_provider_buys_again_only_the_answer_that_never_arrived,
    |backend| async move {
        let w = World::new(backend).await;
        mock_diretrix_phone(
            &w.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_diretrix_email(&w.diretrix, EMAIL, fixture("diretrix_found.json"), 1).await;
        mock_work_stalls_once(&w.work_api).await;
        mock_work_ok(&w.work_api, 1).await;
        mock_c2s_ok(&w.c2s, 1).await;

        let mut first = w.process(&[]).await;
        let id = post(&first, &maria_lead("L-1")).await[0];
        wait_received(&w.work_api, "/api", 1).await;
        // Both Diretrix answers were paid and must survive the kill.
        let store = w.store.clone();
        wait_for(
            "both CPF lookups to be stored",
            Duration::from_secs(10),
            || {
                let store = store.clone();
                async move { (store.party_counts().await.ok()?.contacts >= 2).then_some(()) }
            },
        )
        .await;
        assert_eq!(w.store.party_counts().await.unwrap().enrichments, 0);
        first.kill();

        let second = w.process(&[]).await;
        let event = w.wait_final(id).await;
        assert_eq!(
            (event.state.as_str(), event.outcome.map(|o| o.as_str())),
            ("done", Some("delivered"))
        );
        assert_eq!(w.posted_leads().await, ["L-1"]);
        w.verify_mocks().await;
        assert_logs_clean(&[&first, &second]);
    }
);

both_backends!(
    providers_that_fail_and_stall_across_a_kill_still_end_every_event_once,
    |backend| async move {
        let w = World::new(backend).await;
        // Diretrix fails once on the phone (the event is retried), then answers.
        Mock::given(method("GET"))
            .and(path(format!("/Consultas/Pessoa/Telefone/{PHONE_NATIONAL}")))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .expect(1)
            .with_priority(1)
            .mount(&w.diretrix)
            .await;
        mock_diretrix_phone(
            &w.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_diretrix_email(&w.diretrix, EMAIL, fixture("diretrix_found.json"), 1).await;
        // The Work API stalls (the kill comes then), then fails once, then answers.
        mock_work_stalls_once(&w.work_api).await;
        Mock::given(method("GET"))
            .and(path("/api"))
            .and(query_param("consulta", CPF))
            .respond_with(ResponseTemplate::new(500))
            .up_to_n_times(1)
            .expect(1)
            .with_priority(2)
            .mount(&w.work_api)
            .await;
        mock_work_ok(&w.work_api, 1).await;
        mock_c2s_ok(&w.c2s, 2).await;

        let mut first = w.process(&[]).await;
        let ids = post(&first, &json!([maria_lead("L-1"), maria_lead("L-2")])).await;
        // The kill comes once the phone lookup failed and the Work API call is waiting.
        wait_received(&w.diretrix, &format!("/{PHONE_NATIONAL}"), 1).await;
        wait_received(&w.work_api, "/api", 1).await;
        first.kill();

        let second = w.process(&[]).await;
        for id in &ids {
            let event = w.wait_final(*id).await;
            assert_eq!(
                (event.state.as_str(), event.outcome.map(|o| o.as_str())),
                ("done", Some("delivered")),
                "event {id}"
            );
        }
        let mut leads = w.posted_leads().await;
        leads.sort();
        assert_eq!(leads, ["L-1", "L-2"]);
        w.verify_mocks().await;
        assert_logs_clean(&[&first, &second]);
    }
);

/// Backends waiting on a lock in this database: the killed worker's write, held by our lock.
async fn lock_waiters(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_the_purchases_are_stored_and_before_the_post_sends_once_and_buys_nothing_again()
 {
    let w = World::new(Backend::Postgres).await;
    mock_diretrix_phone(
        &w.diretrix,
        PHONE_NATIONAL,
        fixture("diretrix_found.json"),
        1,
    )
    .await;
    mock_diretrix_email(&w.diretrix, EMAIL, fixture("diretrix_found.json"), 1).await;
    // The answer is slow enough for the test to lock the event's row while it is awaited.
    Mock::given(method("GET"))
        .and(path("/api"))
        .and(query_param("consulta", CPF))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(fixture("work_api_person.json"))
                .set_delay(Duration::from_secs(3)),
        )
        .expect(1)
        .mount(&w.work_api)
        .await;
    mock_c2s_ok(&w.c2s, 1).await;

    let mut first = w.process(&[]).await;
    let id = post(&first, &maria_lead("L-1")).await[0];
    wait_received(&w.work_api, "/api", 1).await;
    // The worker's next write to its event (links and rendered message) waits on this lock;
    // the purchases are written to other tables and go through.
    let mut conn = sqlx::PgConnection::connect(&w.db.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let state: String =
        sqlx::query_scalar("SELECT state FROM webhook_inbox WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(state, "processing");
    assert_eq!(
        w.store.party_counts().await.unwrap().enrichments,
        0,
        "locked before the Work API answer was stored"
    );
    let store = w.store.clone();
    wait_for(
        "the Work API answer to be stored",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            async move { (store.party_counts().await.ok()?.enrichments == 1).then_some(()) }
        },
    )
    .await;
    let mut watcher = sqlx::PgConnection::connect(&w.db.url).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lock_waiters(&mut watcher).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the worker's write to wait on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    tx.rollback().await.unwrap();
    assert!(w.posted_leads().await.is_empty(), "nothing was posted");

    let second = w.process(&[]).await;
    let event = w.wait_final(id).await;
    assert_eq!(
        (event.state.as_str(), event.outcome.map(|o| o.as_str())),
        ("done", Some("delivered"))
    );
    assert_eq!(w.posted_leads().await, ["L-1"]);
    let counts = w.store.party_counts().await.unwrap();
    assert_eq!((counts.parties, counts.enrichments), (1, 1));
    w.verify_mocks().await;
    assert_logs_clean(&[&first, &second]);
}

both_backends!(
    a_kill_after_the_post_reached_the_crm_dead_letters_the_event_and_never_posts_twice,
    |backend| async move {
        let w = World::new(backend).await;
        mock_diretrix_phone(
            &w.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_diretrix_email(&w.diretrix, EMAIL, fixture("diretrix_found.json"), 1).await;
        mock_work_ok(&w.work_api, 1).await;
        // The CRM takes the message and never answers before the kill.
        Mock::given(method("POST"))
            .and(path_regex("/create_message$"))
            .respond_with(ResponseTemplate::new(201).set_delay(STALL))
            .expect(1)
            .mount(&w.c2s)
            .await;

        let mut first = w.process(&[]).await;
        let id = post(&first, &maria_lead("L-1")).await[0];
        wait_received(&w.c2s, "/create_message", 1).await;
        first.kill();

        let second = w.process(&[]).await;
        let event = w.wait_final(id).await;
        assert_eq!(event.state.as_str(), "dead");
        assert_eq!(
            event.last_error.as_deref(),
            Some(enricher::delivery::UNKNOWN_OUTCOME)
        );
        assert_eq!(w.posted_leads().await, ["L-1"], "never a second message");
        w.verify_mocks().await;
        assert_logs_clean(&[&first, &second]);
    }
);
