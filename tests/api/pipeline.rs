//! The pipeline end to end: tiers, single flight, negative answers, actions, ordering.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{basic_auth, bearer_token, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::both_backends;
use crate::helpers::*;

pub const CPF: &str = "52601815906";
pub const PHONE_NATIONAL: &str = "11987654321";
pub const EMAIL: &str = "maria.souza@example.com";

pub async fn mock_diretrix_phone(
    server: &MockServer,
    national: &str,
    body: serde_json::Value,
    times: u64,
) {
    Mock::given(method("GET"))
        .and(path(format!("/Consultas/Pessoa/Telefone/{national}")))
        .and(basic_auth(DIRETRIX_USER, DIRETRIX_PASSWORD))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(times)
        .mount(server)
        .await;
}

pub async fn mock_diretrix_email(
    server: &MockServer,
    email: &str,
    body: serde_json::Value,
    times: u64,
) {
    Mock::given(method("GET"))
        .and(path(format!("/Consultas/Pessoa/Email/{email}")))
        .and(basic_auth(DIRETRIX_USER, DIRETRIX_PASSWORD))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(times)
        .mount(server)
        .await;
}

pub async fn mock_work(server: &MockServer, cpf: &str, body: serde_json::Value, times: u64) {
    Mock::given(method("GET"))
        .and(path("/api"))
        .and(query_param("token", WORK_TOKEN))
        .and(query_param("modulo", "cpf"))
        .and(query_param("consulta", cpf))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(times)
        .mount(server)
        .await;
}

pub async fn mock_c2s_ok(server: &MockServer, times: u64) {
    Mock::given(method("POST"))
        .and(path_regex(r"^/integration/leads/[^/]+/create_message$"))
        .and(bearer_token(C2S_TOKEN))
        .respond_with(ResponseTemplate::new(201))
        .expect(times)
        .mount(server)
        .await;
}

/// Diretrix knows Maria's phone and the Work API her CPF, `times` calls each.
pub async fn mock_phone_person(app: &TestApp, times: u64) {
    mock_diretrix_phone(
        &app.diretrix,
        PHONE_NATIONAL,
        fixture("diretrix_found.json"),
        times,
    )
    .await;
    mock_work(&app.work_api, CPF, fixture("work_api_person.json"), times).await;
}

/// Diretrix and the Work API both know Maria, by phone and by email, once each.
pub async fn mock_maria(app: &TestApp) {
    mock_diretrix_phone(
        &app.diretrix,
        PHONE_NATIONAL,
        fixture("diretrix_found.json"),
        1,
    )
    .await;
    mock_diretrix_email(&app.diretrix, EMAIL, fixture("diretrix_found.json"), 1).await;
    mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 1).await;
}

both_backends!(
    a_new_lead_is_enriched_stored_and_posted_and_every_format_of_its_contacts_hits_the_cache,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_maria(&app).await;
        mock_c2s_ok(&app.c2s, 3).await;

        let ids = app.post_c2s_ok(&fixture("c2s_webhook_create.json")).await;
        let event = app.wait_final(ids[0]).await;
        assert_eq!(
            (event.state.as_str(), event.outcome.map(|o| o.as_str())),
            ("done", Some("delivered"))
        );

        let messages = app.c2s_messages().await;
        assert_eq!(messages.len(), 1);
        let (lead, body) = &messages[0];
        assert_eq!(lead, "a1b2c3d4e5f60718293a4b5c");
        for expected in [
            "Telefone e e-mail da mesma pessoa",
            "MARIA APARECIDA SOUZA",
            "CPF: 526.018.159-06",
            "R$ 8.500,50",
            "✅ DADOS PESSOAIS",
            "💰 DADOS FINANCEIROS",
            "🏢 EMPRESAS",
        ] {
            assert!(
                body.contains(expected),
                "message lacks {expected:?}:\n{body}"
            );
        }
        let counts = app.store().party_counts().await.unwrap();
        assert_eq!(
            (counts.parties, counts.enrichments, counts.lead_links),
            (1, 1, 2)
        );

        // Another lead, the same person written differently: memory answers.
        let other = c2s_event(
            "L-2",
            "on_create_lead",
            "2026-11-20T15:00:00Z",
            Some("+55 11 98765 4321"),
            Some(" MARIA.Souza@EXAMPLE.com"),
        );
        let ids = app.post_c2s_ok(&other).await;
        assert_eq!(
            app.wait_final(ids[0]).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );

        // After a restart memory is empty: the database answers, still no provider call.
        let app = app.restart().await;
        let third = c2s_event(
            "L-3",
            "on_create_lead",
            "2026-11-20T16:00:00Z",
            Some("011 98765-4321"),
            Some("maria.souza@example.com"),
        );
        let ids = app.post_c2s_ok(&third).await;
        assert_eq!(
            app.wait_final(ids[0]).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        let messages = app.c2s_messages().await;
        assert_eq!(messages.len(), 3);
        assert!(messages[2].1.contains("CPF: 526.018.159-06"));
        assert_eq!(
            app.store().party_counts().await.unwrap().enrichments,
            1,
            "nothing bought twice"
        );
        app.verify_mocks().await;
    }
);

