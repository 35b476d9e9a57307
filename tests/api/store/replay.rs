//! Replaying dead events and reading a lead's latest payload.

use super::*;

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
            at: now() - Duration::from_secs(1),
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
        assert_eq!(after.state, EventState::Pending);
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
                state: EventState::Processing
            }
        );
        assert!(
            store
                .finish(&again, done(Outcome::Delivered))
                .await
                .unwrap()
        );
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
        assert!(
            store
                .finish(&event, done(Outcome::Delivered))
                .await
                .unwrap()
        );
        let pending = insert(&store, new_event("lead-b", T1)).await;

        for (id, state) in [(pending, EventState::Pending), (finished, EventState::Done)] {
            let before = serde_json::to_value(record(&store, id).await).unwrap();

            assert_eq!(
                store.replay_event(id).await.unwrap(),
                Replay::NotReplayable { state }
            );

            assert_eq!(
                serde_json::to_value(record(&store, id).await).unwrap(),
                before
            );
        }
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![(EventState::Done, 1), (EventState::Pending, 1)]
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
        assert_eq!(record(&store, id).await.state, EventState::Pending);
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
        assert!(
            store
                .finish(&event, done(Outcome::Delivered))
                .await
                .unwrap()
        );
        insert(&store, new_event("lead-d", T1)).await;

        assert_eq!(store.replay_dead().await.unwrap(), 2);

        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![(EventState::Done, 1), (EventState::Pending, 3)]
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
// latest_event_payload

both_backends!(
    the_latest_event_payload_is_that_of_the_leads_latest_event,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let with_payload = |lead: &str, at, v: i64| NewEvent {
            payload: json!({"id": lead, "v": v}),
            ..new_event(lead, at)
        };
        insert(&store, with_payload("lead-a", T2, 2)).await;
        // Arrives later (a greater id) but happened earlier.
        insert(&store, with_payload("lead-a", T1, 1)).await;
        insert(&store, with_payload("lead-b", T3, 3)).await;
        let other_source = NewEvent {
            source: "other-crm",
            ..with_payload("lead-a", T4, 4)
        };
        insert(&store, other_source).await;

        assert_eq!(
            store.latest_event_payload(SOURCE, "lead-a").await.unwrap(),
            Some(json!({"id": "lead-a", "v": 2}))
        );
        assert_eq!(
            store
                .latest_event_payload("other-crm", "lead-a")
                .await
                .unwrap(),
            Some(json!({"id": "lead-a", "v": 4}))
        );
        assert_eq!(
            store.latest_event_payload(SOURCE, "lead-z").await.unwrap(),
            None
        );
    }
);
