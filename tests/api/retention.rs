//! Retention of the inbox's raw payloads: done events past
//! `ENRICHER__WORKERS__PAYLOAD_RETENTION_DAYS` lose the CRM's copy of the customer and the
//! rendered message, while the row stays for duplicate detection. Store conformance on both
//! backends, then the hourly job end to end with its metric.

use std::time::Duration;

use enricher::store::{ClaimedEvent, DynStore, Finish, InsertOutcome, NewEvent};
use serde_json::{Value, json};
use sqlx::Connection;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::both_backends;
use crate::dump::{all_rows, leak, maria_values};
use crate::helpers::*;
use crate::pipeline::{EMAIL, PHONE_NATIONAL, mock_c2s_ok, mock_maria};

const LONG_LEASE: Duration = Duration::from_secs(60);
const T1: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);
const T2: OffsetDateTime = datetime!(2026-03-01 12:05:00 UTC);
const CONTACTS: &str = "phone:+5511987654321";

/// A C2S event whose payload carries Maria as the customer.
fn event(lead: &str, at: OffsetDateTime) -> NewEvent {
    let updated_at = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let payload = c2s_event(
        lead,
        "on_create_lead",
        &updated_at,
        Some(PHONE_NATIONAL),
        Some(EMAIL),
    );
    let mut new = enricher::intake::c2s::parse_body(&payload)
        .unwrap()
        .remove(0);
    // The store keeps `event_at` to the microsecond; the test compares with `at` as given.
    new.event.at = at;
    new
}

async fn insert(store: &DynStore, new: NewEvent) -> i64 {
    match store.insert_events(&[new]).await.unwrap().as_slice() {
        [InsertOutcome::Accepted(id)] => *id,
        other => panic!("expected one accepted event, got {other:?}"),
    }
}

/// Claims the only due event, which must be `id`.
async fn claim(store: &DynStore, id: i64) -> ClaimedEvent {
    let mut claimed = store.claim_events(10, LONG_LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1, "one event due");
    let event = claimed.pop().unwrap();
    assert_eq!(event.id, id);
    event
}

/// Claims `id`, keeps a rendered message on it and ends it done with a contact set.
async fn deliver(store: &DynStore, id: i64) {
    let event = claim(store, id).await;
    assert!(
        store
            .save_rendered(&event, CONTACTS, "CPF: 526.018.159-06", &[])
            .await
            .unwrap()
    );
    let done = Finish::Done {
        outcome: enricher::store::Outcome::Delivered,
        contact_set: Some(CONTACTS.to_owned()),
    };
    assert!(store.finish(&event, done).await.unwrap());
}

/// `(payload, message, contact_set)` of one inbox row, read under the store.
async fn raw_row(url: &str, id: i64) -> (Value, Option<String>, Option<String>) {
    let (payload, message, contact_set): (String, Option<String>, Option<String>) =
        if url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_as(
                "SELECT payload::text, message, contact_set FROM webhook_inbox WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&mut conn)
            .await
            .unwrap()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_as("SELECT payload, message, contact_set FROM webhook_inbox WHERE id = $1")
                .bind(id)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        };
    (
        serde_json::from_str(&payload).unwrap(),
        message,
        contact_set,
    )
}

fn purged_payload(lead: &str, at: OffsetDateTime) -> Value {
    let updated_at = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    json!({
        "id": lead,
        "hook_action": "on_create_lead",
        "attributes": {"updated_at": updated_at},
        "erased": true,
        "purged": true,
    })
}

both_backends!(
    purging_empties_old_done_payloads_and_messages_but_keeps_rows_for_duplicates_and_the_latest_contact_set,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let a1 = insert(&store, event("lead-a", T1)).await;
        deliver(&store, a1).await;
        let a2 = insert(&store, event("lead-a", T2)).await;
        deliver(&store, a2).await;
        // A dead event keeps everything: an operator may replay it, which needs its message.
        let d1 = insert(&store, event("lead-d", T1)).await;
        let dead = claim(&store, d1).await;
        assert!(
            store
                .save_rendered(&dead, CONTACTS, "kept for replay", &[])
                .await
                .unwrap()
        );
        let reason = Finish::Dead {
            reason: "crm said 400".to_owned(),
        };
        assert!(store.finish(&dead, reason).await.unwrap());
        // A processing one is in a worker's hands.
        let p1 = insert(&store, event("lead-p", T1)).await;
        claim(&store, p1).await;
        let before_dead = raw_row(&db.url, d1).await;
        let before_processing = raw_row(&db.url, p1).await;

        let past = OffsetDateTime::now_utc() - Duration::from_secs(60);
        assert_eq!(
            store.purge_payloads(past).await.unwrap(),
            0,
            "nothing finished before the cutoff"
        );
        assert_eq!(raw_row(&db.url, a1).await.0["attributes"]["customer"]["phone"], PHONE_NATIONAL);

        let future = OffsetDateTime::now_utc() + Duration::from_secs(60);
        assert_eq!(store.purge_payloads(future).await.unwrap(), 2, "a1 and a2");
        assert_eq!(
            raw_row(&db.url, a1).await,
            (purged_payload("lead-a", T1), None, None),
            "an older event loses its contact set too"
        );
        assert_eq!(
            raw_row(&db.url, a2).await,
            (purged_payload("lead-a", T2), None, Some(CONTACTS.to_owned())),
            "the lead's latest contact set answers \"did the contacts change?\""
        );
        assert_eq!(raw_row(&db.url, d1).await, before_dead);
        assert_eq!(raw_row(&db.url, p1).await, before_processing);
        assert_eq!(
            store.purge_payloads(future).await.unwrap(),
            0,
            "a purged payload is not counted twice"
        );

        // The rows still answer a redelivery of the same webhook as a duplicate.
        assert!(matches!(
            store.insert_events(&[event("lead-a", T1)]).await.unwrap().as_slice(),
            [InsertOutcome::Duplicate]
        ));
        let a1_record = store.event(a1).await.unwrap().unwrap();
        assert_eq!(a1_record.state.as_str(), "done");
        assert_eq!(a1_record.outcome.map(|o| o.as_str()), Some("delivered"));
    }
);

