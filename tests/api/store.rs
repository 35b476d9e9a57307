//! Store conformance: every behaviour of the `Store` trait, run against Postgres and SQLite
//! alike, so the two backends can be swapped without the rest of the service noticing.

use std::time::Duration;

use enricher::domain::contact_key::ContactKind;
use enricher::domain::{ContactKey, Cpf, Email, LeadId, Person, Phone};
use enricher::event::{Action, LeadEvent, Source};
use enricher::providers::work_api::WorkApiAnswer;
use enricher::store::{
    ClaimedEvent, DynStore, Erasure, EventRecord, Finish, InsertOutcome, LeadLink, Lookup,
    NewEvent, PartyCounts, Replay, StoredPerson,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::both_backends;
use crate::helpers::*;

const SOURCE: &str = "c2s";
/// A lease no test outlives: the event stays with its first claimer.
const LONG_LEASE: Duration = Duration::from_secs(60);
/// How long a test waits for something time-based (a lease, a retry, a negative) to pass.
const PATIENCE: Duration = Duration::from_secs(5);

const T1: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);
const T2: OffsetDateTime = datetime!(2026-03-01 12:05:00 UTC);
const T3: OffsetDateTime = datetime!(2026-03-01 12:10:00 UTC);
const T4: OffsetDateTime = datetime!(2026-03-01 12:15:00 UTC);
const T5: OffsetDateTime = datetime!(2026-03-01 12:20:00 UTC);

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn lead_event(source: Source, lead: &str, event_at: OffsetDateTime) -> LeadEvent {
    LeadEvent::new(
        source,
        LeadId::parse(lead).unwrap(),
        Action::Other {
            name: "update".into(),
        },
        event_at,
    )
}

fn new_event(lead: &str, event_at: OffsetDateTime) -> NewEvent {
    NewEvent::new(
        lead_event(Source::C2s, lead, event_at),
        json!({"id": lead, "hook_action": "update"}),
    )
}

/// Inserts one event and returns its id, failing the test unless it was accepted.
async fn insert(store: &DynStore, event: NewEvent) -> i64 {
    match store.insert_events(&[event]).await.unwrap().as_slice() {
        [InsertOutcome::Accepted(id)] => *id,
        other => panic!("expected one accepted event, got {other:?}"),
    }
}

async fn claim(store: &DynStore, lease: Duration) -> Vec<ClaimedEvent> {
    store.claim_events(10, lease).await.unwrap()
}

/// The ids of claimed events, sorted: a claim returns its events in no promised order.
fn ids(events: &[ClaimedEvent]) -> Vec<i64> {
    let mut ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids
}

/// Claims and asserts that exactly the event `id` came back.
async fn claim_only(store: &DynStore, id: i64, lease: Duration) -> ClaimedEvent {
    let claimed = claim(store, lease).await;
    assert_eq!(ids(&claimed), vec![id], "expected exactly event {id}");
    claimed.into_iter().next().unwrap()
}

/// Claims until the event `id` comes back (its lease ran out or its retry became due).
async fn claim_when_due(store: &DynStore, id: i64, lease: Duration) -> ClaimedEvent {
    wait_for(&format!("event {id} to be claimable"), PATIENCE, || {
        let store = store.clone();
        async move {
            let claimed = store.claim_events(10, lease).await.unwrap();
            assert!(
                claimed.iter().all(|e| e.id == id),
                "only event {id} should become claimable, got {:?}",
                ids(&claimed)
            );
            claimed.into_iter().next()
        }
    })
    .await
}

async fn record(store: &DynStore, id: i64) -> EventRecord {
    store.event(id).await.unwrap().expect("the event exists")
}

/// The same event as seen by a worker whose claim was lost.
fn stale(event: &ClaimedEvent) -> ClaimedEvent {
    let mut stale = event.clone();
    stale.claim = uuid::Uuid::new_v4();
    stale
}

fn done(outcome: &str) -> Finish {
    Finish::Done {
        outcome: outcome.to_owned(),
        contact_set: None,
    }
}

fn phone_key() -> ContactKey {
    ContactKey::Phone(Phone::parse("(11) 98765-4321").unwrap())
}

fn email_key() -> ContactKey {
    ContactKey::Email(Email::parse("maria.souza@example.com").unwrap())
}

fn maria_cpf() -> Cpf {
    Cpf::parse("52601815906").unwrap()
}

fn other_cpf(last: u8) -> Cpf {
    Cpf::from_base([3, 1, 4, 1, 5, 9, 2, 6, last])
}

/// The fixture's raw Work API answer and the person read from it.
fn maria() -> (Value, Person) {
    let raw = fixture("work_api_person.json");
    match WorkApiAnswer::parse(&raw).unwrap() {
        WorkApiAnswer::Found(person) => (raw, person),
        WorkApiAnswer::NotFound => panic!("the fixture is a found person"),
    }
}

fn found_person(answer: Option<Lookup<StoredPerson>>) -> StoredPerson {
    match answer {
        Some(Lookup::Found(stored)) => stored,
        other => panic!("expected a stored person, got {other:?}"),
    }
}

fn far_future() -> OffsetDateTime {
    now() + Duration::from_secs(86_400)
}

// ---------------------------------------------------------------------------------------------
// insert_events

both_backends!(
    new_events_are_accepted_with_their_ids,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;

        let outcomes = store
            .insert_events(&[new_event("lead-a", T1), new_event("lead-b", T1)])
            .await
            .unwrap();

        let [InsertOutcome::Accepted(a), InsertOutcome::Accepted(b)] = outcomes[..] else {
            panic!("expected two accepted events, got {outcomes:?}");
        };
        assert_ne!(a, b);
        let listed = store.events(None, 10).await.unwrap();
        let mut listed_ids: Vec<i64> = listed.iter().map(|e| e.id).collect();
        listed_ids.sort_unstable();
        let mut expected = vec![a, b];
        expected.sort_unstable();
        assert_eq!(listed_ids, expected);
        let first = record(&store, a).await;
        assert_eq!(first.source, SOURCE);
        assert_eq!(first.lead_id, "lead-a");
        assert_eq!(first.event_at, T1);
        assert_eq!(first.action, "update");
        assert_eq!(first.state, "pending");
        assert_eq!(first.attempts, 0);
        assert_eq!(first.outcome, None);
        assert_eq!(first.last_error, None);
        assert!(!first.delivered);
        assert_eq!(store.events(Some("pending"), 10).await.unwrap().len(), 2);
        assert!(store.events(Some("done"), 10).await.unwrap().is_empty());
        assert_eq!(store.events(None, 1).await.unwrap().len(), 1);
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![("pending".to_owned(), 2)]
        );
        assert!(store.event(a.max(b) + 1000).await.unwrap().is_none());
    }
);

both_backends!(
    a_second_insert_of_the_same_event_is_a_duplicate,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        insert(&store, new_event("lead-a", T1)).await;

        let again = store
            .insert_events(&[new_event("lead-a", T1)])
            .await
            .unwrap();

        assert_eq!(again, vec![InsertOutcome::Duplicate]);
        assert_eq!(store.events(None, 10).await.unwrap().len(), 1);
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![("pending".to_owned(), 1)]
        );
    }
);

both_backends!(
    a_repeated_event_within_one_batch_is_a_duplicate,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;

        let outcomes = store
            .insert_events(&[
                new_event("lead-a", T1),
                new_event("lead-b", T1),
                new_event("lead-a", T1),
            ])
            .await
            .unwrap();

        assert!(matches!(outcomes[0], InsertOutcome::Accepted(_)));
        assert!(matches!(outcomes[1], InsertOutcome::Accepted(_)));
        assert_eq!(outcomes[2], InsertOutcome::Duplicate);
        assert_eq!(outcomes.len(), 3);
        assert_eq!(store.events(None, 10).await.unwrap().len(), 2);
    }
);

