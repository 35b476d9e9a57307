//! Broken and lying upstreams, and clients that hold connections: a provider answer is
//! trusted only when it is about what was asked, bounded and readable; a redirect is never
//! followed; a POST sent without an answer is not posted again by default; a slow body is a
//! timeout; connections cannot be held open forever, nor hold up a shutdown.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_backends;
use crate::helpers::*;
use crate::pipeline::{
    CPF, PHONE_NATIONAL, mock_c2s_ok, mock_diretrix_phone, mock_phone_person, mock_work,
};

fn lead(id: &str) -> serde_json::Value {
    c2s_event(
        id,
        "on_create_lead",
        "2026-11-20T10:00:00Z",
        Some(PHONE_NATIONAL),
        None,
    )
}

/// The Work API fixture person, with `cpf` as the answer's CPF.
fn person_answering_with(cpf: &str) -> serde_json::Value {
    let mut body = fixture("work_api_person.json");
    body["DadosBasicos"]["cpf"] = json!(cpf);
    body
}

both_backends!(
    a_person_answer_about_another_cpf_is_never_stored_or_posted,
    |backend| async move {
        for (lead_id, answered) in [("L1", "09925419050"), ("L2", "52601815900")] {
            let app = spawn_app(backend).await;
            mock_diretrix_phone(
                &app.diretrix,
                PHONE_NATIONAL,
                fixture("diretrix_found.json"),
                1,
            )
            .await;
            mock_work(&app.work_api, CPF, person_answering_with(answered), 1).await;
            mock_c2s_ok(&app.c2s, 0).await;

            let ids = app.post_c2s_ok(&lead(lead_id)).await;
            let event = app.wait_final(ids[0]).await;
            assert_eq!(event.state.as_str(), "dead", "{answered}");
            let reason = event.last_error.unwrap();
            assert!(reason.contains("does not match the request"), "{reason}");
            assert!(!reason.contains(answered), "no CPF in the reason: {reason}");
            let counts = app.store().party_counts().await.unwrap();
            assert_eq!(counts.enrichments, 0, "{answered}");
            let metrics = app.scrape().await;
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with("enricher_provider_errors_total")
                        && l.contains("class=\"mismatch\"")
                        && l.ends_with(" 1")),
                "{metrics}"
            );
            app.verify_mocks().await;
        }
    }
);

both_backends!(
    a_nul_in_a_provider_answer_is_dropped_and_the_answer_is_paid_once,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_diretrix_phone(
            &app.diretrix,
            PHONE_NATIONAL,
            json!([{"nome": "MARIA\u{0}", "cpf": CPF}]),
            1,
        )
        .await;
        let mut body = fixture("work_api_person.json");
        body["DadosBasicos"]["nome"] = json!("MARIA\u{0} APARECIDA");
        body["campo\u{0}extra"] = json!("x\u{0}y");
        mock_work(&app.work_api, CPF, body, 1).await;
        mock_c2s_ok(&app.c2s, 1).await;

        let ids = app.post_c2s_ok(&lead("L1")).await;
        let event = app.wait_final(ids[0]).await;
        assert_eq!(
            event.outcome.map(|o| o.as_str()),
            Some("delivered"),
            "{event:?}"
        );
        let (_, message) = app.c2s_messages().await.pop().unwrap();
        assert!(message.contains("Nome: MARIA APARECIDA"), "{message}");
        app.verify_mocks().await;
    }
);

both_backends!(
    a_provider_answer_over_the_size_cap_is_refused_and_not_bought_again,
    |backend| async move {
        let app = spawn_app_with(backend, |s| s.work_api.max_answer_bytes = 16 * 1024).await;
        mock_diretrix_phone(
            &app.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        let mut body = fixture("work_api_person.json");
        body["DadosBasicos"]["nome"] = json!("A".repeat(20_000));
        mock_work(&app.work_api, CPF, body, 1).await;
        mock_c2s_ok(&app.c2s, 0).await;

        let ids = app.post_c2s_ok(&lead("L1")).await;
        let event = app.wait_final(ids[0]).await;
        assert_eq!(event.state.as_str(), "dead");
        let reason = event.last_error.unwrap();
        assert!(reason.contains("larger than 16384 bytes"), "{reason}");
        assert_eq!(app.store().party_counts().await.unwrap().enrichments, 0);
        app.verify_mocks().await;
    }
);

both_backends!(
    a_redirect_from_the_crm_is_not_followed_and_never_counts_as_delivered,
    |backend| async move {
        let elsewhere = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(201))
            .expect(0)
            .mount(&elsewhere)
            .await;
        for (lead_id, status, location) in [
            ("L1", 302, "/landing".to_owned()),
            ("L2", 307, format!("{}/steal", elsewhere.uri())),
        ] {
            let app = spawn_app(backend).await;
            mock_phone_person(&app, 1).await;
            Mock::given(method("POST"))
                .and(path_regex("/create_message$"))
                .respond_with(ResponseTemplate::new(status).insert_header("location", location))
                .expect(1)
                .mount(&app.c2s)
                .await;
            Mock::given(method("GET"))
                .and(path("/landing"))
                .respond_with(ResponseTemplate::new(200))
                .expect(0)
                .mount(&app.c2s)
                .await;

            let ids = app.post_c2s_ok(&lead(lead_id)).await;
            let event = app.wait_final(ids[0]).await;
            assert_eq!((event.state.as_str(), event.delivered), ("dead", false));
            let reason = event.last_error.unwrap();
            assert!(reason.contains(&format!("redirect {status}")), "{reason}");
            app.verify_mocks().await;
        }
        elsewhere.verify().await;
    }
);