both_backends!(
    purging_works_through_more_events_than_one_batch,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let count = 501;
        let mut events = Vec::new();
        for i in 0..count {
            events.push(event(&format!("lead-{i}"), T1));
        }
        store.insert_events(&events).await.unwrap();
        let claimed = store.claim_events(count, LONG_LEASE).await.unwrap();
        assert_eq!(claimed.len(), count as usize);
        for event in &claimed {
            let done = Finish::Done {
                outcome: enricher::store::Outcome::Delivered,
                contact_set: Some(CONTACTS.to_owned()),
            };
            assert!(store.finish(event, done).await.unwrap());
        }
        let future = OffsetDateTime::now_utc() + Duration::from_secs(60);
        assert_eq!(
            store.purge_payloads(future).await.unwrap(),
            u64::from(count)
        );
        assert_eq!(store.purge_payloads(future).await.unwrap(), 0);
    }
);

/// Moves every inbox row's last change back by `days`, as if it finished that long ago.
async fn age_inbox(url: &str, days: i64) {
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(
            "UPDATE webhook_inbox SET updated_at = updated_at - make_interval(days => $1::int)",
        )
        .bind(days as i32)
        .execute(&mut conn)
        .await
        .unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query("UPDATE webhook_inbox SET updated_at = updated_at - $1 * 86400000000")
            .bind(days)
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

/// The inbox's rows as text, as the dump reads them.
async fn inbox_rows(url: &str) -> Vec<String> {
    all_rows(url)
        .await
        .into_iter()
        .filter(|(table, _)| table.ends_with("webhook_inbox"))
        .map(|(_, row)| row)
        .collect()
}

both_backends!(
    the_retention_job_purges_payloads_past_the_configured_days_at_start_and_counts_them,
    |backend| async move {
        let app = spawn_app_with(backend, |s| s.workers.payload_retention_days = 90).await;
        mock_maria(&app).await;
        mock_c2s_ok(&app.c2s, 1).await;
        let ids = app
            .post_c2s_ok(&c2s_event(
                "lead-old",
                "on_create_lead",
                "2026-03-01T12:00:00Z",
                Some(PHONE_NATIONAL),
                Some(EMAIL),
            ))
            .await;
        assert_eq!(app.wait_final(ids[0]).await.state.as_str(), "done");
        let values = maria_values();
        let url = app.db.url.clone();
        assert!(
            inbox_rows(&url)
                .await
                .iter()
                .any(|r| leak(r, &values).is_some()),
            "the fresh event holds the customer"
        );

        // 89 days: still within retention, so a restart (the job runs at start) keeps it.
        age_inbox(&url, 89).await;
        let app = app.restart().await;
        assert!(
            inbox_rows(&url)
                .await
                .iter()
                .any(|r| leak(r, &values).is_some())
        );
        assert!(
            !app.scrape()
                .await
                .contains("enricher_payloads_purged_total")
        );

        age_inbox(&url, 2).await;
        let app = app.restart().await;
        wait_for("the purge to be counted", Duration::from_secs(10), || {
            let app = &app;
            async move {
                app.scrape()
                    .await
                    .lines()
                    .map(crate::operators::without_instance)
                    .any(|l| l == "enricher_payloads_purged_total 1")
                    .then_some(())
            }
        })
        .await;
        let (payload, message, contact_set) = raw_row(&url, ids[0]).await;
        assert_eq!(
            leak(&payload.to_string(), &values),
            None,
            "payload {payload}"
        );
        assert_eq!(message, None);
        // The canonical keys stay on the lead's latest event only, for "did the contacts
        // change?"; the party's own contact rows hold the same keys until erasure.
        assert_eq!(
            contact_set.as_deref(),
            Some("email:maria.souza@example.com,phone:+5511987654321")
        );
        // A redelivery of the purged webhook is still a duplicate; nothing is paid or posted.
        let response = app
            .post_c2s(&c2s_event(
                "lead-old",
                "on_create_lead",
                "2026-03-01T12:00:00Z",
                Some(PHONE_NATIONAL),
                Some(EMAIL),
            ))
            .await;
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["events"][0]["status"], "duplicate");
        app.verify_mocks().await;
    }
);
