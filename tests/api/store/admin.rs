//! Readiness and pruning.

use super::*;

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
                assert!(store.finish(event, done(Outcome::Delivered)).await.unwrap());
            }
        }
        // a3 stays pending: unfinished events are never pruned, and it is a's latest.
        let deleted = store
            .prune_done(now() + Duration::from_secs(60))
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
                .prune_done(now() - Duration::from_secs(60))
                .await
                .unwrap(),
            0,
            "nothing is older than the cutoff"
        );
    }
);