both_backends!(
    a_crm_that_accepts_but_answers_after_the_timeout_gets_exactly_one_message,
    |backend| async move {
        let app = spawn_app_with(backend, |s| s.c2s.timeout_ms = 300).await;
        mock_phone_person(&app, 1).await;
        Mock::given(method("POST"))
            .and(path_regex("/create_message$"))
            .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_millis(1500)))
            .expect(1)
            .mount(&app.c2s)
            .await;

        let ids = app.post_c2s_ok(&lead("L1")).await;
        let event = app.wait_final(ids[0]).await;
        assert_eq!(event.state.as_str(), "dead");
        assert!(
            event
                .last_error
                .as_deref()
                .unwrap()
                .contains("delivery outcome unknown"),
            "{:?}",
            event.last_error
        );
        app.verify_mocks().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_repost_allowed_a_slow_crm_gets_exactly_two_messages_and_no_more() {
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.c2s.timeout_ms = 300;
        s.delivery.unknown_outcome_reposts = 1;
    })
    .await;
    mock_phone_person(&app, 1).await;
    Mock::given(method("POST"))
        .and(path_regex("/create_message$"))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_millis(1500)))
        .expect(2)
        .mount(&app.c2s)
        .await;

    let ids = app.post_c2s_ok(&lead("L1")).await;
    let event = app.wait_final(ids[0]).await;
    assert_eq!(event.state.as_str(), "dead");
    assert!(
        event
            .last_error
            .as_deref()
            .unwrap()
            .contains("outcome unknown")
    );
    app.verify_mocks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_repost_allowed_an_event_whose_process_died_mid_post_is_posted_again_once() {
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.delivery.unknown_outcome_reposts = 1;
    })
    .await;
    mock_c2s_ok(&app.c2s, 1).await;
    let db_store = app.db.store().await;
    let mut app = app;
    app.stop().await;
    // Another instance took the event, started the POST and vanished: its lease is over.
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
    assert_eq!(event.outcome.map(|o| o.as_str()), Some("delivered"));
    app.c2s.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_that_refuses_connections_is_retried_normally_since_nothing_was_sent() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.c2s.base_url = Some(format!("http://127.0.0.1:{port}"));
        s.delivery.max_attempts = 3;
    })
    .await;
    mock_phone_person(&app, 1).await;
    let ids = app.post_c2s_ok(&lead("L1")).await;
    let event = app.wait_final(ids[0]).await;
    assert_eq!(event.state.as_str(), "dead");
    let reason = event.last_error.unwrap();
    assert!(
        reason.contains("gave up after 3 attempts: c2s: connection failed"),
        "{reason}"
    );
}

/// A server that answers every request with headers and the start of a body, then stalls.
async fn stalling_body_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"DadosBasicos\": {";
                let _ = socket.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    format!("http://{addr}")
}

