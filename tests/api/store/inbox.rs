//! Inserting events: accepted ids, duplicates, lists.

use super::*;

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
        assert_eq!(first.state, EventState::Pending);
        assert_eq!(first.attempts, 0);
        assert_eq!(first.outcome, None);
        assert_eq!(first.last_error, None);
        assert!(!first.delivered);
        assert_eq!(
            store
                .events(Some(EventState::Pending), 10)
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(
            store
                .events(Some(EventState::Done), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.events(None, 1).await.unwrap().len(), 1);
        assert_eq!(
            store.event_counts().await.unwrap(),
            vec![(EventState::Pending, 2)]
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
            vec![(EventState::Pending, 1)]
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
            vec![(EventState::Pending, 3)]
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
