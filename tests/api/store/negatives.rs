//! Remembered not-founds: forgetting and counting them.

use super::*;

// ---------------------------------------------------------------------------------------------
// forget_negative / forget_all_negatives / count_negatives

both_backends!(
    forgetting_a_not_found_removes_only_that_one,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        store
            .record_contact(&phone_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();
        store
            .record_contact(&email_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();
        store
            .record_person(
                &maria_cpf(),
                &Lookup::NotFound,
                Provider::WorkApi,
                far_future(),
            )
            .await
            .unwrap();

        let phone = phone_key();
        assert_eq!(
            store.forget_negative("phone", phone.value()).await.unwrap(),
            1
        );
        assert_eq!(
            store.forget_negative("phone", phone.value()).await.unwrap(),
            0,
            "already forgotten"
        );
        assert_eq!(
            store.forget_negative("email", phone.value()).await.unwrap(),
            0,
            "the kind is part of the key"
        );

        assert_eq!(store.find_contact(&phone).await.unwrap(), None);
        assert_eq!(
            store.find_contact(&email_key()).await.unwrap(),
            Some(Lookup::NotFound)
        );
        assert_eq!(store.count_negatives().await.unwrap(), 2);
        assert_eq!(
            store
                .forget_negative("cpf", maria_cpf().as_str())
                .await
                .unwrap(),
            1
        );
        assert!(
            store
                .find_person(&maria_cpf(), now() - Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.count_negatives().await.unwrap(), 1);
    }
);

both_backends!(
    forgetting_all_not_founds_removes_expired_ones_too,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        store
            .record_contact(&phone_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();
        store
            .record_contact(
                &email_key(),
                &Lookup::NotFound,
                now() - Duration::from_secs(1),
            )
            .await
            .unwrap();
        store
            .record_person(
                &maria_cpf(),
                &Lookup::NotFound,
                Provider::WorkApi,
                far_future(),
            )
            .await
            .unwrap();

        assert_eq!(store.forget_all_negatives().await.unwrap(), 3);

        assert_eq!(
            store.count_negatives().await.unwrap(),
            0,
            "no live negative"
        );
        assert_eq!(store.count_negatives().await.unwrap(), 0);
        assert_eq!(store.find_contact(&phone_key()).await.unwrap(), None);
        assert_eq!(store.forget_all_negatives().await.unwrap(), 0);
    }
);

both_backends!(
    only_unexpired_not_founds_are_counted,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        assert_eq!(store.count_negatives().await.unwrap(), 0);
        store
            .record_contact(&phone_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();
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
            .record_contact(
                &email_key(),
                &Lookup::NotFound,
                now() - Duration::from_secs(1),
            )
            .await
            .unwrap();

        assert_eq!(store.count_negatives().await.unwrap(), 2);
        assert_eq!(
            store.party_counts().await.unwrap().negatives,
            3,
            "the expired one is still stored"
        );
    }
);