both_backends!(
    the_same_instant_written_with_another_offset_is_a_duplicate,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = insert(&store, new_event("lead-a", T1)).await;
        let same_instant_in_sao_paulo = datetime!(2026-03-01 09:00:00 -3);
        assert_eq!(same_instant_in_sao_paulo, T1);

        let again = store
            .insert_events(&[new_event("lead-a", same_instant_in_sao_paulo)])
            .await
            .unwrap();

        assert_eq!(again, vec![InsertOutcome::Duplicate]);
        assert_eq!(record(&store, id).await.event_at, T1);
    }
);

both_backends!(
    an_event_with_a_distinct_updated_at_is_accepted,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let first = insert(&store, new_event("lead-a", T1)).await;

        let outcomes = store
            .insert_events(&[
                new_event("lead-a", T1 + Duration::from_millis(1)),
                new_event("lead-a", T2),
            ])
            .await
            .unwrap();

        let [
            InsertOutcome::Accepted(second),
            InsertOutcome::Accepted(third),
        ] = outcomes[..]
        else {
            panic!("expected two accepted events, got {outcomes:?}");
        };
        assert!(first != second && second != third && first != third);
        assert_eq!(store.events(None, 10).await.unwrap().len(), 3);
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![("pending".to_owned(), 3)]
        );
    }
);

both_backends!(
    the_same_lead_and_instant_from_another_source_is_accepted,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        insert(&store, new_event("lead-a", T1)).await;

        let other_source = NewEvent::new(
            lead_event(Source::GoogleAds, "lead-a", T1),
            json!({"id": "lead-a"}),
        );
        insert(&store, other_source).await;

        assert_eq!(store.events(None, 10).await.unwrap().len(), 2);
    }
);

// ---------------------------------------------------------------------------------------------
// claim_events

both_backends!(
    a_claim_returns_due_pending_events_up_to_the_limit,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let a = insert(&store, new_event("lead-a", T1)).await;
        let b = insert(&store, new_event("lead-b", T1)).await;
        let c = insert(&store, new_event("lead-c", T1)).await;

        let first = store.claim_events(2, LONG_LEASE).await.unwrap();
        let rest = claim(&store, LONG_LEASE).await;

        assert_eq!(first.len(), 2);
        assert_eq!(rest.len(), 1);
        let mut all = ids(&first);
        all.extend(ids(&rest));
        all.sort_unstable();
        assert_eq!(all, vec![a, b, c]);
        assert!(first.iter().all(|e| e.claim == first[0].claim));
        assert_ne!(first[0].claim, rest[0].claim);
        assert!(claim(&store, LONG_LEASE).await.is_empty());
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![("processing".to_owned(), 3)]
        );
        let claimed = first.iter().chain(&rest).find(|e| e.id == a).unwrap();
        assert_eq!(claimed.source, SOURCE);
        assert_eq!(claimed.lead_id, "lead-a");
        assert_eq!(claimed.event_at, T1);
        assert_eq!(claimed.action, "update");
        assert_eq!(
            claimed.payload,
            json!({"id": "lead-a", "hook_action": "update"})
        );
        assert_eq!(
            claimed.lead_event,
            Some(lead_event(Source::C2s, "lead-a", T1).to_stored()),
            "the lead event is stored beside the raw payload"
        );
        assert_eq!(claimed.attempts, 0);
        assert_eq!(claimed.contact_set, None);
        assert_eq!(claimed.message, None);
        assert!(!claimed.send_started);
        assert_eq!(record(&store, a).await.state, "processing");
    }
);

both_backends!(
    an_event_retried_in_the_future_is_not_due_yet,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, id, LONG_LEASE).await;
        let retry = Finish::Retry {
            at: far_future(),
            error: "crm unavailable".to_owned(),
        };
        assert!(store.finish(&event, retry).await.unwrap());

        assert!(claim(&store, LONG_LEASE).await.is_empty());
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![("pending".to_owned(), 1)]
        );
    }
);

both_backends!(
    a_claimed_event_is_not_claimed_again_while_its_lease_holds,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = insert(&store, new_event("lead-a", T1)).await;
        claim_only(&store, id, LONG_LEASE).await;

        assert!(claim(&store, LONG_LEASE).await.is_empty());
        assert!(claim(&store, Duration::ZERO).await.is_empty());
        assert_eq!(record(&store, id).await.state, "processing");
    }
);

both_backends!(
    an_event_whose_lease_ran_out_is_claimed_again_under_a_new_token,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = insert(&store, new_event("lead-a", T1)).await;
        let abandoned = claim_only(&store, id, Duration::ZERO).await;

        let taken_over = claim_when_due(&store, id, LONG_LEASE).await;

        assert_ne!(taken_over.claim, abandoned.claim);
        assert_eq!(taken_over.attempts, 0);
        assert!(claim(&store, LONG_LEASE).await.is_empty());
        // The first worker lost the event: nothing it does lands any more.
        assert!(!store.finish(&abandoned, done("delivered")).await.unwrap());
        assert!(!store.mark_sending(&abandoned).await.unwrap());
        assert!(store.finish(&taken_over, done("delivered")).await.unwrap());
        assert_eq!(record(&store, id).await.state, "done");
    }
);

both_backends!(
    events_of_one_lead_are_claimed_one_at_a_time_earliest_first,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let third = insert(&store, new_event("lead-a", T3)).await;
        let first = insert(&store, new_event("lead-a", T1)).await;
        let second = insert(&store, new_event("lead-a", T2)).await;
        let other = insert(&store, new_event("lead-b", T2)).await;

        let claimed = claim(&store, LONG_LEASE).await;
        let mut expected = vec![first, other];
        expected.sort_unstable();
        assert_eq!(ids(&claimed), expected);
        assert!(claim(&store, LONG_LEASE).await.is_empty());

        let event_first = claimed.iter().find(|e| e.id == first).unwrap();
        assert!(store.finish(event_first, done("delivered")).await.unwrap());
        let event_second = claim_only(&store, second, LONG_LEASE).await;
        assert_eq!(event_second.event_at, T2);
        assert!(claim(&store, LONG_LEASE).await.is_empty());

        assert!(
            store
                .finish(&event_second, done("unchanged"))
                .await
                .unwrap()
        );
        let event_third = claim_only(&store, third, LONG_LEASE).await;
        assert_eq!(event_third.event_at, T3);

        assert!(store.finish(&event_third, done("closed")).await.unwrap());
        assert!(claim(&store, LONG_LEASE).await.is_empty());
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![("done".to_owned(), 3), ("processing".to_owned(), 1)]
        );
    }
);

both_backends!(
    an_earlier_event_arriving_late_waits_while_a_later_one_of_its_lead_is_processing,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let later = insert(&store, new_event("lead-a", T2)).await;
        let in_flight = claim_only(&store, later, LONG_LEASE).await;

        let earlier = insert(&store, new_event("lead-a", T1)).await;

        assert!(
            claim(&store, LONG_LEASE).await.is_empty(),
            "two events of one lead must never be processed at once"
        );
        assert!(store.finish(&in_flight, done("delivered")).await.unwrap());
        claim_only(&store, earlier, LONG_LEASE).await;
    }
);

