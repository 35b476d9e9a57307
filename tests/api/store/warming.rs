//! Warming: the most recently enriched people, page by page.

use super::*;

// ---------------------------------------------------------------------------------------------
// recent_people

async fn enrich(store: &DynStore, cpf: &Cpf, person: &Person) {
    let (raw, _) = maria();
    store
        .record_person(
            cpf,
            &Lookup::Found((raw, person.clone())),
            Provider::WorkApi,
            far_future(),
        )
        .await
        .unwrap();
}

both_backends!(
    recent_people_are_the_latest_enriched_first_with_their_lookup_keys_up_to_the_limit,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let before = now();
        let (_, person) = maria();
        let mut newer = person.clone();
        newer.income = Some("12000,00".to_owned());
        let (a, b, c) = (other_cpf(1), other_cpf(2), other_cpf(3));
        store
            .record_contact(
                &phone_key(),
                &Lookup::Found((a.clone(), None)),
                far_future(),
            )
            .await
            .unwrap();
        store
            .record_contact(
                &email_key(),
                &Lookup::Found((c.clone(), None)),
                far_future(),
            )
            .await
            .unwrap();
        // A party known only from a lookup, never enriched: nothing to warm.
        let d = other_cpf(4);
        let d_phone = ContactKey::Phone(Phone::parse("(21) 99876-5432").unwrap());
        store
            .record_contact(&d_phone, &Lookup::Found((d, None)), far_future())
            .await
            .unwrap();
        enrich(&store, &a, &person).await;
        enrich(&store, &b, &person).await;
        enrich(&store, &c, &person).await;
        // A's newer enrichment makes it the most recent.
        enrich(&store, &a, &newer).await;

        let people = store.recent_people(None, 10).await.unwrap();

        let cpfs: Vec<&Cpf> = people.iter().map(|p| &p.cpf).collect();
        assert_eq!(cpfs, vec![&a, &c, &b]);
        assert!(people[0].person == newer, "A's latest enrichment is warmed");
        assert!(people[1].person == person);
        assert!(
            people
                .windows(2)
                .all(|w| w[0].fetched_at >= w[1].fetched_at),
            "newest first"
        );
        assert_written_between("fetched_at", people[0].fetched_at, before, now());
        // Only contacts a lookup answered; those the person data lists are not keys.
        assert_eq!(people[0].lookup_keys, vec![phone_key()]);
        assert_eq!(people[1].lookup_keys, vec![email_key()]);
        assert!(people[2].lookup_keys.is_empty());

        let two = store.recent_people(None, 2).await.unwrap();
        let cpfs: Vec<&Cpf> = two.iter().map(|p| &p.cpf).collect();
        assert_eq!(cpfs, vec![&a, &c]);
        assert!(store.recent_people(None, 0).await.unwrap().is_empty());
    }
);

both_backends!(
    recent_people_give_a_contact_only_to_the_party_its_latest_lookup_answered,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (_, person) = maria();
        let (before, after) = (other_cpf(1), other_cpf(2));
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
        enrich(&store, &after, &person).await;
        enrich(&store, &before, &person).await;

        let people = store.recent_people(None, 10).await.unwrap();

        assert_eq!(people.len(), 2);
        assert_eq!(people[0].cpf, before);
        assert!(
            people[0].lookup_keys.is_empty(),
            "the phone now answers another party"
        );
        assert_eq!(people[1].cpf, after);
        assert_eq!(people[1].lookup_keys, vec![phone_key()]);
        assert_eq!(
            store.find_contact(&phone_key()).await.unwrap(),
            Some(Lookup::Found(after)),
            "warming agrees with the database"
        );
    }
);

both_backends!(
    recent_people_read_page_by_page_are_the_one_read_order_without_gaps_or_repeats,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (_, person) = maria();
        for i in 1..=7 {
            enrich(&store, &other_cpf(i), &person).await;
        }
        // Re-enriching moves a party to the front; it must still come once.
        enrich(&store, &other_cpf(3), &person).await;
        let all = store.recent_people(None, 100).await.unwrap();
        assert_eq!(all.len(), 7);

        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store.recent_people(after, 3).await.unwrap();
            assert!(page.len() <= 3);
            after = page.last().map(|p| p.position);
            let done = page.len() < 3;
            paged.extend(page);
            if done {
                break;
            }
        }

        let cpfs = |people: &[enricher::store::WarmPerson]| {
            people.iter().map(|p| p.cpf.clone()).collect::<Vec<_>>()
        };
        assert_eq!(cpfs(&paged), cpfs(&all));
        assert_eq!(
            paged[0].cpf,
            other_cpf(3),
            "the re-enriched party is newest"
        );
    }
);

both_backends!(
    recent_people_of_an_empty_store_are_none,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;

        assert!(store.recent_people(None, 10).await.unwrap().is_empty());
    }
);