/// Holds its answer until the test releases it, so the test can see who waits on it; counts
/// the requests that arrived. Blocking wiremock's server thread is the point: nothing is
/// answered until released, whatever the timing (or after 10 s, with a 500 that fails the test).
struct Held {
    answer: ResponseTemplate,
    arrived: Arc<AtomicUsize>,
    released: Arc<(Mutex<bool>, Condvar)>,
}

impl Held {
    fn release(released: &(Mutex<bool>, Condvar)) {
        *released.0.lock().unwrap() = true;
        released.1.notify_all();
    }
}

impl Respond for Held {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let (lock, condvar) = &*self.released;
        let (released, _) = condvar
            .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(10), |r| !*r)
            .unwrap();
        if *released {
            self.answer.clone()
        } else {
            ResponseTemplate::new(500)
        }
    }
}

both_backends!(
    concurrent_events_for_one_new_contact_pay_each_provider_exactly_once,
    |backend| async move {
        const N: usize = 25;
        let app = spawn_app_with(backend, |s| s.workers.concurrency = 32).await;
        let arrived = Arc::new(AtomicUsize::new(0));
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        Mock::given(method("GET"))
            .and(path(format!("/Consultas/Pessoa/Telefone/{PHONE_NATIONAL}")))
            .and(basic_auth(DIRETRIX_USER, DIRETRIX_PASSWORD))
            .respond_with(Held {
                answer: ResponseTemplate::new(200).set_body_json(fixture("diretrix_found.json")),
                arrived: arrived.clone(),
                released: released.clone(),
            })
            .expect(1)
            .mount(&app.diretrix)
            .await;
        mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 1).await;
        mock_c2s_ok(&app.c2s, N as u64).await;

        let posts = (0..N).map(|i| {
            let event = c2s_event(
                &format!("burst-{i}"),
                "on_create_lead",
                "2026-11-20T10:00:00Z",
                Some("(11) 98765-4321"),
                None,
            );
            let app = &app;
            async move { app.post_c2s_ok(&event).await }
        });
        let ids: Vec<i64> = futures::future::join_all(posts)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(ids.len(), N);
        // Diretrix holds its answer until all N events are being processed at once: they
        // overlap by construction, and whoever asks after the answer finds it in memory.
        let store = app.store().clone();
        wait_for(
            "every event in flight while Diretrix holds its answer",
            Duration::from_secs(10),
            || {
                let store = store.clone();
                let arrived = arrived.clone();
                async move {
                    let counts = store.event_counts().await.ok()?;
                    let processing = counts
                        .iter()
                        .find(|(state, _)| state.as_str() == "processing")
                        .map_or(0, |(_, n)| *n);
                    (processing == N as i64 && arrived.load(Ordering::SeqCst) >= 1).then_some(())
                }
            },
        )
        .await;
        Held::release(&released);
        for id in ids {
            assert_eq!(
                app.wait_final(id).await.outcome.map(|o| o.as_str()),
                Some("delivered")
            );
        }
        assert_eq!(arrived.load(Ordering::SeqCst), 1);
        // The events that waited on the one load count as memory hits: 1 call, N - 1 avoided.
        for kind in [
            enricher::metrics::LookupKind::Contact,
            enricher::metrics::LookupKind::Cpf,
        ] {
            let stats = app.state.metrics.tier_counts(kind);
            assert_eq!(
                (stats.provider_call, stats.memory_hit),
                (1, N as u64 - 1),
                "{kind:?}"
            );
        }
        let counts = app.store().party_counts().await.unwrap();
        assert_eq!((counts.parties, counts.enrichments), (1, 1));
        app.verify_mocks().await;
    }
);

