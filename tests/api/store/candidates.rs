//! Candidate lists: every person and company a contact lookup listed, kept in order.

use enricher::domain::{Candidate, Candidates, Cnpj, CpfCandidate};

use super::*;

// ---------------------------------------------------------------------------------------------
// find_candidates / record_candidates

fn person(cpf: &Cpf, name: &str) -> Candidate {
    Candidate::Person(CpfCandidate {
        cpf: cpf.clone(),
        name: Some(name.to_owned()),
    })
}

fn company() -> Candidate {
    Candidate::Company {
        cnpj: Cnpj::parse("39182746000107").unwrap(),
        name: Some("PADARIA BOM PAO LTDA".into()),
    }
}

both_backends!(
    a_candidate_list_is_kept_whole_in_order_and_its_first_person_indexes_the_contact,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let joao = other_cpf(1);
        let list = Candidates::new(vec![
            company(),
            person(&joao, "JOAO CARLOS DE SOUZA"),
            person(&maria_cpf(), "MARIA APARECIDA SOUZA"),
        ]);
        store
            .record_candidates(&phone_key(), &Lookup::Found(list.clone()), far_future())
            .await
            .unwrap();

        assert_eq!(
            store.find_candidates(&phone_key()).await.unwrap(),
            Some(Lookup::Found(list))
        );
        // The index still names the first person; the others get a party once bought.
        assert_eq!(
            store.find_contact(&phone_key()).await.unwrap(),
            Some(Lookup::Found(joao.clone()))
        );
        let counts = store.party_counts().await.unwrap();
        assert_eq!((counts.parties, counts.contacts), (1, 1));

        // A later, shorter answer replaces the list whole.
        let shorter = Candidates::new(vec![person(&maria_cpf(), "MARIA APARECIDA SOUZA")]);
        store
            .record_candidates(&phone_key(), &Lookup::Found(shorter.clone()), far_future())
            .await
            .unwrap();
        assert_eq!(
            store.find_candidates(&phone_key()).await.unwrap(),
            Some(Lookup::Found(shorter))
        );
        assert_eq!(store.find_candidates(&email_key()).await.unwrap(), None);
    }
);

both_backends!(
    a_contact_looked_up_before_lists_were_kept_reads_as_its_one_party_with_its_name,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        maria_found_by_phone(&store).await;
        assert_eq!(
            store.find_candidates(&phone_key()).await.unwrap(),
            Some(Lookup::Found(Candidates::one(CpfCandidate {
                cpf: maria_cpf(),
                name: Some("MARIA APARECIDA SOUZA".into()),
            })))
        );
    }
);

both_backends!(
    a_list_of_companies_only_is_found_and_nobody_is_remembered_as_not_found,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let only = Candidates::new(vec![company()]);
        store
            .record_candidates(&phone_key(), &Lookup::Found(only.clone()), far_future())
            .await
            .unwrap();
        assert_eq!(
            store.find_candidates(&phone_key()).await.unwrap(),
            Some(Lookup::Found(only))
        );
        assert_eq!(store.party_counts().await.unwrap().parties, 0);

        store
            .record_candidates(&email_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();
        assert_eq!(
            store.find_candidates(&email_key()).await.unwrap(),
            Some(Lookup::NotFound)
        );
    }
);

both_backends!(
    erasing_a_person_removes_them_from_every_list_keeps_the_others_and_names_the_contact,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let joao = other_cpf(1);
        let list = Candidates::new(vec![
            person(&joao, "JOAO CARLOS DE SOUZA"),
            person(&maria_cpf(), "MARIA APARECIDA SOUZA"),
        ]);
        store
            .record_candidates(&phone_key(), &Lookup::Found(list), far_future())
            .await
            .unwrap();

        // Maria is the second candidate: no party, no lookup row of hers.
        let erasure = store
            .erase_party(&maria_cpf(), "erase", "hash")
            .await
            .unwrap();
        assert!(!erasure.found);
        assert_eq!(erasure.contacts, 1);
        assert_eq!(erasure.contact_keys, vec![phone_key()]);
        assert_eq!(
            store.find_candidates(&phone_key()).await.unwrap(),
            Some(Lookup::Found(Candidates::new(vec![person(
                &joao,
                "JOAO CARLOS DE SOUZA"
            )])))
        );
    }
);

both_backends!(
    warming_lists_only_contacts_whose_lookup_listed_one_candidate,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let family = Candidates::new(vec![
            person(&maria_cpf(), "MARIA APARECIDA SOUZA"),
            person(&other_cpf(1), "JOAO CARLOS DE SOUZA"),
        ]);
        store
            .record_candidates(&phone_key(), &Lookup::Found(family), far_future())
            .await
            .unwrap();
        let alone = Candidates::new(vec![person(&maria_cpf(), "MARIA APARECIDA SOUZA")]);
        store
            .record_candidates(&email_key(), &Lookup::Found(alone), far_future())
            .await
            .unwrap();
        let (raw, maria) = maria();
        store
            .record_person(
                &maria_cpf(),
                &Lookup::Found((raw, maria)),
                Provider::WorkApi,
                far_future(),
            )
            .await
            .unwrap();

        // Memory would otherwise hold the family phone as Maria alone, and a lead named
        // after João would be chosen differently there than from the database.
        let people = store.recent_people(None, 10).await.unwrap();
        assert_eq!(people.len(), 1);
        assert_eq!(people[0].lookup_keys, vec![email_key()]);
    }
);
