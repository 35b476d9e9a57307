//! Erasure: everything of a person goes, the audit row stays.

use super::*;

// ---------------------------------------------------------------------------------------------
// erase_party / erasure_audit

const CPF_HASH: &str = "hmac-sha256:0f3a9c1be47d2a6e8b5c0d9f1e2a3b4c";
const ERASE_ACTION: &str = "DELETE /api/v1/parties";

fn landline_key() -> ContactKey {
    ContactKey::Phone(Phone::parse("(11) 3800-1234").unwrap())
}

/// Every contact the fixture person lists, as keys, sorted.
fn maria_keys() -> Vec<ContactKey> {
    let mut keys = vec![
        phone_key(),
        landline_key(),
        email_key(),
        ContactKey::Email(Email::parse("msouza84@example.org").unwrap()),
    ];
    keys.sort();
    keys
}

both_backends!(
    erasing_a_party_removes_its_data_and_not_founds_and_writes_one_audit_row_without_personal_data,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let cpf = maria_cpf();
        let (raw, person) = maria();
        for key in [phone_key(), email_key()] {
            store
                .record_contact(&key, &Lookup::Found((cpf.clone(), None)), far_future())
                .await
                .unwrap();
        }
        store
            .record_person(
                &cpf,
                &Lookup::Found((raw, person)),
                Provider::WorkApi,
                far_future(),
            )
            .await
            .unwrap();
        // Not-founds of the party: its CPF on a later refetch, and a contact its data lists.
        store
            .record_person(&cpf, &Lookup::NotFound, Provider::WorkApi, far_future())
            .await
            .unwrap();
        store
            .record_contact(&landline_key(), &Lookup::NotFound, far_future())
            .await
            .unwrap();
        // Someone else, who must survive.
        let someone_else = other_cpf(1);
        let their_phone = ContactKey::Phone(Phone::parse("(21) 99876-5432").unwrap());
        store
            .record_contact(
                &their_phone,
                &Lookup::Found((someone_else.clone(), None)),
                far_future(),
            )
            .await
            .unwrap();
        let unknown_email = ContactKey::Email(Email::parse("nobody@example.net").unwrap());
        store
            .record_contact(&unknown_email, &Lookup::NotFound, far_future())
            .await
            .unwrap();
        let id = insert(&store, new_event("lead-a", T1)).await;
        let event = claim_only(&store, id, LONG_LEASE).await;
        let links = [
            LeadLink {
                cpf: cpf.clone(),
                via: ContactKind::Phone,
            },
            LeadLink {
                cpf: someone_else.clone(),
                via: ContactKind::Phone,
            },
        ];
        assert!(
            store
                .save_rendered(&event, "phone:+5511987654321", "message", &links)
                .await
                .unwrap()
        );
        assert_eq!(
            store.party_counts().await.unwrap(),
            PartyCounts {
                parties: 2,
                contacts: 8,
                enrichments: 1,
                lead_links: 2,
                negatives: 3,
            }
        );

        let before = now();
        let erasure = store
            .erase_party(&cpf, ERASE_ACTION, CPF_HASH)
            .await
            .unwrap();
        let after = now();

        assert_eq!(
            erasure,
            Erasure {
                found: true,
                // Two lookup rows, the candidate list of each (one row), and five person rows
                // (one phone twice: phone and WhatsApp).
                contacts: 9,
                enrichments: 1,
                lead_links: 1,
                negatives: 2,
                // lead-a is linked to the party: its one event is redacted.
                events: 1,
                contact_keys: maria_keys(),
            }
        );
        assert_eq!(
            store.party_counts().await.unwrap(),
            PartyCounts {
                parties: 1,
                contacts: 1,
                enrichments: 0,
                lead_links: 1,
                negatives: 1,
            }
        );
        for key in maria_keys() {
            assert_eq!(store.find_contact(&key).await.unwrap(), None, "{key:?}");
        }
        let long_ago = now() - Duration::from_secs(86_400);
        assert!(store.find_person(&cpf, long_ago).await.unwrap().is_none());
        assert_eq!(
            store.find_contact(&their_phone).await.unwrap(),
            Some(Lookup::Found(someone_else))
        );
        assert_eq!(
            store.find_contact(&unknown_email).await.unwrap(),
            Some(Lookup::NotFound)
        );

        let audit = store.erasure_audit(10).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].action, ERASE_ACTION);
        assert_eq!(audit[0].cpf_hash, CPF_HASH);
        assert_eq!(
            audit[0].counts,
            json!({"parties": 1, "contacts": 9, "enrichments": 1, "lead_links": 1, "negatives": 2, "events": 1})
        );
        assert_written_between("audit time", audit[0].at, before, after);
        let serialized = serde_json::to_string(&audit).unwrap();
        assert!(serialized.contains(CPF_HASH));
        for personal in [
            cpf.as_str().to_owned(),
            cpf.formatted(),
            "987654321".to_owned(),
            "38001234".to_owned(),
            "maria".to_owned(),
            "msouza".to_owned(),
            "example".to_owned(),
            "MARIA".to_owned(),
        ] {
            assert!(
                !serialized.contains(&personal),
                "the audit row holds personal data: {serialized}"
            );
        }
    }
);

