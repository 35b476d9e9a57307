//! The record of intent for leads created in the CRM: one claim per call, the CRM's id
//! recorded, the allowance of calls without an answer, and claims given back.

use super::*;
use enricher::store::CrmCreation;

const BUSY_FOR: Duration = Duration::from_secs(15);

fn lead(id: &str) -> LeadId {
    LeadId::parse(id).unwrap()
}

both_backends!(
    of_concurrent_first_claims_exactly_one_wins_and_the_others_wait,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let key = lead("google-1");
        let claims = futures::future::join_all((0..12).map(|_| {
            let store = store.clone();
            let key = key.clone();
            async move {
                store
                    .claim_crm_creation(Source::GoogleAds, &key, 1, BUSY_FOR, T1)
                    .await
                    .unwrap()
            }
        }))
        .await;
        let won = claims
            .iter()
            .filter(|c| **c == CrmCreation::Claimed { attempt: 1 })
            .count();
        assert_eq!(won, 1, "{claims:?}");
        assert!(
            claims.iter().all(|c| matches!(
                c,
                CrmCreation::Claimed { attempt: 1 } | CrmCreation::Busy { .. }
            )),
            "{claims:?}"
        );
        // The same id from another source is another lead.
        assert_eq!(
            store
                .claim_crm_creation(Source::Backfill, &key, 1, BUSY_FOR, T1)
                .await
                .unwrap(),
            CrmCreation::Claimed { attempt: 1 }
        );
    }
);

both_backends!(
    a_claim_without_an_answer_spends_the_allowance_and_a_recorded_id_ends_every_claim,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let key = lead("google-2");
        let later = T1 + BUSY_FOR;
        assert_eq!(
            store
                .claim_crm_creation(Source::GoogleAds, &key, 2, BUSY_FOR, T1)
                .await
                .unwrap(),
            CrmCreation::Claimed { attempt: 1 }
        );
        // The second attempt only once the first claimer had its time.
        assert_eq!(
            store
                .claim_crm_creation(Source::GoogleAds, &key, 2, BUSY_FOR, T1)
                .await
                .unwrap(),
            CrmCreation::Busy { until: later }
        );
        assert_eq!(
            store
                .claim_crm_creation(Source::GoogleAds, &key, 2, BUSY_FOR, later)
                .await
                .unwrap(),
            CrmCreation::Claimed { attempt: 2 }
        );
        let much_later = later + BUSY_FOR;
        assert_eq!(
            store
                .claim_crm_creation(Source::GoogleAds, &key, 2, BUSY_FOR, much_later)
                .await
                .unwrap(),
            CrmCreation::Exhausted { attempts: 2 }
        );
        let crm = lead("c2s-77");
        store
            .record_crm_created(Source::GoogleAds, &key, &crm)
            .await
            .unwrap();
        assert_eq!(
            store
                .claim_crm_creation(Source::GoogleAds, &key, 2, BUSY_FOR, much_later)
                .await
                .unwrap(),
            CrmCreation::Created(crm.clone())
        );
        assert_eq!(
            store.crm_creation(Source::GoogleAds, &key).await.unwrap(),
            Some((Some(crm), 2))
        );
        assert_eq!(
            store
                .crm_creation(Source::GoogleAds, &lead("unknown"))
                .await
                .unwrap(),
            None
        );
    }
);

both_backends!(
    a_claim_given_back_does_not_spend_the_allowance_nor_make_the_next_wait,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let key = lead("google-3");
        assert_eq!(
            store
                .claim_crm_creation(Source::GoogleAds, &key, 1, BUSY_FOR, T1)
                .await
                .unwrap(),
            CrmCreation::Claimed { attempt: 1 }
        );
        store
            .release_crm_creation(Source::GoogleAds, &key)
            .await
            .unwrap();
        assert_eq!(
            store
                .claim_crm_creation(Source::GoogleAds, &key, 1, BUSY_FOR, T1)
                .await
                .unwrap(),
            CrmCreation::Claimed { attempt: 1 }
        );
    }
);
