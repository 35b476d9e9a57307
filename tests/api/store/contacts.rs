//! The lookup index: contacts found and not found.

use super::*;

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
        let cpf = maria_found_by_phone(&store).await;

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
        // Expiries an hour either side of now (the store's clock is this test's): the answer
        // cannot depend on how long the test took.
        let clock = now();

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
        assert_eq!(
            store.count_negatives().await.unwrap(),
            0,
            "no live negative"
        );
    }
);
