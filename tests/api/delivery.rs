//! Delivery: retries with backoff, Retry-After, dead letters, and once-per-event across
//! restarts. The enrichment bought is never lost, whatever the CRM does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wiremock::matchers::{bearer_token, method, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::both_backends;
use crate::helpers::*;
use crate::pipeline::{PHONE_NATIONAL, mock_c2s_ok, mock_phone_person};

fn lead(id: &str) -> serde_json::Value {
    c2s_event(
        id,
        "on_create_lead",
        "2026-11-20T10:00:00Z",
        Some(PHONE_NATIONAL),
        None,
    )
}

async fn mock_c2s_status(app: &TestApp, status: u16, times: u64) {
    Mock::given(method("POST"))
        .and(path_regex(r"^/integration/leads/[^/]+/create_message$"))
        .and(bearer_token(C2S_TOKEN))
        .respond_with(ResponseTemplate::new(status))
        .up_to_n_times(times)
        .expect(times)
        .with_priority(1)
        .mount(&app.c2s)
        .await;
}

both_backends!(
    transient_crm_failures_are_retried_and_the_message_posted_once,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_phone_person(&app, 1).await;
        mock_c2s_status(&app, 503, 2).await;
        mock_c2s_ok(&app.c2s, 1).await;

        let ids = app.post_c2s_ok(&lead("L-1")).await;
        let event = app.wait_final(ids[0]).await;
        assert_eq!(event.outcome.map(|o| o.as_str()), Some("delivered"));
        assert_eq!(event.attempts, 2, "two failed attempts before the success");
        app.verify_mocks().await;
    }
);

both_backends!(
    a_permanent_crm_rejection_is_dead_at_once_and_the_enrichment_is_kept,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_phone_person(&app, 1).await;
        mock_c2s_status(&app, 404, 1).await;

        let ids = app.post_c2s_ok(&lead("L-1")).await;
        let event = app.wait_final(ids[0]).await;
        assert_eq!(event.state.as_str(), "dead");
        assert_eq!(event.attempts, 1);
        assert!(
            event.last_error.as_deref().unwrap().contains("404"),
            "{:?}",
            event.last_error
        );
        let counts = app.store().party_counts().await.unwrap();
        assert_eq!(
            (counts.parties, counts.enrichments, counts.lead_links),
            (1, 1, 1)
        );
        app.c2s.verify().await;
    }
);

both_backends!(
    a_crm_that_keeps_failing_ends_in_the_dead_letters_after_the_configured_attempts,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_phone_person(&app, 1).await;
        // Four attempts configured by the harness.
        mock_c2s_status(&app, 500, 4).await;

        let ids = app.post_c2s_ok(&lead("L-1")).await;
        let event = app.wait_final(ids[0]).await;
        assert_eq!(event.state.as_str(), "dead");
        assert_eq!(event.attempts, 4);
        assert!(
            event
                .last_error
                .as_deref()
                .unwrap()
                .contains("gave up after 4 attempts")
        );
        assert_eq!(app.store().party_counts().await.unwrap().enrichments, 1);
        app.c2s.verify().await;
    }
);

struct RateLimitedOnce {
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Respond for RateLimitedOnce {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push(Instant::now());
        if arrivals.len() == 1 {
            ResponseTemplate::new(429).insert_header("Retry-After", "1")
        } else {
            ResponseTemplate::new(201)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let app = spawn_app(Backend::Sqlite).await;
    mock_phone_person(&app, 1).await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path_regex(r"^/integration/leads/L-1/create_message$"))
        .and(bearer_token(C2S_TOKEN))
        .respond_with(RateLimitedOnce {
            arrivals: arrivals.clone(),
        })
        .expect(2)
        .mount(&app.c2s)
        .await;
    let ids = app.post_c2s_ok(&lead("L-1")).await;
    assert_eq!(
        app.wait_final(ids[0]).await.outcome.map(|o| o.as_str()),
        Some("delivered")
    );
    let arrivals = arrivals.lock().unwrap().clone();
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_secs(1),
        "{:?}",
        arrivals[1] - arrivals[0]
    );
}