both_backends!(
    an_event_finished_for_retry_is_not_claimed_before_its_time,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let waiting = insert(&store, new_event("lead-a", T1)).await;
        let next_of_waiting = insert(&store, new_event("lead-a", T2)).await;
        let due = insert(&store, new_event("lead-b", T1)).await;
        let next_of_due = insert(&store, new_event("lead-b", T2)).await;
        let claimed = claim(&store, LONG_LEASE).await;
        assert_eq!(ids(&claimed), vec![waiting, due]);

        // Retry times an hour ahead and a second behind on the database's own clock: no
        // machine load or clock skew can move one across the other.
        let clock = db.now().await;
        for event in &claimed {
            let at = if event.id == waiting {
                clock + Duration::from_secs(3600)
            } else {
                clock - Duration::from_secs(1)
            };
            let retry = Finish::Retry {
                at,
                error: "crm timeout".to_owned(),
            };
            assert!(store.finish(event, retry).await.unwrap());
        }

        // Neither the waiting event nor a later one of its lead: only the due one.
        let again = claim_only(&store, due, LONG_LEASE).await;
        assert_eq!(again.attempts, 1);
        let first = claimed.iter().find(|e| e.id == due).unwrap();
        assert_ne!(again.claim, first.claim);
        assert!(claim(&store, LONG_LEASE).await.is_empty());
        assert!(store.finish(&again, done("delivered")).await.unwrap());
        claim_only(&store, next_of_due, LONG_LEASE).await;
        assert!(claim(&store, LONG_LEASE).await.is_empty());
        let still = record(&store, waiting).await;
        assert_eq!((still.state.as_str(), still.attempts), ("pending", 1));
        assert_eq!(record(&store, next_of_waiting).await.state, "pending");
    }
);

both_backends!(
    a_dead_event_does_not_block_later_events_of_its_lead,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let first = insert(&store, new_event("lead-a", T1)).await;
        let second = insert(&store, new_event("lead-a", T2)).await;
        let event = claim_only(&store, first, LONG_LEASE).await;

        let dead = Finish::Dead {
            reason: "payload unreadable".to_owned(),
        };
        assert!(store.finish(&event, dead).await.unwrap());

        claim_only(&store, second, LONG_LEASE).await;
    }
);

// ---------------------------------------------------------------------------------------------
// stale claims

both_backends!(
    a_stale_claim_can_neither_finish_nor_mark_sending_nor_save_rendered,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let cpf = maria_cpf();
        store
            .record_contact(
                &phone_key(),
                &Lookup::Found((cpf.clone(), None)),
                far_future(),
            )
            .await
            .unwrap();
        let id = insert(&store, new_event("lead-a", T1)).await;
        // A zero lease, so the untouched event can be claimed again and inspected.
        let event = claim_only(&store, id, Duration::ZERO).await;
        let stale = stale(&event);
        let before = serde_json::to_value(record(&store, id).await).unwrap();
        let counts_before = store.party_counts().await.unwrap();

        for finish in [
            done("delivered"),
            Finish::Done {
                outcome: "unchanged".to_owned(),
                contact_set: Some("phone:+5511987654321".to_owned()),
            },
            Finish::Retry {
                at: now(),
                error: "late".to_owned(),
            },
            Finish::Dead {
                reason: "late".to_owned(),
            },
        ] {
            assert!(!store.finish(&stale, finish).await.unwrap());
        }
        assert!(!store.mark_sending(&stale).await.unwrap());
        let links = [LeadLink {
            cpf,
            via: ContactKind::Phone,
        }];
        let saved = store
            .save_rendered(&stale, "phone:+5511987654321", "Olá", &links)
            .await
            .unwrap();
        assert!(!saved);

        assert_eq!(
            serde_json::to_value(record(&store, id).await).unwrap(),
            before
        );
        assert_eq!(store.party_counts().await.unwrap(), counts_before);
        let again = claim_when_due(&store, id, LONG_LEASE).await;
        assert_eq!(again.attempts, 0);
        assert_eq!(again.contact_set, None);
        assert_eq!(again.message, None);
        assert!(!again.send_started);
    }
);

// ---------------------------------------------------------------------------------------------
// finish

both_backends!(
    a_retry_counts_one_attempt_and_keeps_the_error,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, id, LONG_LEASE).await;

        let retry = Finish::Retry {
            at: db.now().await - Duration::from_secs(1),
            error: "crm answered 503".to_owned(),
        };
        assert!(store.finish(&event, retry).await.unwrap());

        let after = record(&store, id).await;
        assert_eq!(after.state, "pending");
        assert_eq!(after.attempts, 1);
        assert_eq!(after.last_error.as_deref(), Some("crm answered 503"));
        assert_eq!(after.outcome, None);
        assert!(!after.delivered);
        // The claim ended with the finish: the same worker cannot finish it twice.
        assert!(!store.finish(&event, done("delivered")).await.unwrap());

        let again = claim_only(&store, id, LONG_LEASE).await;
        assert_eq!(again.attempts, 1);
        let retry = Finish::Retry {
            at: db.now().await - Duration::from_secs(1),
            error: "crm timed out".to_owned(),
        };
        assert!(store.finish(&again, retry).await.unwrap());
        let after = record(&store, id).await;
        assert_eq!(after.attempts, 2);
        assert_eq!(after.last_error.as_deref(), Some("crm timed out"));
    }
);

both_backends!(
    a_dead_event_counts_one_attempt_and_keeps_the_reason,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, id, LONG_LEASE).await;

        let dead = Finish::Dead {
            reason: "crm rejected the message".to_owned(),
        };
        assert!(store.finish(&event, dead).await.unwrap());

        let after = record(&store, id).await;
        assert_eq!(after.state, "dead");
        assert_eq!(after.attempts, 1);
        assert_eq!(
            after.last_error.as_deref(),
            Some("crm rejected the message")
        );
        assert!(!after.delivered);
        let dead_ones = store.events(Some("dead"), 10).await.unwrap();
        assert_eq!(dead_ones.len(), 1);
        assert_eq!(dead_ones[0].id, id);
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![("dead".to_owned(), 1)]
        );
        assert!(claim(&store, Duration::ZERO).await.is_empty());
    }
);

both_backends!(
    done_as_delivered_marks_the_event_delivered_and_other_outcomes_do_not,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let delivered = insert(&store, new_event("lead-a", T1)).await;
        let unchanged = insert(&store, new_event("lead-b", T1)).await;
        let closed = insert(&store, new_event("lead-c", T1)).await;
        let claimed = claim(&store, LONG_LEASE).await;
        assert_eq!(claimed.len(), 3);

        for event in &claimed {
            let outcome = match event.id {
                id if id == delivered => "delivered",
                id if id == unchanged => "unchanged",
                _ => "closed",
            };
            assert!(store.finish(event, done(outcome)).await.unwrap());
        }

        let after = record(&store, delivered).await;
        assert_eq!(after.state, "done");
        assert_eq!(after.outcome.as_deref(), Some("delivered"));
        assert!(after.delivered);
        assert_eq!(after.attempts, 0);
        for (id, outcome) in [(unchanged, "unchanged"), (closed, "closed")] {
            let after = record(&store, id).await;
            assert_eq!(after.state, "done");
            assert_eq!(after.outcome.as_deref(), Some(outcome));
            assert!(!after.delivered, "{outcome} is not a delivery");
        }
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![("done".to_owned(), 3)]
        );
    }
);

// ---------------------------------------------------------------------------------------------
// mark_sending and save_rendered

both_backends!(
    an_event_reclaimed_after_sending_started_says_so,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, id, Duration::ZERO).await;
        assert!(!event.send_started);

        assert!(store.mark_sending(&event).await.unwrap());

        let again = claim_when_due(&store, id, LONG_LEASE).await;
        assert!(again.send_started);
    }
);

both_backends!(
    a_rendered_message_comes_back_on_the_reclaimed_event,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, id, Duration::ZERO).await;

        let saved = store
            .save_rendered(&event, "phone:+5511987654321", "Maria: CPF encontrado", &[])
            .await
            .unwrap();
        assert!(saved);

        let again = claim_when_due(&store, id, LONG_LEASE).await;
        assert_eq!(again.message.as_deref(), Some("Maria: CPF encontrado"));
        assert_eq!(again.contact_set.as_deref(), Some("phone:+5511987654321"));
        assert!(!again.send_started);
    }
);

