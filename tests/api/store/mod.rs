//! Store conformance: every behaviour of the store's roles, run against Postgres and SQLite
//! alike, so the two backends can be swapped without the rest of the service noticing.
//! One file per section; the helpers below are shared by all of them.

mod admin;
mod candidates;
mod claims;
mod contacts;
mod crm_creations;
mod erasure;
mod finish;
mod inbox;
mod negatives;
mod persons;
mod replay;
mod warming;

use std::time::Duration;

use enricher::domain::contact_key::ContactKind;
use enricher::domain::{ContactKey, Cpf, Email, LeadId, Person, Phone};
use enricher::event::{Action, LeadEvent, Source};
use enricher::providers::work_api::WorkApiAnswer;
use enricher::store::{
    ClaimedEvent, DynStore, Erasure, EventRecord, EventState, Finish, InsertOutcome, LeadLink,
    Lookup, NewEvent, Outcome, PartyCounts, Provider, Replay, StoredPerson,
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

fn done(outcome: Outcome) -> Finish {
    Finish::Done {
        outcome,
        contact_set: None,
    }
}

fn phone_key() -> ContactKey {
    ContactKey::Phone(Phone::parse("(11) 98765-4321").unwrap())
}

fn email_key() -> ContactKey {
    ContactKey::Email(Email::parse("maria.souza@example.com").unwrap())
}

/// Maria's phone looked up and found (her CPF and the name the lookup gave), remembered
/// without expiry; returns her CPF.
async fn maria_found_by_phone(store: &DynStore) -> Cpf {
    store
        .record_contact(
            &phone_key(),
            &Lookup::Found((maria_cpf(), Some("MARIA APARECIDA SOUZA".to_owned()))),
            far_future(),
        )
        .await
        .unwrap();
    maria_cpf()
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

/// Asserts that an instant the store wrote lies between two readings of the clock taken
/// around the write: the store binds every instant from the application's clock, which is
/// this test's. Stored instants keep whole microseconds, so `before` may lose its fraction.
fn assert_written_between(
    what: &str,
    at: OffsetDateTime,
    before: OffsetDateTime,
    after: OffsetDateTime,
) {
    let floor = before - Duration::from_micros(1);
    assert!(
        floor <= at && at <= after,
        "{what} {at} is not between {before} and {after}"
    );
}

fn far_future() -> OffsetDateTime {
    now() + Duration::from_secs(86_400)
}
