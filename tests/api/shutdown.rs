//! Graceful shutdown of the real binary: SIGTERM with an event in flight (a provider answering
//! slowly). Within `ENRICHER__WORKERS__DRAIN_SECS` the event either finishes or is handed back
//! to the inbox; the process exits 0 either way, and a restart finishes what was handed back
//! without posting anything twice. The store's hand-back is checked on both backends.

use std::time::Duration;

use serde_json::Value;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_backends;
use crate::helpers::*;
use crate::pipeline::{CPF, PHONE_NATIONAL, mock_c2s_ok, mock_diretrix_phone};
use crate::process::{Process, World};
use enricher::domain::LeadId;
use enricher::store::{InsertOutcome, NewEvent};

/// Longer than any drain here: a call still waiting when the grace period ends.
const STALL: Duration = Duration::from_secs(60);
/// Well inside Fly's 30 s kill timeout.
const EXIT_DEADLINE: Duration = Duration::from_secs(15);

async fn mock_work_slow(server: &MockServer, delay: Duration, times: u64) {
    Mock::given(method("GET"))
        .and(path("/api"))
        .and(query_param("consulta", CPF))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(fixture("work_api_person.json"))
                .set_delay(delay),
        )
        .up_to_n_times(times)
        .expect(times)
        .mount(server)
        .await;
}

fn lead(n: u32) -> Value {
    c2s_event(
        &format!("lead-{n}"),
        "on_create_lead",
        "2026-03-01T12:00:00Z",
        Some(PHONE_NATIONAL),
        None,
    )
}

async fn post(process: &Process, body: &Value) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .post(format!("{}/api/v1/webhooks/c2s", process.address))
        .json(body)
        .send()
        .await
}

async fn post_ok(process: &Process, body: &Value) -> i64 {
    let response = post(process, body).await.unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["events"][0]["event_id"].as_i64().unwrap()
}

async fn wait_calls(server: &MockServer, n: usize) {
    wait_for(
        &format!("{n} provider call(s)"),
        Duration::from_secs(20),
        || async move {
            let got = server.received_requests().await.unwrap_or_default().len();
            (got >= n).then_some(())
        },
    )
    .await;
}

/// After SIGTERM the listener is closed: a new webhook is never acknowledged.
async fn assert_not_accepting(process: &Process) {
    wait_for(
        "intake to stop accepting",
        Duration::from_secs(5),
        || async {
            match post(process, &lead(99)).await {
                Err(_) => Some(()),
                Ok(r) => {
                    assert_ne!(r.status(), 202, "a webhook acknowledged after SIGTERM");
                    Some(())
                }
            }
        },
    )
    .await;
}

both_backends!(
    sigterm_lets_an_event_in_flight_finish_within_the_grace_period_and_exits_zero,
    |backend| async move {
        let world = World::new(backend).await;
        mock_diretrix_phone(
            &world.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_work_slow(&world.work_api, Duration::from_millis(1500), 1).await;
        mock_c2s_ok(&world.c2s, 1).await;
        let mut process = world
            .process(&[("ENRICHER__WORKERS__DRAIN_SECS", "10")])
            .await;
        let id = post_ok(&process, &lead(1)).await;
        wait_calls(&world.work_api, 1).await;

        process.terminate();
        assert_not_accepting(&process).await;
        let status = process.wait_exit(EXIT_DEADLINE).await;
        assert!(status.success(), "exit status {status}");

        let event = world.store.event(id).await.unwrap().unwrap();
        assert_eq!(
            (event.state.as_str(), event.outcome.map(|o| o.as_str())),
            ("done", Some("delivered"))
        );
        assert_eq!(world.posted_leads().await, ["lead-1"]);
        assert!(process.output().contains("workers stopped"));
        world.verify_mocks().await;
    }
);

both_backends!(
    sigterm_hands_back_an_event_still_waiting_when_the_grace_period_ends_and_a_restart_finishes_it_once,
    |backend| async move {
        let world = World::new(backend).await;
        mock_diretrix_phone(&world.diretrix, PHONE_NATIONAL, fixture("diretrix_found.json"), 1).await;
        // The first call never answers in time; its answer never arrives, so the restart
        // asks again. Diretrix's answer was stored: it is not bought again.
        mock_work_slow(&world.work_api, STALL, 1).await;
        mock_work_slow(&world.work_api, Duration::ZERO, 1).await;
        mock_c2s_ok(&world.c2s, 1).await;
        let mut process = world.process(&[("ENRICHER__WORKERS__DRAIN_SECS", "1")]).await;
        let id = post_ok(&process, &lead(1)).await;
        wait_calls(&world.work_api, 1).await;

        process.terminate();
        let status = process.wait_exit(EXIT_DEADLINE).await;
        assert!(status.success(), "exit status {status}");
        let event = world.store.event(id).await.unwrap().unwrap();
        assert_eq!(
            (event.state.as_str(), event.attempts),
            ("pending", 0),
            "handed back without counting a failure"
        );
        assert!(world.posted_leads().await.is_empty());

        let _second = world.process(&[("ENRICHER__WORKERS__DRAIN_SECS", "1")]).await;
        let event = wait_for("the handed-back event to finish", Duration::from_secs(20), || {
            let store = world.store.clone();
            async move {
                let event = store.event(id).await.ok()??;
                (event.state.as_str() == "done").then_some(event)
            }
        })
        .await;
        assert_eq!(event.outcome.map(|o| o.as_str()), Some("delivered"));
        assert_eq!(world.posted_leads().await, ["lead-1"]);
        world.verify_mocks().await;
    }
);

both_backends!(
    a_handed_back_event_is_due_at_once_but_never_one_claimed_by_another_or_mid_post,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let mut ids = Vec::new();
        for lead in ["lead-a", "lead-b"] {
            let new = NewEvent::new(
                enricher::event::LeadEvent::new(
                    enricher::event::Source::C2s,
                    LeadId::parse(lead).unwrap(),
                    enricher::event::Action::Create,
                    time::OffsetDateTime::now_utc(),
                ),
                serde_json::json!({"id": lead}),
            );
            match store.insert_events(&[new]).await.unwrap().as_slice() {
                [InsertOutcome::Accepted(id)] => ids.push(*id),
                other => panic!("{other:?}"),
            }
        }
        let lease = Duration::from_secs(60);
        let claimed = store.claim_events(10, lease).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let (a, b) = if claimed[0].id == ids[0] {
            (&claimed[0], &claimed[1])
        } else {
            (&claimed[1], &claimed[0])
        };
        assert!(store.mark_sending(b).await.unwrap());

        assert!(store.release(a).await.unwrap());
        assert!(
            !store.release(b).await.unwrap(),
            "mid-POST: outcome unknown"
        );
        assert!(
            !store.release(a).await.unwrap(),
            "the claim is no longer ours"
        );

        let again = store.claim_events(10, lease).await.unwrap();
        assert_eq!(again.iter().map(|e| e.id).collect::<Vec<_>>(), [a.id]);
        assert_eq!(again[0].attempts, 0);
        assert!(
            !store.release(a).await.unwrap(),
            "a stale claim hands back nothing"
        );
        let record = store.event(b.id).await.unwrap().unwrap();
        assert_eq!(record.state.as_str(), "processing");
    }
);