both_backends!(
    save_rendered_links_the_lead_only_to_parties_that_exist,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let known = maria_cpf();
        store
            .record_contact(
                &phone_key(),
                &Lookup::Found((known.clone(), Some("MARIA APARECIDA SOUZA".to_owned()))),
                far_future(),
            )
            .await
            .unwrap();
        let id = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, id, LONG_LEASE).await;
        let links = [
            LeadLink {
                cpf: known,
                via: ContactKind::Phone,
            },
            LeadLink {
                cpf: other_cpf(7),
                via: ContactKind::Email,
            },
        ];

        let saved = store
            .save_rendered(&event, "email:x,phone:y", "message", &links)
            .await
            .unwrap();
        assert!(saved);
        assert_eq!(store.party_counts().await.unwrap().lead_links, 1);

        // Saving again (a retry re-rendering) does not link twice.
        let saved = store
            .save_rendered(&event, "email:x,phone:y", "message", &links)
            .await
            .unwrap();
        assert!(saved);
        let counts = store.party_counts().await.unwrap();
        assert_eq!(counts.lead_links, 1);
        assert_eq!(counts.parties, 1, "linking never creates a party");
    }
);

// ---------------------------------------------------------------------------------------------
// previous_contact_set

both_backends!(
    the_first_event_of_a_lead_has_no_previous_contact_set,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, id, LONG_LEASE).await;

        assert_eq!(store.previous_contact_set(&event).await.unwrap(), None);
    }
);

both_backends!(
    the_previous_contact_set_is_that_of_the_latest_earlier_event_of_the_lead_that_has_one,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let a1 = insert(&store, new_event("lead-a", T1)).await;
        let a2 = insert(&store, new_event("lead-a", T2)).await;
        let a3 = insert(&store, new_event("lead-a", T3)).await;
        let a5 = insert(&store, new_event("lead-a", T5)).await;
        // Another lead's event between them, with a contact set of its own.
        let b = insert(&store, new_event("lead-b", T4)).await;

        let claimed = claim(&store, LONG_LEASE).await;
        let mut expected = vec![a1, b];
        expected.sort_unstable();
        assert_eq!(ids(&claimed), expected);
        let event_b = claimed.iter().find(|e| e.id == b).unwrap();
        let event_a1 = claimed.iter().find(|e| e.id == a1).unwrap();
        assert!(
            store
                .save_rendered(event_b, "email:other@example.com", "b", &[])
                .await
                .unwrap()
        );
        assert!(store.finish(event_b, done("delivered")).await.unwrap());
        // Set by save_rendered; a Done without a set keeps it.
        assert!(
            store
                .save_rendered(event_a1, "phone:+5511987654321", "a1", &[])
                .await
                .unwrap()
        );
        assert!(store.finish(event_a1, done("delivered")).await.unwrap());

        let event_a2 = claim_only(&store, a2, LONG_LEASE).await;
        assert_eq!(
            store
                .previous_contact_set(&event_a2)
                .await
                .unwrap()
                .as_deref(),
            Some("phone:+5511987654321")
        );
        // Set by the finish itself.
        let finish = Finish::Done {
            outcome: "delivered".to_owned(),
            contact_set: Some("email:maria.souza@example.com".to_owned()),
        };
        assert!(store.finish(&event_a2, finish).await.unwrap());

        // An event without a contact set is skipped over.
        let event_a3 = claim_only(&store, a3, LONG_LEASE).await;
        assert_eq!(
            store
                .previous_contact_set(&event_a3)
                .await
                .unwrap()
                .as_deref(),
            Some("email:maria.souza@example.com")
        );
        let dead = Finish::Dead {
            reason: "gave up".to_owned(),
        };
        assert!(store.finish(&event_a3, dead).await.unwrap());

        let event_a5 = claim_only(&store, a5, LONG_LEASE).await;
        assert_eq!(
            store
                .previous_contact_set(&event_a5)
                .await
                .unwrap()
                .as_deref(),
            Some("email:maria.souza@example.com"),
            "neither the event without a set nor the other lead's counts"
        );
    }
);

both_backends!(
    the_previous_contact_set_ignores_later_events_of_the_lead,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let later = insert(&store, new_event("lead-a", T3)).await;
        let event = claim_only(&store, later, LONG_LEASE).await;
        let finish = Finish::Done {
            outcome: "delivered".to_owned(),
            contact_set: Some("phone:+5511987654321".to_owned()),
        };
        assert!(store.finish(&event, finish).await.unwrap());

        // An older delivery of the same lead that arrived late.
        let late = insert(&store, new_event("lead-a", T1)).await;
        let late_event = claim_only(&store, late, LONG_LEASE).await;

        assert_eq!(store.previous_contact_set(&late_event).await.unwrap(), None);
    }
);

// ---------------------------------------------------------------------------------------------
// find_contact / record_contact

both_backends!(
    an_unknown_contact_is_not_in_the_store,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;

        assert_eq!(store.find_contact(&phone_key()).await.unwrap(), None);
        assert_eq!(store.find_contact(&email_key()).await.unwrap(), None);
        assert_eq!(store.party_counts().await.unwrap(), PartyCounts::default());
    }
);

both_backends!(
    a_found_contact_is_remembered_with_its_party,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let cpf = maria_cpf();

        store
            .record_contact(
                &phone_key(),
                &Lookup::Found((cpf.clone(), Some("MARIA APARECIDA SOUZA".to_owned()))),
                far_future(),
            )
            .await
            .unwrap();

        assert_eq!(
            store.find_contact(&phone_key()).await.unwrap(),
            Some(Lookup::Found(cpf.clone()))
        );
        assert_eq!(store.find_contact(&email_key()).await.unwrap(), None);
        let counts = store.party_counts().await.unwrap();
        assert_eq!((counts.parties, counts.contacts), (1, 1));
        assert_eq!(counts.negatives, 0);

        // A second contact of the same person adds a contact, not a party.
        store
            .record_contact(
                &email_key(),
                &Lookup::Found((cpf.clone(), None)),
                far_future(),
            )
            .await
            .unwrap();
        assert_eq!(
            store.find_contact(&email_key()).await.unwrap(),
            Some(Lookup::Found(cpf))
        );
        let counts = store.party_counts().await.unwrap();
        assert_eq!((counts.parties, counts.contacts), (1, 2));
    }
);

both_backends!(the_latest_answer_for_a_contact_wins, |backend| async move {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let before = other_cpf(1);
    let after = other_cpf(2);
    for cpf in [&before, &after] {
        store
            .record_contact(
                &phone_key(),
                &Lookup::Found((cpf.clone(), None)),
                far_future(),
            )
            .await
            .unwrap();
    }

    assert_eq!(
        store.find_contact(&phone_key()).await.unwrap(),
        Some(Lookup::Found(after))
    );
    assert_eq!(store.party_counts().await.unwrap().parties, 2);
});

both_backends!(
    a_not_found_contact_is_remembered_until_it_expires,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        // Expiries an hour either side of the database's own clock: the answer cannot depend
        // on how long the test took or on skew between the test's clock and the database's.
        let clock = db.now().await;

        store
            .record_contact(
                &email_key(),
                &Lookup::NotFound,
                clock + Duration::from_secs(3600),
            )
            .await
            .unwrap();

        assert_eq!(
            store.find_contact(&email_key()).await.unwrap(),
            Some(Lookup::NotFound)
        );
        assert_eq!(store.find_contact(&phone_key()).await.unwrap(), None);
        let counts = store.party_counts().await.unwrap();
        assert_eq!(counts.negatives, 1);
        assert_eq!((counts.parties, counts.contacts), (0, 0));

        // The same answer, remembered until an instant already past: no longer an answer.
        store
            .record_contact(
                &email_key(),
                &Lookup::NotFound,
                clock - Duration::from_secs(3600),
            )
            .await
            .unwrap();
        assert_eq!(store.find_contact(&email_key()).await.unwrap(), None);
        assert_eq!(
            store.count_negatives().await.unwrap(),
            0,
            "no live negative"
        );
    }
);

both_backends!(
    an_expired_not_found_contact_is_not_an_answer,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;

        store
            .record_contact(
                &phone_key(),
                &Lookup::NotFound,
                db.now().await - Duration::from_secs(1),
            )
            .await
            .unwrap();

        assert_eq!(store.find_contact(&phone_key()).await.unwrap(), None);
    }
);