both_backends!(
    erasing_an_unknown_cpf_still_forgets_its_not_found_and_writes_an_audit_row,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let cpf = other_cpf(5);
        store
            .record_person(&cpf, &Lookup::NotFound, Provider::WorkApi, far_future())
            .await
            .unwrap();

        let first = store
            .erase_party(&cpf, ERASE_ACTION, CPF_HASH)
            .await
            .unwrap();
        let second = store
            .erase_party(&cpf, "operator erase", CPF_HASH)
            .await
            .unwrap();

        assert_eq!(
            first,
            Erasure {
                negatives: 1,
                ..Erasure::default()
            }
        );
        assert!(!first.found);
        assert_eq!(second, Erasure::default());
        assert_eq!(store.party_counts().await.unwrap(), PartyCounts::default());
        assert!(
            store
                .find_person(&cpf, now() - Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        let audit = store.erasure_audit(10).await.unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!(audit[0].action, "operator erase", "newest first");
        assert!(audit[0].id > audit[1].id);
        assert_eq!(
            audit[1].counts,
            json!({"parties": 0, "contacts": 0, "enrichments": 0, "lead_links": 0, "negatives": 1, "events": 0})
        );
        assert_eq!(audit[0].counts["negatives"], json!(0));
        assert_eq!(store.erasure_audit(1).await.unwrap().len(), 1);
    }
);

both_backends!(
    erasing_a_party_clears_the_rendered_messages_of_its_linked_leads,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        store
            .record_contact(
                &phone_key(),
                &Lookup::Found((maria_cpf(), None)),
                far_future(),
            )
            .await
            .unwrap();
        let linked = insert(&store, new_event("lead-linked", T1)).await;
        let other = insert(&store, new_event("lead-other", T1)).await;
        let claimed = claim(&store, LONG_LEASE).await;
        assert_eq!(ids(&claimed), vec![linked, other]);
        for event in &claimed {
            let links = if event.id == linked {
                vec![LeadLink {
                    cpf: maria_cpf(),
                    via: phone_key().kind(),
                }]
            } else {
                vec![]
            };
            assert!(
                store
                    .save_rendered(event, "set", "bought data", &links)
                    .await
                    .unwrap()
            );
            let dead = Finish::Dead {
                reason: "crm rejected".into(),
            };
            assert!(store.finish(event, dead).await.unwrap());
        }

        store
            .erase_party(&maria_cpf(), "test", "hash")
            .await
            .unwrap();

        assert_eq!(store.replay_dead().await.unwrap(), 2);
        let replayed = claim(&store, LONG_LEASE).await;
        let message = |id: i64| {
            replayed
                .iter()
                .find(|e| e.id == id)
                .unwrap()
                .message
                .clone()
        };
        assert_eq!(message(linked), None, "rendered from erased data");
        assert_eq!(message(other).as_deref(), Some("bought data"));
    }
);
