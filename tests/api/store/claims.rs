//! Claiming events: order per lead, leases, stale claims.

use super::*;

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
            vec![(EventState::Processing, 3)]
        );
        let claimed = first.iter().chain(&rest).find(|e| e.id == a).unwrap();
        assert_eq!(claimed.source, SOURCE);
        assert_eq!(claimed.lead_id, "lead-a");
        assert_eq!(claimed.event_at, T1);
        assert_eq!(claimed.action, "update");
        assert!(!claimed.erased, "the payload carries no erased mark");
        let age = OffsetDateTime::now_utc() - claimed.due_at;
        assert!(
            age >= time::Duration::ZERO && age < time::Duration::minutes(1),
            "due from its insert, {age} ago"
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
        assert_eq!(record(&store, a).await.state, EventState::Processing);
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
            vec![(EventState::Pending, 1)]
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
        assert_eq!(record(&store, id).await.state, EventState::Processing);
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
        assert!(
            !store
                .finish(&abandoned, done(Outcome::Delivered))
                .await
                .unwrap()
        );
        assert!(!store.mark_sending(&abandoned).await.unwrap());
        assert!(
            store
                .finish(&taken_over, done(Outcome::Delivered))
                .await
                .unwrap()
        );
        assert_eq!(record(&store, id).await.state, EventState::Done);
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
        assert!(
            store
                .finish(event_first, done(Outcome::Delivered))
                .await
                .unwrap()
        );
        let event_second = claim_only(&store, second, LONG_LEASE).await;
        assert_eq!(event_second.event_at, T2);
        assert!(claim(&store, LONG_LEASE).await.is_empty());

        assert!(
            store
                .finish(&event_second, done(Outcome::Unchanged))
                .await
                .unwrap()
        );
        let event_third = claim_only(&store, third, LONG_LEASE).await;
        assert_eq!(event_third.event_at, T3);

        assert!(
            store
                .finish(&event_third, done(Outcome::Closed))
                .await
                .unwrap()
        );
        assert!(claim(&store, LONG_LEASE).await.is_empty());
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![(EventState::Done, 3), (EventState::Processing, 1)]
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
        assert!(
            store
                .finish(&in_flight, done(Outcome::Delivered))
                .await
                .unwrap()
        );
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

        // Retry times an hour ahead and a second behind now (the store binds every instant
        // from the application's clock, this test's): no machine load can move one across
        // the other.
        let clock = now();
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
        assert!(
            store
                .finish(&again, done(Outcome::Delivered))
                .await
                .unwrap()
        );
        claim_only(&store, next_of_due, LONG_LEASE).await;
        assert!(claim(&store, LONG_LEASE).await.is_empty());
        let still = record(&store, waiting).await;
        assert_eq!((still.state.as_str(), still.attempts), ("pending", 1));
        assert_eq!(
            record(&store, next_of_waiting).await.state,
            EventState::Pending
        );
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
            done(Outcome::Delivered),
            Finish::Done {
                outcome: Outcome::Unchanged,
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