both_backends!(
    a_later_found_clears_the_remembered_not_found,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        store
            .record_contact(&phone_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();

        store
            .record_contact(
                &phone_key(),
                &Lookup::Found((maria_cpf(), None)),
                far_future(),
            )
            .await
            .unwrap();

        assert_eq!(
            store.find_contact(&phone_key()).await.unwrap(),
            Some(Lookup::Found(maria_cpf()))
        );
        assert_eq!(
            store.count_negatives().await.unwrap(),
            0,
            "no live negative"
        );
    }
);

// ---------------------------------------------------------------------------------------------
// find_person / record_person

both_backends!(
    a_found_person_is_stored_with_party_enrichment_and_contacts,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (raw, person) = maria();
        let cpf = maria_cpf();

        store
            .record_person(
                &cpf,
                &Lookup::Found((raw, person.clone())),
                "work_api",
                far_future(),
            )
            .await
            .unwrap();

        let fresh_since = now() - Duration::from_secs(3600);
        let stored = found_person(store.find_person(&cpf, fresh_since).await.unwrap());
        assert!(stored.person == person, "the stored person differs");
        let age = db.now().await - stored.fetched_at;
        assert!(
            age.abs() < time::Duration::seconds(10),
            "fetched_at {} is not close to now",
            stored.fetched_at
        );
        // Two phones (one with WhatsApp, so three rows) and two emails.
        assert_eq!(
            store.party_counts().await.unwrap(),
            PartyCounts {
                parties: 1,
                contacts: 5,
                enrichments: 1,
                lead_links: 0,
                negatives: 0,
            }
        );
        assert_eq!(
            store
                .find_person(&other_cpf(3), fresh_since)
                .await
                .unwrap()
                .map(|_| ()),
            None
        );
    }
);

both_backends!(
    contacts_listed_in_person_data_do_not_answer_contact_lookups,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (raw, person) = maria();

        store
            .record_person(
                &maria_cpf(),
                &Lookup::Found((raw, person)),
                "work_api",
                far_future(),
            )
            .await
            .unwrap();

        assert_eq!(store.find_contact(&phone_key()).await.unwrap(), None);
        assert_eq!(store.find_contact(&email_key()).await.unwrap(), None);
    }
);

both_backends!(
    a_person_fetched_before_fresh_since_is_too_old,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (raw, person) = maria();
        let cpf = maria_cpf();
        store
            .record_person(
                &cpf,
                &Lookup::Found((raw, person)),
                "work_api",
                far_future(),
            )
            .await
            .unwrap();

        let answer = store
            .find_person(&cpf, now() + Duration::from_secs(3600))
            .await
            .unwrap();

        assert!(answer.is_none(), "expected no fresh person, got {answer:?}");
    }
);

both_backends!(
    a_not_found_person_stores_no_party_and_is_remembered_until_it_expires,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let cpf = maria_cpf();
        // As for contacts: expiries an hour either side of the database's own clock.
        let clock = db.now().await;

        store
            .record_person(
                &cpf,
                &Lookup::NotFound,
                "work_api",
                clock + Duration::from_secs(3600),
            )
            .await
            .unwrap();

        let counts = store.party_counts().await.unwrap();
        assert_eq!(counts.enrichments, 0);
        assert_eq!(counts.parties, 0);
        assert_eq!(counts.negatives, 1);
        let since = clock - Duration::from_secs(3600);
        assert!(matches!(
            store.find_person(&cpf, since).await.unwrap(),
            Some(Lookup::NotFound)
        ));

        store
            .record_person(
                &cpf,
                &Lookup::NotFound,
                "work_api",
                clock - Duration::from_secs(3600),
            )
            .await
            .unwrap();
        assert!(store.find_person(&cpf, since).await.unwrap().is_none());
        assert_eq!(
            store.count_negatives().await.unwrap(),
            0,
            "no live negative"
        );
    }
);

both_backends!(
    a_person_not_found_for_a_cpf_does_not_hide_a_contact_not_found,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;

        store
            .record_person(&maria_cpf(), &Lookup::NotFound, "work_api", far_future())
            .await
            .unwrap();
        store
            .record_contact(&phone_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();

        assert_eq!(store.party_counts().await.unwrap().negatives, 2);
        assert_eq!(
            store.find_contact(&phone_key()).await.unwrap(),
            Some(Lookup::NotFound)
        );
        assert!(matches!(
            store
                .find_person(&maria_cpf(), db.now().await)
                .await
                .unwrap(),
            Some(Lookup::NotFound)
        ));
    }
);

both_backends!(
    recording_a_person_twice_keeps_one_party_and_the_newest_enrichment_wins,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let cpf = maria_cpf();
        let (raw, older) = maria();
        let mut newer = older.clone();
        newer.income = Some("12000,00".to_owned());
        newer.purchasing_power = Some("ALTO".to_owned());
        assert!(newer != older);

        for person in [&older, &newer] {
            store
                .record_person(
                    &cpf,
                    &Lookup::Found((raw.clone(), person.clone())),
                    "work_api",
                    far_future(),
                )
                .await
                .unwrap();
        }

        let counts = store.party_counts().await.unwrap();
        assert_eq!(counts.parties, 1);
        assert_eq!(counts.enrichments, 2);
        assert_eq!(counts.contacts, 5, "the same contacts are not stored twice");
        let since = now() - Duration::from_secs(3600);
        let stored = found_person(store.find_person(&cpf, since).await.unwrap());
        assert!(stored.person == newer, "the older enrichment won");
    }
);

both_backends!(
    a_later_found_person_clears_the_remembered_not_found,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let cpf = maria_cpf();
        let (raw, person) = maria();
        store
            .record_person(&cpf, &Lookup::NotFound, "work_api", far_future())
            .await
            .unwrap();

        store
            .record_person(
                &cpf,
                &Lookup::Found((raw, person.clone())),
                "work_api",
                far_future(),
            )
            .await
            .unwrap();

        let since = now() - Duration::from_secs(3600);
        let stored = found_person(store.find_person(&cpf, since).await.unwrap());
        assert!(stored.person == person);
        assert_eq!(
            store.count_negatives().await.unwrap(),
            0,
            "no live negative"
        );
    }
);

// ---------------------------------------------------------------------------------------------
// ready

both_backends!(the_store_is_ready_after_migrating, |backend| async move {
    let db = TestDb::new(backend).await;
    let store = db.store().await;

    assert!(store.ready().await.unwrap());
    // Migrating again is harmless.
    store.migrate().await.unwrap();
    assert!(store.ready().await.unwrap());
});

// ---------------------------------------------------------------------------------------------
// replay

/// Inserts an event for `lead`, claims it and finishes it dead; returns its id.
async fn dead_event(store: &DynStore, lead: &str, reason: &str) -> i64 {
    let id = insert(store, new_event(lead, T1)).await;
    let event = claim_only(store, id, LONG_LEASE).await;
    let dead = Finish::Dead {
        reason: reason.to_owned(),
    };
    assert!(store.finish(&event, dead).await.unwrap());
    id
}