both_backends!(
    a_provider_body_sent_too_slowly_is_a_timeout_and_retried,
    |backend| async move {
        let stalling = stalling_body_server().await;
        let app = spawn_app_with(backend, |s| {
            s.work_api.base_url = Some(stalling);
            s.work_api.timeout_ms = 300;
            s.delivery.max_attempts = 2;
        })
        .await;
        mock_diretrix_phone(
            &app.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        let ids = app.post_c2s_ok(&lead("L1")).await;
        let event = app.wait_final(ids[0]).await;
        let reason = event.last_error.unwrap();
        assert!(
            reason.contains("gave up after 2 attempts: work_api: timed out"),
            "{reason}"
        );
    }
);

/// Reads until the server closes the connection; `None` if it is still open at `deadline`.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + deadline),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_header_and_idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.header_read_timeout_secs = 1).await;
    let addr = app.address.trim_start_matches("http://").to_owned();

    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));

    for (what, stream) in [
        ("partial header", &mut partial),
        ("silent", &mut silent),
        ("idle keep-alive", &mut idle),
    ] {
        let closed = closed_within(stream, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "{what} connection still open after 5 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout_though_it_answers_pings() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let app = spawn_app_with(Backend::Sqlite, |s| {
        // The header timer must not be what closes it: HTTP/2 has none.
        s.server.header_read_timeout_secs = 1;
        s.server.idle_timeout_secs = 2;
    })
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&addr).await.unwrap();
    // h2c with prior knowledge; the client's connection task answers the server's pings, as
    // a live client does, so only the idle rule can end it.
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake::<_, _, Empty<bytes::Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(format!("{}/health", app.address))
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    drop(response);

    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(
        closed.is_ok(),
        "the idle HTTP/2 connection was still open after 10 s"
    );
    let after = started.elapsed();
    assert!(
        after >= Duration::from_secs(2),
        "closed after {after:?}, before the idle timeout"
    );
    assert!(sender.is_closed() || sender.ready().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_in_use_is_not_closed_as_idle() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let app = spawn_app_with(Backend::Sqlite, |s| s.server.idle_timeout_secs = 1).await;
    // Idle is counted from the last answer, not from the connection's start.
    let addr = app.address.trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake::<_, _, Empty<bytes::Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    // Requests one after another, each well inside the idle timeout, for three timeouts:
    // the connection stays usable throughout.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let request = hyper::Request::get(format!("{}/health", app.address))
            .body(Empty::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!connection.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_is_not_held_up_by_open_partial_header_or_idle_connections() {
    let mut app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.header_read_timeout_secs = 120;
        s.workers.drain_secs = 1;
    })
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut connections = Vec::new();
    for _ in 0..20 {
        let mut partial = TcpStream::connect(&addr).await.unwrap();
        partial
            .write_all(b"POST /api/v1/webhooks/c2s HTTP/1.1\r\nHost: x\r\nContent-")
            .await
            .unwrap();
        connections.push(partial);
        connections.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Make sure the server has accepted them before stopping.
    let response = app
        .http
        .get(format!("{}/health", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the application stops within 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        started.elapsed()
    );
    for stream in &mut connections {
        assert!(
            closed_within(stream, Duration::from_secs(2))
                .await
                .is_some(),
            "a connection outlived the server"
        );
    }
}

async fn mock_work_status(app: &TestApp, status: u16, times: u64) {
    Mock::given(method("GET"))
        .and(path("/api"))
        .respond_with(ResponseTemplate::new(status))
        .up_to_n_times(times)
        .expect(times)
        .with_priority(1)
        .mount(&app.work_api)
        .await;
}

both_backends!(
    a_provider_outage_opens_its_circuit_so_work_is_parked_instead_of_hammering_it,
    |backend| async move {
        let app = spawn_app_with(backend, |s| {
            s.work_api.breaker_failures = 2;
            s.work_api.breaker_open_secs = 600;
            s.delivery.max_attempts = 20;
        })
        .await;
        mock_diretrix_phone(
            &app.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_work_status(&app, 503, 2).await;

        let id = app.post_c2s_ok(&lead("L1")).await[0];
        let store = app.store().clone();
        let parked = wait_for(
            "the circuit to park the event",
            Duration::from_secs(10),
            || {
                let store = store.clone();
                async move {
                    store.event(id).await.ok()?.filter(|e| {
                        e.state.as_str() == "pending"
                            && e.last_error
                                .as_deref()
                                .is_some_and(|r| r.contains("circuit open"))
                    })
                }
            },
        )
        .await;
        assert_eq!(
            parked.attempts, 2,
            "two calls; turning it away is not an attempt"
        );

        let ready: serde_json::Value = app
            .http
            .get(format!("{}/ready", app.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["circuits"]["work_api"], "open", "{ready}");
        let metrics = app.scrape().await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("enricher_provider_circuit{")
                    && l.contains("provider=\"work_api\"")
                    && l.contains("state=\"open\"")
                    && l.ends_with(" 1")),
            "{metrics}"
        );
        app.verify_mocks().await;
    }
);

both_backends!(
    parked_events_complete_without_an_operator_once_the_provider_is_back,
    |backend| async move {
        let app = spawn_app_with(backend, |s| {
            s.work_api.breaker_failures = 2;
            s.work_api.breaker_open_secs = 1;
            s.delivery.max_attempts = 20;
        })
        .await;
        mock_diretrix_phone(
            &app.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_work_status(&app, 503, 2).await;
        mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 1).await;
        mock_c2s_ok(&app.c2s, 1).await;

        let id = app.post_c2s_ok(&lead("L1")).await[0];
        let event = app.wait_final(id).await;
        assert_eq!(event.outcome.map(|o| o.as_str()), Some("delivered"));
        app.verify_mocks().await;
    }
);

both_backends!(
    an_event_parked_by_an_open_circuit_does_not_spend_its_attempts_on_the_outage,
    |backend| async move {
        // Two attempts only: one real failure opens the circuit, and the turned-away attempt
        // must not be the second one that dead-letters the event.
        let app = spawn_app_with(backend, |s| {
            s.work_api.breaker_failures = 1;
            s.work_api.breaker_open_secs = 1;
            s.delivery.max_attempts = 2;
        })
        .await;
        mock_diretrix_phone(
            &app.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_work_status(&app, 503, 1).await;
        mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 1).await;
        mock_c2s_ok(&app.c2s, 1).await;

        let id = app.post_c2s_ok(&lead("L1")).await[0];
        let event = app.wait_final(id).await;
        assert_eq!(
            event.outcome.map(|o| o.as_str()),
            Some("delivered"),
            "{event:?}"
        );
        app.verify_mocks().await;
    }
);
