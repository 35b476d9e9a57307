//! Store conformance: every behaviour of the `Store` trait, run against Postgres and SQLite
//! alike, so the two backends can be swapped without the rest of the service noticing.

use std::time::Duration;

use enricher::domain::contact_key::ContactKind;
use enricher::domain::person::WorkApiAnswer;
use enricher::domain::{ContactKey, Cpf, Email, LeadId, Person, Phone};
use enricher::store::{
    ClaimedEvent, DynStore, EventRecord, Finish, InsertOutcome, LeadLink, Lookup, NewEvent,
    PartyCounts, StoredPerson,
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

fn new_event(lead: &str, event_at: OffsetDateTime) -> NewEvent {
    NewEvent {
        source: SOURCE,
        lead_id: LeadId::parse(lead).unwrap(),
        event_at,
        action: "update".to_owned(),
        payload: json!({"id": lead, "hook_action": "update"}),
    }
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
    match Person::from_work_api(&raw).unwrap() {
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

        let other_source = NewEvent {
            source: "other-crm",
            ..new_event("lead-a", T1)
        };
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
        let id = insert(&store, new_event("lead-a", T1)).await;
        let next_of_lead = insert(&store, new_event("lead-a", T2)).await;
        let event = claim_only(&store, id, LONG_LEASE).await;
        let at = now() + Duration::from_millis(300);

        let retry = Finish::Retry {
            at,
            error: "crm timeout".to_owned(),
        };
        assert!(store.finish(&event, retry).await.unwrap());

        assert!(
            claim(&store, LONG_LEASE).await.is_empty(),
            "neither the retried event nor a later one of its lead is due yet"
        );
        let again = claim_when_due(&store, id, LONG_LEASE).await;
        assert!(now() >= at, "claimed again before its retry time");
        assert_eq!(again.attempts, 1);
        assert_ne!(again.claim, event.claim);
        assert!(claim(&store, LONG_LEASE).await.is_empty());
        assert!(store.finish(&again, done("delivered")).await.unwrap());
        claim_only(&store, next_of_lead, LONG_LEASE).await;
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
            at: now() - Duration::from_secs(1),
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
            at: now() - Duration::from_secs(1),
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
        let until = now() + Duration::from_millis(300);

        store
            .record_contact(&email_key(), &Lookup::NotFound, until)
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
        wait_for("the negative to expire", PATIENCE, || {
            let store = store.clone();
            async move {
                let found = store.find_contact(&email_key()).await.unwrap();
                assert!(matches!(found, None | Some(Lookup::NotFound)));
                found.is_none().then_some(())
            }
        })
        .await;
        assert!(now() >= until, "expired early");
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
                now() - Duration::from_secs(1),
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
        assert_eq!(store.party_counts().await.unwrap().negatives, 0);
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
        let age = now() - stored.fetched_at;
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
        let until = now() + Duration::from_millis(300);

        store
            .record_person(&cpf, &Lookup::NotFound, "work_api", until)
            .await
            .unwrap();

        let counts = store.party_counts().await.unwrap();
        assert_eq!(counts.enrichments, 0);
        assert_eq!(counts.parties, 0);
        assert_eq!(counts.negatives, 1);
        let since = now() - Duration::from_secs(3600);
        assert!(matches!(
            store.find_person(&cpf, since).await.unwrap(),
            Some(Lookup::NotFound)
        ));
        wait_for("the negative to expire", PATIENCE, || {
            let store = store.clone();
            let cpf = cpf.clone();
            async move {
                match store.find_person(&cpf, since).await.unwrap() {
                    None => Some(()),
                    Some(Lookup::NotFound) => None,
                    Some(Lookup::Found(_)) => panic!("a not-found turned into a person"),
                }
            }
        })
        .await;
        assert!(now() >= until, "expired early");
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
            store.find_person(&maria_cpf(), now()).await.unwrap(),
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
        assert_eq!(store.party_counts().await.unwrap().negatives, 0);
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