both_backends!(
    replaying_a_dead_event_makes_it_claimable_again_with_attempts_reset_and_its_message_kept,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, id, LONG_LEASE).await;
        let retry = Finish::Retry {
            at: db.now().await - Duration::from_secs(1),
            error: "crm answered 503".to_owned(),
        };
        assert!(store.finish(&event, retry).await.unwrap());
        let event = claim_only(&store, id, LONG_LEASE).await;
        assert!(
            store
                .save_rendered(&event, "phone:+5511987654321", "Maria: CPF encontrado", &[])
                .await
                .unwrap()
        );
        assert!(store.mark_sending(&event).await.unwrap());
        let dead = Finish::Dead {
            reason: "crm rejected the message".to_owned(),
        };
        assert!(store.finish(&event, dead).await.unwrap());
        assert_eq!(record(&store, id).await.attempts, 2);

        assert_eq!(store.replay_event(id).await.unwrap(), Replay::Replayed);

        let after = record(&store, id).await;
        assert_eq!(after.state, "pending");
        assert_eq!(after.attempts, 0);
        assert_eq!(after.outcome, None);
        assert_eq!(
            after.last_error.as_deref(),
            Some("crm rejected the message"),
            "the error stays until the next outcome"
        );
        let again = claim_only(&store, id, LONG_LEASE).await;
        assert_ne!(again.claim, event.claim);
        assert_eq!(again.attempts, 0);
        assert_eq!(again.message.as_deref(), Some("Maria: CPF encontrado"));
        assert_eq!(again.contact_set.as_deref(), Some("phone:+5511987654321"));
        assert!(!again.send_started, "the replay is not a crash mid-POST");
        // Now processing: not dead any more, so not replayable.
        assert_eq!(
            store.replay_event(id).await.unwrap(),
            Replay::NotReplayable {
                state: "processing".to_owned()
            }
        );
        assert!(store.finish(&again, done("delivered")).await.unwrap());
        let delivered = record(&store, id).await;
        assert_eq!(delivered.last_error, None);
        assert!(delivered.delivered);
    }
);

both_backends!(
    replaying_a_pending_or_done_event_is_not_replayable_and_changes_nothing,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let finished = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, finished, LONG_LEASE).await;
        assert!(store.finish(&event, done("delivered")).await.unwrap());
        let pending = insert(&store, new_event("lead-b", T1)).await;

        for (id, state) in [(pending, "pending"), (finished, "done")] {
            let before = serde_json::to_value(record(&store, id).await).unwrap();

            assert_eq!(
                store.replay_event(id).await.unwrap(),
                Replay::NotReplayable {
                    state: state.to_owned()
                }
            );

            assert_eq!(
                serde_json::to_value(record(&store, id).await).unwrap(),
                before
            );
        }
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![("done".to_owned(), 1), ("pending".to_owned(), 1)]
        );
    }
);

both_backends!(
    replaying_an_unknown_event_finds_nothing,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let id = insert(&store, new_event("lead-a", T1)).await;

        assert_eq!(
            store.replay_event(id + 1000).await.unwrap(),
            Replay::NotFound
        );
        assert_eq!(record(&store, id).await.state, "pending");
    }
);

both_backends!(
    replaying_every_dead_event_counts_them_and_leaves_the_others_alone,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let first = dead_event(&store, "lead-a", "gave up").await;
        let second = dead_event(&store, "lead-b", "gave up").await;
        let finished = insert(&store, new_event("lead-c", T1)).await;
        let event = claim_only(&store, finished, LONG_LEASE).await;
        assert!(store.finish(&event, done("delivered")).await.unwrap());
        insert(&store, new_event("lead-d", T1)).await;

        assert_eq!(store.replay_dead().await.unwrap(), 2);

        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![("done".to_owned(), 1), ("pending".to_owned(), 3)]
        );
        for id in [first, second] {
            let after = record(&store, id).await;
            assert_eq!((after.state.as_str(), after.attempts), ("pending", 0));
        }
        assert_eq!(
            store.replay_dead().await.unwrap(),
            0,
            "nothing is dead any more"
        );
    }
);

// ---------------------------------------------------------------------------------------------
// latest_event

both_backends!(
    the_latest_event_is_that_of_the_leads_latest_event_that_still_has_one,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let named = |source, lead: &str, at, name: &str| {
            let mut event = lead_event(source, lead, at);
            event.customer.name = Some(name.to_owned());
            NewEvent::new(event, json!({"id": lead}))
        };
        insert(&store, named(Source::C2s, "lead-a", T2, "second")).await;
        // Arrives later (a greater id) but happened earlier.
        insert(&store, named(Source::C2s, "lead-a", T1, "first")).await;
        insert(&store, named(Source::C2s, "lead-b", T3, "other lead")).await;
        insert(
            &store,
            named(Source::GoogleAds, "lead-a", T4, "other source"),
        )
        .await;
        let name_of = |event: Option<LeadEvent>| event.and_then(|e| e.customer.name);
        let lead_a = LeadId::parse("lead-a").unwrap();

        assert_eq!(
            name_of(store.latest_event(Source::C2s, &lead_a).await.unwrap()).as_deref(),
            Some("second")
        );
        assert_eq!(
            name_of(
                store
                    .latest_event(Source::GoogleAds, &lead_a)
                    .await
                    .unwrap()
            )
            .as_deref(),
            Some("other source")
        );
        let lead_z = LeadId::parse("lead-z").unwrap();
        assert!(
            store
                .latest_event(Source::C2s, &lead_z)
                .await
                .unwrap()
                .is_none()
        );
    }
);

both_backends!(
    rows_from_before_lead_events_are_converted_once_and_erased_ones_never,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let webhook = |lead: &str, action: &str| {
            json!({"id": lead, "hook_action": action, "attributes": {
                "updated_at": "2026-11-20T17:03:11Z",
                "customer": {"name": "Ana", "phone": "11987654321"}}})
        };
        let old = insert(
            &store,
            NewEvent::new(
                lead_event(Source::C2s, "lead-a", T1),
                webhook("lead-a", "on_update_lead"),
            ),
        )
        .await;
        let refresh = insert(
            &store,
            NewEvent::new(
                lead_event(Source::C2s, "lead-c", T2),
                webhook("lead-c", "on_update_lead"),
            ),
        )
        .await;
        let erased = insert(
            &store,
            NewEvent::new(
                lead_event(Source::C2s, "lead-b", T1),
                json!({"id": "lead-b", "erased": true}),
            ),
        )
        .await;
        // As a version without the column left them: no lead event; one queued as a refresh
        // (each on a lead of its own, so one claim takes them all).
        db.execute("UPDATE webhook_inbox SET lead_event = NULL")
            .await;
        db.execute(&format!(
            "UPDATE webhook_inbox SET action = 'refresh' WHERE id = {refresh}"
        ))
        .await;

        assert_eq!(
            enricher::intake::convert_stored_events(store.as_ref())
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            enricher::intake::convert_stored_events(store.as_ref())
                .await
                .unwrap(),
            0
        );
        let claimed = store.claim_events(10, LONG_LEASE).await.unwrap();
        let event_of = |id: i64| {
            claimed
                .iter()
                .find(|e| e.id == id)
                .unwrap()
                .lead_event
                .as_ref()
                .map(|e| LeadEvent::from_stored(e).unwrap())
        };
        let converted = event_of(old).unwrap();
        assert_eq!(converted.action, Action::Update);
        assert_eq!(
            converted.customer.phone,
            Some(Phone::parse("11987654321").unwrap())
        );
        assert_eq!(converted.at, datetime!(2026-11-20 17:03:11 UTC));
        assert_eq!(event_of(refresh).unwrap().action, Action::Refresh);
        assert!(
            event_of(erased).is_none(),
            "an erased row is left to end as erased"
        );
    }
);

// ---------------------------------------------------------------------------------------------
// erase_party / erasure_audit

const CPF_HASH: &str = "hmac-sha256:0f3a9c1be47d2a6e8b5c0d9f1e2a3b4c";
const ERASE_ACTION: &str = "DELETE /api/v1/parties";

fn landline_key() -> ContactKey {
    ContactKey::Phone(Phone::parse("(11) 3800-1234").unwrap())
}

/// Every contact the fixture person lists, as keys, sorted.
fn maria_keys() -> Vec<ContactKey> {
    let mut keys = vec![
        phone_key(),
        landline_key(),
        email_key(),
        ContactKey::Email(Email::parse("msouza84@example.org").unwrap()),
    ];
    keys.sort();
    keys
}

