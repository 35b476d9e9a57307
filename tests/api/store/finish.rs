//! Leaving a claim: finishing, the sending mark, the rendered message and the previous contact set.

use super::*;

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
        assert_eq!(after.state, EventState::Pending);
        assert_eq!(after.attempts, 1);
        assert_eq!(after.last_error.as_deref(), Some("crm answered 503"));
        assert_eq!(after.outcome, None);
        assert!(!after.delivered);
        // The claim ended with the finish: the same worker cannot finish it twice.
        assert!(
            !store
                .finish(&event, done(Outcome::Delivered))
                .await
                .unwrap()
        );

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
        assert_eq!(after.state, EventState::Dead);
        assert_eq!(after.attempts, 1);
        assert_eq!(
            after.last_error.as_deref(),
            Some("crm rejected the message")
        );
        assert!(!after.delivered);
        let dead_ones = store.events(Some(EventState::Dead), 10).await.unwrap();
        assert_eq!(dead_ones.len(), 1);
        assert_eq!(dead_ones[0].id, id);
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![(EventState::Dead, 1)]
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
                id if id == delivered => Outcome::Delivered,
                id if id == unchanged => Outcome::Unchanged,
                _ => Outcome::Closed,
            };
            assert!(store.finish(event, done(outcome)).await.unwrap());
        }

        let after = record(&store, delivered).await;
        assert_eq!(after.state, EventState::Done);
        assert_eq!(after.outcome, Some(Outcome::Delivered));
        assert!(after.delivered);
        assert_eq!(after.attempts, 0);
        for (id, outcome) in [(unchanged, Outcome::Unchanged), (closed, Outcome::Closed)] {
            let after = record(&store, id).await;
            assert_eq!(after.state, EventState::Done);
            assert_eq!(after.outcome, Some(outcome));
            assert!(!after.delivered, "{outcome} is not a delivery");
        }
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![(EventState::Done, 3)]
        );
    }
);

both_backends!(
    a_finish_says_whether_another_event_of_the_lead_is_pending,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let first = insert(&store, new_event("lead-a", T1)).await;
        let second = insert(&store, new_event("lead-a", T2)).await;
        let other = insert(&store, new_event("lead-b", T1)).await;

        // The claim takes the first event of each lead and passes over lead-a's second.
        let claimed = store.claim_events(10, LONG_LEASE).await.unwrap();
        let ids: Vec<i64> = claimed.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.contains(&first) && ids.contains(&other) && !ids.contains(&second));
        let event = |id: i64| claimed.iter().find(|e| e.id == id).unwrap();

        let looked = store
            .finish_and_look(event(first), done(Outcome::Delivered))
            .await
            .unwrap();
        assert_eq!(looked, Some(true), "lead-a's second event waits");
        let looked = store
            .finish_and_look(event(other), done(Outcome::Delivered))
            .await
            .unwrap();
        assert_eq!(looked, Some(false), "lead-b has nothing else");
        // A claim already ended: nothing written, nothing to say.
        let looked = store
            .finish_and_look(event(first), done(Outcome::Delivered))
            .await
            .unwrap();
        assert_eq!(looked, None);

        let next = store.claim_events(10, LONG_LEASE).await.unwrap();
        assert_eq!(next.iter().map(|e| e.id).collect::<Vec<_>>(), vec![second]);
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
    save_and_mark_sending_keeps_the_message_links_the_lead_and_sets_the_mark_at_once,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let known = maria_found_by_phone(&store).await;
        let id = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, id, Duration::ZERO).await;
        let links = [LeadLink {
            cpf: known,
            via: ContactKind::Phone,
        }];

        let saved = store
            .save_and_mark_sending(
                &event,
                "phone:+5511987654321",
                "Maria: CPF encontrado",
                &links,
            )
            .await
            .unwrap();
        assert!(saved);
        assert_eq!(store.party_counts().await.unwrap().lead_links, 1);

        // A stop before the POST's answer: the event comes back with both, so the same text
        // is the one posted again (or dead-lettered as an unknown outcome).
        let again = claim_when_due(&store, id, LONG_LEASE).await;
        assert!(again.send_started);
        assert_eq!(again.message.as_deref(), Some("Maria: CPF encontrado"));
        assert_eq!(again.contact_set.as_deref(), Some("phone:+5511987654321"));

        // The first claim is stale now: it can write neither.
        let saved = store
            .save_and_mark_sending(&event, "phone:+5511987654321", "other", &links)
            .await
            .unwrap();
        assert!(!saved);
        let retry = Finish::Retry {
            at: now() - Duration::from_secs(1),
            error: "crm timed out".to_owned(),
        };
        assert!(store.finish(&again, retry).await.unwrap());
        let third = claim_when_due(&store, id, LONG_LEASE).await;
        assert_eq!(third.message.as_deref(), Some("Maria: CPF encontrado"));
    }
);

both_backends!(
    save_rendered_links_the_lead_only_to_parties_that_exist,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let known = maria_found_by_phone(&store).await;
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
        assert!(
            store
                .finish(event_b, done(Outcome::Delivered))
                .await
                .unwrap()
        );
        // Set by save_rendered; a Done without a set keeps it.
        assert!(
            store
                .save_rendered(event_a1, "phone:+5511987654321", "a1", &[])
                .await
                .unwrap()
        );
        assert!(
            store
                .finish(event_a1, done(Outcome::Delivered))
                .await
                .unwrap()
        );

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
            outcome: Outcome::Delivered,
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
            outcome: Outcome::Delivered,
            contact_set: Some("phone:+5511987654321".to_owned()),
        };
        assert!(store.finish(&event, finish).await.unwrap());

        // An older delivery of the same lead that arrived late.
        let late = insert(&store, new_event("lead-a", T1)).await;
        let late_event = claim_only(&store, late, LONG_LEASE).await;

        assert_eq!(store.previous_contact_set(&late_event).await.unwrap(), None);
    }
);
