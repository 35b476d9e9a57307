//! Group commit in intake: concurrent requests share one inbox transaction, and each is
//! answered exactly as if it had been stored alone.

use std::collections::HashSet;
use std::time::Duration;

use enricher::domain::LeadId;
use enricher::intake::group_commit::GroupCommit;
use enricher::store::{DynStore, InsertOutcome, NewEvent, StoreError};
use futures::future::join_all;
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::both_backends;
use crate::helpers::*;

const T1: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);

/// Long enough that requests sent together always land in one batch, short enough not to
/// slow the suite: a batch waits this long for more once it could commit.
const GATHER: Duration = Duration::from_millis(200);

fn event(lead: &str) -> NewEvent {
    NewEvent::new(
        enricher::event::LeadEvent::new(
            enricher::event::Source::C2s,
            LeadId::parse(lead).unwrap(),
            enricher::event::Action::Create,
            T1,
        ),
        json!({"id": lead}),
    )
}

/// Sends every request at once through one group committer; returns each request's answer.
async fn insert_together(
    store: &DynStore,
    requests: Vec<Vec<NewEvent>>,
) -> Vec<(Vec<NewEvent>, Result<Vec<InsertOutcome>, StoreError>)> {
    let inbox = GroupCommit::start(store.clone(), 1000, GATHER);
    join_all(requests.into_iter().map(|events| inbox.insert(events))).await
}

both_backends!(
    concurrent_requests_are_each_answered_about_their_own_events,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        // Thirty requests, every third one carrying two events.
        let requests: Vec<Vec<NewEvent>> = (0..30)
            .map(|k| {
                let mut events = vec![event(&format!("lead-{k}"))];
                if k % 3 == 0 {
                    events.push(event(&format!("lead-{k}-b")));
                }
                events
            })
            .collect();
        let sent: Vec<Vec<String>> = requests
            .iter()
            .map(|r| r.iter().map(|e| e.event.lead.as_str().to_owned()).collect())
            .collect();

        let answers = insert_together(&store, requests).await;

        let mut ids = HashSet::new();
        for ((events, result), leads) in answers.into_iter().zip(sent) {
            let returned: Vec<String> = events
                .iter()
                .map(|e| e.event.lead.as_str().to_owned())
                .collect();
            assert_eq!(returned, leads, "a request gets its own events back");
            let outcomes = result.expect("stored");
            assert_eq!(outcomes.len(), leads.len());
            for (outcome, lead) in outcomes.into_iter().zip(&leads) {
                let InsertOutcome::Accepted(id) = outcome else {
                    panic!("{lead} was new, got {outcome:?}");
                };
                assert!(ids.insert(id), "event id {id} answered twice");
                let stored = store
                    .event(id)
                    .await
                    .unwrap()
                    .expect("the answered id exists");
                assert_eq!(
                    &stored.lead_id, lead,
                    "the id answered is that of this event"
                );
            }
        }
        assert_eq!(ids.len(), 40);
        assert_eq!(store.events(None, 100).await.unwrap().len(), 40);
    }
);

both_backends!(
    a_duplicate_inside_one_batch_is_accepted_once_and_a_duplicate_everywhere_else,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        // Ten requests for the same event, one request carrying it twice, and a request for
        // another lead in between.
        let mut requests: Vec<Vec<NewEvent>> = (0..10).map(|_| vec![event("lead-a")]).collect();
        requests.insert(4, vec![event("lead-b")]);
        requests.push(vec![event("lead-a"), event("lead-a")]);

        let answers = insert_together(&store, requests).await;

        let outcomes: Vec<Vec<InsertOutcome>> = answers
            .into_iter()
            .map(|(_, result)| result.expect("stored"))
            .collect();
        let accepted_a = outcomes
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != 4)
            .flat_map(|(_, o)| o)
            .filter(|o| matches!(o, InsertOutcome::Accepted(_)))
            .count();
        assert_eq!(accepted_a, 1, "lead-a accepted exactly once: {outcomes:?}");
        assert!(matches!(outcomes[4][..], [InsertOutcome::Accepted(_)]));
        assert_eq!(outcomes.iter().map(Vec::len).sum::<usize>(), 13);
        assert_eq!(store.events(None, 10).await.unwrap().len(), 2);

        // Across batches too: the same event later is a duplicate.
        let again =
            insert_together(&store, vec![vec![event("lead-a")], vec![event("lead-b")]]).await;
        for (_, result) in again {
            assert_eq!(result.unwrap(), vec![InsertOutcome::Duplicate]);
        }
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_database_refuses_fails_alone_and_the_rest_of_its_batch_is_stored() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    // jsonb refuses the NUL escape (SQLSTATE 22P05). Intake turns such bodies away before the
    // store; built here directly, it stands for any value the database refuses.
    let mut refused = event("lead-bad");
    refused.payload = json!({"note": "a\u{0}b"});
    let requests = vec![
        vec![event("lead-a")],
        vec![event("lead-b"), refused],
        vec![event("lead-c")],
    ];

    let answers = insert_together(&store, requests).await;

    let results: Vec<_> = answers.into_iter().map(|(_, r)| r).collect();
    assert!(
        matches!(results[1], Err(StoreError::Rejected(_))),
        "{results:?}"
    );
    for k in [0, 2] {
        assert!(
            matches!(results[k].as_deref(), Ok([InsertOutcome::Accepted(_)])),
            "{results:?}"
        );
    }
    let mut leads: Vec<String> = store
        .events(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.lead_id)
        .collect();
    leads.sort();
    assert_eq!(
        leads,
        ["lead-a", "lead-c"],
        "nothing of the refused request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_gone_every_request_of_a_batch_answers_503() {
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.server.group_commit_wait_us = GATHER.as_micros() as u64;
    })
    .await;
    app.db.destroy().await;

    let bodies: Vec<serde_json::Value> = (0..20)
        .map(|k| {
            c2s_event(
                &format!("L{k}"),
                "on_create_lead",
                "2026-11-20T10:00:00Z",
                Some("11987654321"),
                None,
            )
        })
        .collect();
    let responses = join_all(bodies.iter().map(|body| app.post_c2s(body))).await;

    for response in responses {
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unavailable");
    }
}