both_backends!(
    erasing_a_party_removes_its_data_and_not_founds_and_writes_one_audit_row_without_personal_data,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let cpf = maria_cpf();
        let (raw, person) = maria();
        for key in [phone_key(), email_key()] {
            store
                .record_contact(&key, &Lookup::Found((cpf.clone(), None)), far_future())
                .await
                .unwrap();
        }
        store
            .record_person(
                &cpf,
                &Lookup::Found((raw, person)),
                "work_api",
                far_future(),
            )
            .await
            .unwrap();
        // Not-founds of the party: its CPF on a later refetch, and a contact its data lists.
        store
            .record_person(&cpf, &Lookup::NotFound, "work_api", far_future())
            .await
            .unwrap();
        store
            .record_contact(&landline_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();
        // Someone else, who must survive.
        let someone_else = other_cpf(1);
        let their_phone = ContactKey::Phone(Phone::parse("(21) 99876-5432").unwrap());
        store
            .record_contact(
                &their_phone,
                &Lookup::Found((someone_else.clone(), None)),
                far_future(),
            )
            .await
            .unwrap();
        let unknown_email = ContactKey::Email(Email::parse("nobody@example.net").unwrap());
        store
            .record_contact(&unknown_email, &Lookup::NotFound, far_future())
            .await
            .unwrap();
        let id = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, id, LONG_LEASE).await;
        let links = [
            LeadLink {
                cpf: cpf.clone(),
                via: ContactKind::Phone,
            },
            LeadLink {
                cpf: someone_else.clone(),
                via: ContactKind::Phone,
            },
        ];
        assert!(
            store
                .save_rendered(&event, "phone:+5511987654321", "message", &links)
                .await
                .unwrap()
        );
        assert_eq!(
            store.party_counts().await.unwrap(),
            PartyCounts {
                parties: 2,
                contacts: 8,
                enrichments: 1,
                lead_links: 2,
                negatives: 3,
            }
        );

        let erasure = store
            .erase_party(&cpf, ERASE_ACTION, CPF_HASH)
            .await
            .unwrap();

        assert_eq!(
            erasure,
            Erasure {
                found: true,
                // Two lookup rows and five person rows (one phone twice: phone and WhatsApp).
                contacts: 7,
                enrichments: 1,
                lead_links: 1,
                negatives: 2,
                // lead-a is linked to the party: its one event is redacted.
                events: 1,
                contact_keys: maria_keys(),
            }
        );
        assert_eq!(
            store.party_counts().await.unwrap(),
            PartyCounts {
                parties: 1,
                contacts: 1,
                enrichments: 0,
                lead_links: 1,
                negatives: 1,
            }
        );
        for key in maria_keys() {
            assert_eq!(store.find_contact(&key).await.unwrap(), None, "{key:?}");
        }
        let long_ago = now() - Duration::from_secs(86_400);
        assert!(store.find_person(&cpf, long_ago).await.unwrap().is_none());
        assert_eq!(
            store.find_contact(&their_phone).await.unwrap(),
            Some(Lookup::Found(someone_else))
        );
        assert_eq!(
            store.find_contact(&unknown_email).await.unwrap(),
            Some(Lookup::NotFound)
        );

        let audit = store.erasure_audit(10).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].action, ERASE_ACTION);
        assert_eq!(audit[0].cpf_hash, CPF_HASH);
        assert_eq!(
            audit[0].counts,
            json!({"parties": 1, "contacts": 7, "enrichments": 1, "lead_links": 1, "negatives": 2, "events": 1})
        );
        let age = db.now().await - audit[0].at;
        assert!(
            age.abs() < time::Duration::seconds(10),
            "audit time {}",
            audit[0].at
        );
        let serialized = serde_json::to_string(&audit).unwrap();
        assert!(serialized.contains(CPF_HASH));
        for personal in [
            cpf.as_str().to_owned(),
            cpf.formatted(),
            "987654321".to_owned(),
            "38001234".to_owned(),
            "maria".to_owned(),
            "msouza".to_owned(),
            "example".to_owned(),
            "MARIA".to_owned(),
        ] {
            assert!(
                !serialized.contains(&personal),
                "the audit row holds personal data: {serialized}"
            );
        }
    }
);

both_backends!(
    erasing_an_unknown_cpf_still_forgets_its_not_found_and_writes_an_audit_row,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let cpf = other_cpf(5);
        store
            .record_person(&cpf, &Lookup::NotFound, "work_api", far_future())
            .await
            .unwrap();

        let first = store
            .erase_party(&cpf, ERASE_ACTION, CPF_HASH)
            .await
            .unwrap();
        let second = store
            .erase_party(&cpf, "operator erase", CPF_HASH)
            .await
            .unwrap();

        assert_eq!(
            first,
            Erasure {
                negatives: 1,
                ..Erasure::default()
            }
        );
        assert!(!first.found);
        assert_eq!(second, Erasure::default());
        assert_eq!(store.party_counts().await.unwrap(), PartyCounts::default());
        assert!(
            store
                .find_person(&cpf, now() - Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        let audit = store.erasure_audit(10).await.unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!(audit[0].action, "operator erase", "newest first");
        assert!(audit[0].id > audit[1].id);
        assert_eq!(
            audit[1].counts,
            json!({"parties": 0, "contacts": 0, "enrichments": 0, "lead_links": 0, "negatives": 1, "events": 0})
        );
        assert_eq!(audit[0].counts["negatives"], json!(0));
        assert_eq!(store.erasure_audit(1).await.unwrap().len(), 1);
    }
);

// ---------------------------------------------------------------------------------------------
// recent_people

async fn enrich(store: &DynStore, cpf: &Cpf, person: &Person) {
    let (raw, _) = maria();
    store
        .record_person(
            cpf,
            &Lookup::Found((raw, person.clone())),
            "work_api",
            far_future(),
        )
        .await
        .unwrap();
}

both_backends!(
    recent_people_are_the_latest_enriched_first_with_their_lookup_keys_up_to_the_limit,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (_, person) = maria();
        let mut newer = person.clone();
        newer.income = Some("12000,00".to_owned());
        let (a, b, c) = (other_cpf(1), other_cpf(2), other_cpf(3));
        store
            .record_contact(
                &phone_key(),
                &Lookup::Found((a.clone(), None)),
                far_future(),
            )
            .await
            .unwrap();
        store
            .record_contact(
                &email_key(),
                &Lookup::Found((c.clone(), None)),
                far_future(),
            )
            .await
            .unwrap();
        // A party known only from a lookup, never enriched: nothing to warm.
        let d = other_cpf(4);
        let d_phone = ContactKey::Phone(Phone::parse("(21) 99876-5432").unwrap());
        store
            .record_contact(&d_phone, &Lookup::Found((d, None)), far_future())
            .await
            .unwrap();
        enrich(&store, &a, &person).await;
        enrich(&store, &b, &person).await;
        enrich(&store, &c, &person).await;
        // A's newer enrichment makes it the most recent.
        enrich(&store, &a, &newer).await;

        let people = store.recent_people(None, 10).await.unwrap();

        let cpfs: Vec<&Cpf> = people.iter().map(|p| &p.cpf).collect();
        assert_eq!(cpfs, vec![&a, &c, &b]);
        assert!(people[0].person == newer, "A's latest enrichment is warmed");
        assert!(people[1].person == person);
        assert!(
            people
                .windows(2)
                .all(|w| w[0].fetched_at >= w[1].fetched_at),
            "newest first"
        );
        let age = db.now().await - people[0].fetched_at;
        assert!(age.abs() < time::Duration::seconds(10));
        // Only contacts a lookup answered; those the person data lists are not keys.
        assert_eq!(people[0].lookup_keys, vec![phone_key()]);
        assert_eq!(people[1].lookup_keys, vec![email_key()]);
        assert!(people[2].lookup_keys.is_empty());

        let two = store.recent_people(None, 2).await.unwrap();
        let cpfs: Vec<&Cpf> = two.iter().map(|p| &p.cpf).collect();
        assert_eq!(cpfs, vec![&a, &c]);
        assert!(store.recent_people(None, 0).await.unwrap().is_empty());
    }
);

