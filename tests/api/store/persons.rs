//! Persons bought: enrichments, freshness and not-founds.

use super::*;

// ---------------------------------------------------------------------------------------------
// find_person / record_person

both_backends!(
    a_found_person_is_stored_with_party_enrichment_and_contacts,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (raw, person) = maria();
        let cpf = maria_cpf();

        let before = now();
        store
            .record_person(
                &cpf,
                &Lookup::Found((raw, person.clone())),
                Provider::WorkApi,
                far_future(),
            )
            .await
            .unwrap();
        let after = now();

        let fresh_since = now() - Duration::from_secs(3600);
        let stored = found_person(store.find_person(&cpf, fresh_since).await.unwrap());
        assert!(stored.person == person, "the stored person differs");
        assert_written_between("fetched_at", stored.fetched_at, before, after);
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
                Provider::WorkApi,
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
                Provider::WorkApi,
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
        // As for contacts: expiries an hour either side of now.
        let clock = now();

        store
            .record_person(
                &cpf,
                &Lookup::NotFound,
                Provider::WorkApi,
                clock + Duration::from_secs(3600),
            )
            .await
            .unwrap();

        let counts = store.party_counts().await.unwrap();
        assert_eq!(counts.enrichments, 0);
        assert_eq!(counts.parties, 0);
        assert_eq!(counts.negatives, 1);
        let since = clock - Duration::from_secs(3600);
        assert!(matches!(
            store.find_person(&cpf, since).await.unwrap(),
            Some(Lookup::NotFound)
        ));

        store
            .record_person(
                &cpf,
                &Lookup::NotFound,
                Provider::WorkApi,
                clock - Duration::from_secs(3600),
            )
            .await
            .unwrap();
        assert!(store.find_person(&cpf, since).await.unwrap().is_none());
        assert_eq!(
            store.count_negatives().await.unwrap(),
            0,
            "no live negative"
        );
    }
);

both_backends!(
    a_person_not_found_for_a_cpf_does_not_hide_a_contact_not_found,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;

        store
            .record_person(
                &maria_cpf(),
                &Lookup::NotFound,
                Provider::WorkApi,
                far_future(),
            )
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
                    Provider::WorkApi,
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
            .record_person(&cpf, &Lookup::NotFound, Provider::WorkApi, far_future())
            .await
            .unwrap();

        store
            .record_person(
                &cpf,
                &Lookup::Found((raw, person.clone())),
                Provider::WorkApi,
                far_future(),
            )
            .await
            .unwrap();

        let since = now() - Duration::from_secs(3600);
        let stored = found_person(store.find_person(&cpf, since).await.unwrap());
        assert!(stored.person == person);
        assert_eq!(
            store.count_negatives().await.unwrap(),
            0,
            "no live negative"
        );
    }
);