both_backends!(
    an_event_waiting_for_a_retry_is_resumed_after_a_restart_without_paying_again,
    |backend| async move {
        // The retry must be picked up by the next instance, not this one. Full jitter has no
        // floor, so the CRM's Retry-After holds the retry back while the test stops the app.
        let app = spawn_app(backend).await;
        mock_phone_person(&app, 1).await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/integration/leads/[^/]+/create_message$"))
            .and(bearer_token(C2S_TOKEN))
            .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "3"))
            .up_to_n_times(1)
            .expect(1)
            .with_priority(1)
            .mount(&app.c2s)
            .await;
        mock_c2s_ok(&app.c2s, 1).await;

        let id = app.post_c2s_ok(&lead("L-1")).await[0];
        let store = app.store().clone();
        wait_for("the first attempt to fail", Duration::from_secs(10), || {
            let store = store.clone();
            async move {
                store
                    .event(id)
                    .await
                    .ok()?
                    .filter(|e| e.attempts == 1 && e.state.as_str() == "pending")
            }
        })
        .await;
        let mut app = app;
        app.stop().await;
        // Stopped between the attempts: the retry is still owed, and only the failed POST
        // was made.
        let stopped = app.store().event(id).await.unwrap().unwrap();
        assert_eq!(
            (
                stopped.state.as_str(),
                stopped.attempts,
                stopped.delivered,
                stopped.outcome.map(|o| o.as_str())
            ),
            ("pending", 1, false, None)
        );
        assert_eq!(app.c2s.received_requests().await.unwrap().len(), 1);
        let app = app.restart().await;
        let event = app.wait_final(id).await;
        assert_eq!(
            (event.outcome.map(|o| o.as_str()), event.attempts),
            (Some("delivered"), 1)
        );
        assert_eq!(app.c2s_messages().await.len(), 2);
        app.verify_mocks().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_an_in_flight_delivery_finish_and_it_is_not_posted_again() {
    let mut app = spawn_app(Backend::Postgres).await;
    mock_phone_person(&app, 1).await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/integration/leads/L-1/create_message$"))
        .and(bearer_token(C2S_TOKEN))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_millis(800)))
        .expect(1)
        .mount(&app.c2s)
        .await;
    let ids = app.post_c2s_ok(&lead("L-1")).await;
    let c2s = app.c2s.clone();
    wait_for("the POST to reach the CRM", Duration::from_secs(10), || {
        let c2s = c2s.clone();
        async move { (!c2s.received_requests().await?.is_empty()).then_some(()) }
    })
    .await;
    app.stop().await;
    let event = app.store().event(ids[0]).await.unwrap().unwrap();
    assert_eq!((event.state.as_str(), event.delivered), ("done", true));

    let app = app.restart().await;
    // The new instance finds nothing to do.
    assert!(
        app.store()
            .claim_events(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    app.c2s.verify().await;
}

both_backends!(
    an_event_whose_process_died_mid_post_is_dead_lettered_not_posted_twice,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_c2s_ok(&app.c2s, 0).await;
        let db_store = app.db.store().await;
        // Another instance took the event, started the POST and vanished: its lease is over.
        let mut app = app;
        app.stop().await;
        let mut event = enricher::intake::c2s::parse_body(&lead("L-1"))
            .unwrap()
            .remove(0);
        event.event.at = time::OffsetDateTime::now_utc();
        db_store.insert_events(&[event]).await.unwrap();
        let claimed = db_store.claim_events(1, Duration::ZERO).await.unwrap();
        assert!(
            db_store
                .save_rendered(&claimed[0], "phone:+5511987654321", "text", &[])
                .await
                .unwrap()
        );
        assert!(db_store.mark_sending(&claimed[0]).await.unwrap());

        let app = app.restart().await;
        let event = app.wait_final(claimed[0].id).await;
        assert_eq!(event.state.as_str(), "dead");
        assert!(
            event
                .last_error
                .as_deref()
                .unwrap()
                .contains("outcome unknown")
        );
        app.c2s.verify().await;
    }
);