both_backends!(
    recent_people_give_a_contact_only_to_the_party_its_latest_lookup_answered,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (_, person) = maria();
        let (before, after) = (other_cpf(1), other_cpf(2));
        for cpf in [&before, &after] {
            store
                .record_contact(
                    &phone_key(),
                    &Lookup::Found((cpf.clone(), None)),
                    far_future(),
                )
                .await
                .unwrap();
        }
        enrich(&store, &after, &person).await;
        enrich(&store, &before, &person).await;

        let people = store.recent_people(None, 10).await.unwrap();

        assert_eq!(people.len(), 2);
        assert_eq!(people[0].cpf, before);
        assert!(
            people[0].lookup_keys.is_empty(),
            "the phone now answers another party"
        );
        assert_eq!(people[1].cpf, after);
        assert_eq!(people[1].lookup_keys, vec![phone_key()]);
        assert_eq!(
            store.find_contact(&phone_key()).await.unwrap(),
            Some(Lookup::Found(after)),
            "warming agrees with the database"
        );
    }
);

both_backends!(
    recent_people_read_page_by_page_are_the_one_read_order_without_gaps_or_repeats,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (_, person) = maria();
        for i in 1..=7 {
            enrich(&store, &other_cpf(i), &person).await;
        }
        // Re-enriching moves a party to the front; it must still come once.
        enrich(&store, &other_cpf(3), &person).await;
        let all = store.recent_people(None, 100).await.unwrap();
        assert_eq!(all.len(), 7);

        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store.recent_people(after, 3).await.unwrap();
            assert!(page.len() <= 3);
            after = page.last().map(|p| p.position);
            let done = page.len() < 3;
            paged.extend(page);
            if done {
                break;
            }
        }

        let cpfs = |people: &[enricher::store::WarmPerson]| {
            people.iter().map(|p| p.cpf.clone()).collect::<Vec<_>>()
        };
        assert_eq!(cpfs(&paged), cpfs(&all));
        assert_eq!(
            paged[0].cpf,
            other_cpf(3),
            "the re-enriched party is newest"
        );
    }
);

both_backends!(
    recent_people_of_an_empty_store_are_none,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;

        assert!(store.recent_people(None, 10).await.unwrap().is_empty());
    }
);

// ---------------------------------------------------------------------------------------------
// forget_negative / forget_all_negatives / count_negatives

both_backends!(
    forgetting_a_not_found_removes_only_that_one,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        store
            .record_contact(&phone_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();
        store
            .record_contact(&email_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();
        store
            .record_person(&maria_cpf(), &Lookup::NotFound, "work_api", far_future())
            .await
            .unwrap();

        let phone = phone_key();
        assert_eq!(
            store.forget_negative("phone", phone.value()).await.unwrap(),
            1
        );
        assert_eq!(
            store.forget_negative("phone", phone.value()).await.unwrap(),
            0,
            "already forgotten"
        );
        assert_eq!(
            store.forget_negative("email", phone.value()).await.unwrap(),
            0,
            "the kind is part of the key"
        );

        assert_eq!(store.find_contact(&phone).await.unwrap(), None);
        assert_eq!(
            store.find_contact(&email_key()).await.unwrap(),
            Some(Lookup::NotFound)
        );
        assert_eq!(store.count_negatives().await.unwrap(), 2);
        assert_eq!(
            store
                .forget_negative("cpf", maria_cpf().as_str())
                .await
                .unwrap(),
            1
        );
        assert!(
            store
                .find_person(&maria_cpf(), now() - Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.count_negatives().await.unwrap(), 1);
    }
);

both_backends!(
    forgetting_all_not_founds_removes_expired_ones_too,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        store
            .record_contact(&phone_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();
        store
            .record_contact(
                &email_key(),
                &Lookup::NotFound,
                db.now().await - Duration::from_secs(1),
            )
            .await
            .unwrap();
        store
            .record_person(&maria_cpf(), &Lookup::NotFound, "work_api", far_future())
            .await
            .unwrap();

        assert_eq!(store.forget_all_negatives().await.unwrap(), 3);

        assert_eq!(
            store.count_negatives().await.unwrap(),
            0,
            "no live negative"
        );
        assert_eq!(store.count_negatives().await.unwrap(), 0);
        assert_eq!(store.find_contact(&phone_key()).await.unwrap(), None);
        assert_eq!(store.forget_all_negatives().await.unwrap(), 0);
    }
);

both_backends!(
    only_unexpired_not_founds_are_counted,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        assert_eq!(store.count_negatives().await.unwrap(), 0);
        store
            .record_contact(&phone_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();
        store
            .record_person(&maria_cpf(), &Lookup::NotFound, "work_api", far_future())
            .await
            .unwrap();
        store
            .record_contact(
                &email_key(),
                &Lookup::NotFound,
                db.now().await - Duration::from_secs(1),
            )
            .await
            .unwrap();

        assert_eq!(store.count_negatives().await.unwrap(), 2);
        assert_eq!(
            store.party_counts().await.unwrap().negatives,
            3,
            "the expired one is still stored"
        );
    }
);

both_backends!(
    erasing_a_party_clears_the_rendered_messages_of_its_linked_leads,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        store
            .record_contact(
                &phone_key(),
                &Lookup::Found((maria_cpf(), None)),
                far_future(),
            )
            .await
            .unwrap();
        let linked = insert(&store, new_event("lead-linked", T1)).await;
        let other = insert(&store, new_event("lead-other", T1)).await;
        let claimed = claim(&store, LONG_LEASE).await;
        assert_eq!(ids(&claimed), vec![linked, other]);
        for event in &claimed {
            let links = if event.id == linked {
                vec![LeadLink {
                    cpf: maria_cpf(),
                    via: phone_key().kind(),
                }]
            } else {
                vec![]
            };
            assert!(
                store
                    .save_rendered(event, "set", "bought data", &links)
                    .await
                    .unwrap()
            );
            let dead = Finish::Dead {
                reason: "crm rejected".into(),
            };
            assert!(store.finish(event, dead).await.unwrap());
        }

        store
            .erase_party(&maria_cpf(), "test", "hash")
            .await
            .unwrap();

        assert_eq!(store.replay_dead().await.unwrap(), 2);
        let replayed = claim(&store, LONG_LEASE).await;
        let message = |id: i64| {
            replayed
                .iter()
                .find(|e| e.id == id)
                .unwrap()
                .message
                .clone()
        };
        assert_eq!(message(linked), None, "rendered from erased data");
        assert_eq!(message(other).as_deref(), Some("bought data"));
    }
);

both_backends!(
    pruning_deletes_old_done_events_but_keeps_each_leads_latest_and_unfinished_ones,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let a1 = insert(&store, new_event("lead-a", T1)).await;
        let a2 = insert(&store, new_event("lead-a", T2)).await;
        let a3 = insert(&store, new_event("lead-a", T3)).await;
        let b1 = insert(&store, new_event("lead-b", T1)).await;
        // One event per lead at a time: a1 and b1 first, then a2.
        for expected in [vec![a1, b1], vec![a2]] {
            let claimed = claim(&store, LONG_LEASE).await;
            assert_eq!(ids(&claimed), expected);
            for event in &claimed {
                assert!(store.finish(event, done("delivered")).await.unwrap());
            }
        }
        // a3 stays pending: unfinished events are never pruned, and it is a's latest.
        let deleted = store
            .prune_done(db.now().await + Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(deleted, 2, "a1 and a2");
        assert!(store.event(a1).await.unwrap().is_none());
        assert!(store.event(a2).await.unwrap().is_none());
        assert!(store.event(a3).await.unwrap().is_some());
        assert!(
            store.event(b1).await.unwrap().is_some(),
            "b's latest is kept"
        );
        assert_eq!(
            store
                .prune_done(db.now().await - Duration::from_secs(60))
                .await
                .unwrap(),
            0,
            "nothing is older than the cutoff"
        );
    }
);