both_backends!(
    a_work_api_not_found_is_remembered_and_never_stored_as_a_person,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_diretrix_phone(
            &app.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_work(&app.work_api, CPF, fixture("work_api_not_found.json"), 1).await;
        mock_c2s_ok(&app.c2s, 3).await;

        let first = c2s_event(
            "L-1",
            "on_create_lead",
            "2026-11-20T10:00:00Z",
            Some(PHONE_NATIONAL),
            None,
        );
        let ids = app.post_c2s_ok(&first).await;
        assert_eq!(
            app.wait_final(ids[0]).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        let counts = app.store().party_counts().await.unwrap();
        assert_eq!(counts.enrichments, 0, "a not-found is not an enrichment");
        assert_eq!(counts.negatives, 1);
        let body = &app.c2s_messages().await[0].1;
        assert!(body.contains("nenhum dado encontrado"), "{body}");
        assert!(!body.contains("DADOS PESSOAIS"), "{body}");

        let second = c2s_event(
            "L-2",
            "on_create_lead",
            "2026-11-20T10:00:00Z",
            Some(PHONE_NATIONAL),
            None,
        );
        let ids = app.post_c2s_ok(&second).await;
        app.wait_final(ids[0]).await;
        let app = app.restart().await;
        let third = c2s_event(
            "L-3",
            "on_create_lead",
            "2026-11-20T10:00:00Z",
            Some(PHONE_NATIONAL),
            None,
        );
        let ids = app.post_c2s_ok(&third).await;
        assert_eq!(
            app.wait_final(ids[0]).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        app.verify_mocks().await;
    }
);

both_backends!(
    nobody_found_by_diretrix_is_remembered_across_restarts,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_diretrix_phone(&app.diretrix, PHONE_NATIONAL, json!([]), 1).await;
        Mock::given(method("GET"))
            .and(path(format!("/Consultas/Pessoa/Email/{EMAIL}")))
            .respond_with(ResponseTemplate::new(404))
            .expect(1)
            .mount(&app.diretrix)
            .await;
        mock_work(&app.work_api, CPF, json!({}), 0).await;
        mock_c2s_ok(&app.c2s, 2).await;

        let first = c2s_event(
            "L-1",
            "on_create_lead",
            "2026-11-20T10:00:00Z",
            Some(PHONE_NATIONAL),
            Some(EMAIL),
        );
        let ids = app.post_c2s_ok(&first).await;
        assert_eq!(
            app.wait_final(ids[0]).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        let body = &app.c2s_messages().await[0].1;
        assert!(body.contains("nenhum dado encontrado"), "{body}");
        assert_eq!(app.store().party_counts().await.unwrap().negatives, 2);

        let app = app.restart().await;
        let second = c2s_event(
            "L-2",
            "on_create_lead",
            "2026-11-20T10:00:00Z",
            Some(PHONE_NATIONAL),
            Some(EMAIL),
        );
        let ids = app.post_c2s_ok(&second).await;
        assert_eq!(
            app.wait_final(ids[0]).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        app.verify_mocks().await;
    }
);

both_backends!(
    updates_post_only_when_the_contacts_changed_and_closes_post_nothing,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_maria(&app).await;
        let other_phone = "21998765432";
        mock_diretrix_phone(&app.diretrix, other_phone, json!([]), 1).await;
        mock_c2s_ok(&app.c2s, 2).await;

        let steps = [
            (
                "on_create_lead",
                "2026-11-20T10:00:00Z",
                Some("(11) 98765-4321"),
                Some(EMAIL),
                "delivered",
            ),
            // Same contacts, written differently: nothing new to say.
            (
                "on_update_lead",
                "2026-11-20T11:00:00Z",
                Some("+5511987654321"),
                Some(" Maria.Souza@example.com"),
                "unchanged",
            ),
            (
                "hook_on_update_lead",
                "2026-11-20T12:00:00Z",
                Some(other_phone),
                Some(EMAIL),
                "delivered",
            ),
            (
                "on_close_lead",
                "2026-11-20T13:00:00Z",
                Some("21 99999 0000"),
                None,
                "closed",
            ),
        ];
        for (action, at, phone, email, outcome) in steps {
            let ids = app
                .post_c2s_ok(&c2s_event("L-1", action, at, phone, email))
                .await;
            let event = app.wait_final(ids[0]).await;
            assert_eq!(
                event.outcome.map(|o| o.as_str()),
                Some(outcome),
                "{action} at {at}"
            );
        }
        assert_eq!(app.c2s_messages().await.len(), 2);
        app.verify_mocks().await;
    }
);

both_backends!(
    one_leads_events_are_processed_in_order_and_never_at_once,
    |backend| async move {
        let app = spawn_app(backend).await;
        let phones = ["11987650001", "11987650002", "11987650003"];
        // Every call an event makes, to Diretrix and to the CRM, looks at the inbox as it
        // arrives: exactly one event of the lead may be processing, the older ones done.
        let (lookups, looked_up) =
            Observing::new(&app.db, ResponseTemplate::new(200).set_body_json(json!([])));
        Mock::given(method("GET"))
            .and(path_regex(r"^/Consultas/Pessoa/Telefone/1198765000[123]$"))
            .and(basic_auth(DIRETRIX_USER, DIRETRIX_PASSWORD))
            .respond_with(lookups)
            .expect(3)
            .mount(&app.diretrix)
            .await;
        // A slow CRM keeps each event processing a while: a second event of the lead
        // claimed meanwhile would show at its own Diretrix call.
        let (posts, posted) = Observing::new(
            &app.db,
            ResponseTemplate::new(201).set_delay(Duration::from_millis(300)),
        );
        Mock::given(method("POST"))
            .and(path("/integration/leads/L-1/create_message"))
            .and(bearer_token(C2S_TOKEN))
            .respond_with(posts)
            .expect(3)
            .mount(&app.c2s)
            .await;

        // Sent newest first, in one batch: the workers must still go oldest first, one at a time.
        let batch = json!([
            c2s_event(
                "L-1",
                "on_update_lead",
                "2026-11-20T12:00:00Z",
                Some(phones[2]),
                None
            ),
            c2s_event(
                "L-1",
                "on_update_lead",
                "2026-11-20T11:00:00Z",
                Some(phones[1]),
                None
            ),
            c2s_event(
                "L-1",
                "on_create_lead",
                "2026-11-20T10:00:00Z",
                Some(phones[0]),
                None
            ),
        ]);
        let ids = app.post_c2s_ok(&batch).await;
        for id in &ids {
            assert_eq!(
                app.wait_final(*id).await.outcome.map(|o| o.as_str()),
                Some("delivered")
            );
        }
        let expected_states = [
            ["processing", "pending", "pending"],
            ["done", "processing", "pending"],
            ["done", "done", "processing"],
        ];
        let looked_up = looked_up.lock().unwrap().clone();
        assert_eq!(looked_up.len(), 3);
        for (k, (request, snapshot)) in looked_up.iter().enumerate() {
            assert!(
                request.url.path().ends_with(phones[k]),
                "looked up in updated_at order"
            );
            assert_eq!(snapshot.states(), expected_states[k], "at lookup {k}");
        }
        let posted = posted.lock().unwrap().clone();
        assert_eq!(posted.len(), 3);
        for (k, (request, snapshot)) in posted.iter().enumerate() {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            let phone = phones[k];
            assert!(
                body["body"].as_str().unwrap().contains(&format!(
                    "{}-{}",
                    &phone[2..7],
                    &phone[7..]
                )),
                "posted in updated_at order"
            );
            assert_eq!(snapshot.states(), expected_states[k], "at post {k}");
        }
        app.verify_mocks().await;
    }
);

both_backends!(
    a_leads_next_event_is_taken_when_the_one_before_it_ends_not_at_the_next_poll,
    |backend| async move {
        // Polling once a minute: only the end of the first event can start the second one
        // in time (a claim passes the second over while the first is in hand).
        let app = spawn_app_with(backend, |s| s.workers.poll_interval_ms = 60_000).await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/Consultas/Pessoa/Telefone/1198765000[12]$"))
            .and(basic_auth(DIRETRIX_USER, DIRETRIX_PASSWORD))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
            .expect(2)
            .mount(&app.diretrix)
            .await;
        Mock::given(method("POST"))
            .and(path("/integration/leads/L-1/create_message"))
            .and(bearer_token(C2S_TOKEN))
            .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_millis(200)))
            .expect(2)
            .mount(&app.c2s)
            .await;

        let batch = json!([
            c2s_event(
                "L-1",
                "on_create_lead",
                "2026-11-20T10:00:00Z",
                Some("11987650001"),
                None
            ),
            c2s_event(
                "L-1",
                "on_update_lead",
                "2026-11-20T11:00:00Z",
                Some("11987650002"),
                None
            ),
        ]);
        let ids = app.post_c2s_ok(&batch).await;
        assert_eq!(ids.len(), 2);
        for id in ids {
            let done = wait_final(app.store(), id, Duration::from_secs(15)).await;
            assert_eq!(done.outcome.map(|o| o.as_str()), Some("delivered"));
        }
        app.verify_mocks().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_configured_the_sandbox_answers_and_keeps_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        (
            "DATABASE_URL".to_owned(),
            format!("sqlite://{}", dir.path().join("e.db").display()),
        ),
        ("PORT".to_owned(), "0".to_owned()),
        ("ENRICHER__METRICS__PORT".to_owned(), "0".to_owned()),
    ]
    .into_iter()
    .collect();
    let settings = enricher::config::Settings::load_from(
        enricher::config::AppEnv::Development,
        std::path::Path::new("config"),
        &vars,
    )
    .unwrap();
    assert!(settings.sandbox_enabled());
    let app = enricher::startup::Application::build(settings)
        .await
        .unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let token = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());

    let http = reqwest::Client::new();
    let response = http
        .post(format!("{address}/api/v1/webhooks/c2s"))
        .json(&fixture("c2s_webhook_create.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body = sandbox_message(&http, &address, "a1b2c3d4e5f60718293a4b5c").await;
    // The sandbox derives every answer from the contact, so its message is known exactly.
    let expected = std::fs::read_to_string(format!(
        "{}/tests/fixtures/sandbox_message.txt",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(body, expected.trim_end());

    // The README's family phone: two people listed, the lead's name picks the second.
    let family = serde_json::json!({
        "id": "f00d0000000000000000c0de", "hook_action": "on_create_lead",
        "attributes": {"updated_at": "2026-11-20T15:00:00-03:00",
            "customer": {"name": "Ana P. Pereira", "phone": "(11) 97777-0002"}}});
    let response = http
        .post(format!("{address}/api/v1/webhooks/c2s"))
        .json(&family)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body = sandbox_message(&http, &address, "f00d0000000000000000c0de").await;
    assert!(body.contains("Nome: ANA PAULA PEREIRA"), "{body}");
    assert!(body.contains("CPF: 627.483.915-19"), "{body}");
    assert!(
        !body.contains("481.926.375-73"),
        "João is never shown: {body}"
    );
    assert!(!body.contains("⚠️"), "{body}");
    token.cancel();
    running.await.unwrap().unwrap();
}

/// The body of the message the sandbox CRM received for `lead`, once it has.
async fn sandbox_message(http: &reqwest::Client, address: &str, lead: &str) -> String {
    wait_for(
        &format!("the sandbox CRM to receive lead {lead}'s message"),
        Duration::from_secs(20),
        || async move {
            let list: serde_json::Value = http
                .get(format!("{address}/sandbox/messages"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            list["messages"].as_array()?.iter().find_map(|m| {
                (m["lead_id"] == lead).then(|| m["body"].as_str().unwrap_or("").to_owned())
            })
        },
    )
    .await
}

both_backends!(
    everything_bought_and_the_rendered_message_are_committed_before_the_crm_sees_the_post,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_maria(&app).await;
        let (observing, posted) = Observing::new(&app.db, ResponseTemplate::new(201));
        Mock::given(method("POST"))
            .and(path_regex(r"^/integration/leads/[^/]+/create_message$"))
            .and(bearer_token(C2S_TOKEN))
            .respond_with(observing)
            .expect(1)
            .mount(&app.c2s)
            .await;

        let id = app.post_c2s_ok(&fixture("c2s_webhook_create.json")).await[0];
        assert_eq!(
            app.wait_final(id).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        let posted = posted.lock().unwrap().clone();
        let [(request, at_post)] = posted.as_slice() else {
            panic!("one POST expected, got {}", posted.len());
        };
        // Everything the lead will ever cause to be stored was there when the CRM was called.
        let at = &at_post.counts;
        assert_eq!(
            (at.parties, at.enrichments, at.lead_links),
            (1, 1, 2),
            "bought, stored and linked before the POST"
        );
        let after = app.store().party_counts().await.unwrap();
        assert_eq!(*at, after, "nothing stored after the POST");
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            at_post.rendered[&id],
            (Some(body["body"].as_str().unwrap().to_owned()), true),
            "the rendered message and the sending mark were committed before the POST"
        );
        app.verify_mocks().await;
    }
);

both_backends!(
    a_failed_lookup_of_another_contact_keeps_what_was_bought_and_the_retry_buys_nothing_twice,
    |backend| async move {
        // The retry must fall to the next instance, whose memory is empty: what was bought
        // must come from the database. Full jitter has no floor, so the provider's
        // Retry-After holds the retry back while the test stops the app.
        let mut app = spawn_app(backend).await;
        mock_phone_person(&app, 1).await;
        Mock::given(method("GET"))
            .and(path(format!("/Consultas/Pessoa/Email/{EMAIL}")))
            .and(basic_auth(DIRETRIX_USER, DIRETRIX_PASSWORD))
            .respond_with(ResponseTemplate::new(500).insert_header("Retry-After", "3"))
            .up_to_n_times(1)
            .with_priority(1)
            .expect(1)
            .mount(&app.diretrix)
            .await;
        mock_diretrix_email(&app.diretrix, EMAIL, fixture("diretrix_found.json"), 1).await;
        mock_c2s_ok(&app.c2s, 1).await;

        let lead = c2s_event(
            "L-1",
            "on_create_lead",
            "2026-11-20T10:00:00Z",
            Some(PHONE_NATIONAL),
            Some(EMAIL),
        );
        let id = app.post_c2s_ok(&lead).await[0];
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
        app.stop().await;
        let event = store.event(id).await.unwrap().unwrap();
        assert_eq!((event.state.as_str(), event.attempts), ("pending", 1));
        assert!(
            event.last_error.as_deref().unwrap().contains("diretrix"),
            "{:?}",
            event.last_error
        );
        let phone = enricher::domain::ContactKey::Phone(
            enricher::domain::Phone::parse(PHONE_NATIONAL).unwrap(),
        );
        assert_eq!(
            store.find_contact(&phone).await.unwrap(),
            Some(enricher::store::Lookup::Found(
                enricher::domain::Cpf::parse(CPF).unwrap()
            )),
            "the phone's answer was stored when it was bought"
        );
        let counts = store.party_counts().await.unwrap();
        assert_eq!((counts.parties, counts.enrichments), (1, 1));
        assert!(app.c2s_messages().await.is_empty());

        let app = app.restart().await;
        let event = app.wait_final(id).await;
        assert_eq!(
            (event.outcome.map(|o| o.as_str()), event.attempts),
            (Some("delivered"), 1)
        );
        let body = &app.c2s_messages().await[0].1;
        assert!(body.contains("Telefone e e-mail da mesma pessoa"), "{body}");
        assert_eq!(app.store().party_counts().await.unwrap().enrichments, 1);
        app.verify_mocks().await;
    }
);

both_backends!(
    a_message_that_fails_to_render_dead_letters_the_event_and_keeps_what_was_bought,
    |backend| async move {
        // The built-in template plus a line that fails for one lead name only: it passes the
        // startup check on sample data and fails on this lead.
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("message.txt.j2");
        let mut source = std::fs::read_to_string("config/templates/message.txt.j2").unwrap();
        source.push_str(
            "{% if lead_name and \"Quebra\" in lead_name %}{{ no_such_variable }}{% endif %}\n",
        );
        std::fs::write(&template, source).unwrap();
        let app = spawn_app_with(backend, |s| {
            s.message.template_path = Some(template.display().to_string());
        })
        .await;
        mock_phone_person(&app, 1).await;
        mock_c2s_ok(&app.c2s, 1).await;

        let mut breaking = c2s_event(
            "L-1",
            "on_create_lead",
            "2026-11-20T10:00:00Z",
            Some(PHONE_NATIONAL),
            None,
        );
        breaking["attributes"]["customer"]["name"] = json!("Quebra Template");
        let id = app.post_c2s_ok(&breaking).await[0];
        let event = app.wait_final(id).await;
        assert_eq!((event.state.as_str(), event.attempts), ("dead", 1));
        let reason = event.last_error.unwrap();
        assert!(reason.starts_with("message: "), "{reason}");
        let counts = app.store().party_counts().await.unwrap();
        assert_eq!(
            (counts.parties, counts.enrichments, counts.lead_links),
            (1, 1, 0),
            "bought and stored, but the lead was never linked: nothing was rendered"
        );

        // Another lead of the same person renders and is posted without buying again.
        let id = app
            .post_c2s_ok(&c2s_event(
                "L-2",
                "on_create_lead",
                "2026-11-20T10:00:00Z",
                Some(PHONE_NATIONAL),
                None,
            ))
            .await[0];
        assert_eq!(
            app.wait_final(id).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        app.verify_mocks().await;
    }
);
