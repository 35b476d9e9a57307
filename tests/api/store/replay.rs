//! Replaying dead events, reading a lead's latest lead event, and converting rows stored
//! before lead events.

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
