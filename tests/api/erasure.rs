//! Right to erasure reaches every copy: after `DELETE /api/v1/parties/{cpf}` no table of
//! either backend holds any value of the person, memory answers nothing, and the inbox
//! events of her leads are redacted without being posted again.

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::both_backends;
use crate::dump::{all_rows, leak, maria_values};
use crate::helpers::*;
use crate::pipeline::{CPF, EMAIL, PHONE_NATIONAL, mock_c2s_ok, mock_diretrix_email, mock_maria};

fn with_admin(s: &mut enricher::config::Settings) {
    s.admin.token = Some(ADMIN_TOKEN.to_owned().into());
}

fn lead_of(id: &str, name: &str, phone: Option<&str>, email: Option<&str>) -> Value {
    let mut event = c2s_event(id, "on_create_lead", "2026-11-20T15:00:00Z", phone, email);
    event["attributes"]["customer"]["name"] = json!(name);
    event
}

async fn post_and_wait(app: &TestApp, event: &Value) -> enricher::store::EventRecord {
    let ids = app.post_c2s_ok(event).await;
    app.wait_final(ids[0]).await
}

both_backends!(
    erasure_leaves_no_value_of_the_person_in_any_table_nor_in_memory,
    |backend| async move {
        let app = spawn_app_with(backend, with_admin).await;
        mock_maria(&app).await;
        mock_diretrix_email(&app.diretrix, "maria.trabalho@example.net", json!([]), 1).await;
        // Someone else: nobody found for either contact.
        Mock::given(method("GET"))
            .and(path("/Consultas/Pessoa/Telefone/21998765432"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
            .expect(1)
            .mount(&app.diretrix)
            .await;
        mock_diretrix_email(&app.diretrix, "joao.lima@example.org", json!([]), 1).await;
        // Maria's landline: Diretrix fails until the event is dead, so that lead is never
        // linked and only its payload carries her contact.
        Mock::given(method("GET"))
            .and(path("/Consultas/Pessoa/Telefone/1138001234"))
            .respond_with(ResponseTemplate::new(500))
            .expect(1..)
            .mount(&app.diretrix)
            .await;
        // The CRM rejects one of Maria's leads: it stays dead, for an operator to replay.
        Mock::given(method("POST"))
            .and(path_regex("/create_message$"))
            .and(body_partial_json(json!({"leadId": "L-rejected"})))
            .respond_with(ResponseTemplate::new(422))
            .expect(1)
            .with_priority(1)
            .mount(&app.c2s)
            .await;
        mock_c2s_ok(&app.c2s, 3).await;

        let maria = post_and_wait(&app, &fixture("c2s_webhook_create.json")).await;
        assert_eq!(maria.outcome.map(|o| o.as_str()), Some("delivered"));
        let work = lead_of(
            "L-work",
            "Maria A. Souza",
            Some("+55 11 98765 4321"),
            Some("maria.trabalho@example.net"),
        );
        assert_eq!(
            post_and_wait(&app, &work).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        let rejected = lead_of(
            "L-rejected",
            "M. Souza",
            None,
            Some(" MARIA.Souza@EXAMPLE.com"),
        );
        let rejected = post_and_wait(&app, &rejected).await;
        assert_eq!(rejected.state.as_str(), "dead");
        let landline = lead_of("L-landline", "Maria Souza", Some("(11) 3800-1234"), None);
        let landline = post_and_wait(&app, &landline).await;
        assert_eq!(landline.state.as_str(), "dead");
        let joao = lead_of(
            "L-joao",
            "João Lima",
            Some("(21) 99876-5432"),
            Some("joao.lima@example.org"),
        );
        let joao = post_and_wait(&app, &joao).await;
        assert_eq!(joao.outcome.map(|o| o.as_str()), Some("delivered"));

        let forbidden = maria_values();
        let before = all_rows(&app.db.url).await;
        assert!(
            before
                .iter()
                .any(|(_, row)| leak(row, &forbidden).is_some()),
            "the search finds Maria before the erasure"
        );

        let response = app
            .admin(Method::DELETE, "/api/v1/parties/526.018.159-06")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let erased: Value = response.json().await.unwrap();
        assert_eq!(erased["found"], true, "{erased}");
        assert_eq!(erased["events"], 4, "Maria's four leads: {erased}");
        assert_eq!(
            erased["negatives"], 1,
            "the not-found of her work e-mail: {erased}"
        );

        for (table, row) in all_rows(&app.db.url).await {
            if let Some(value) = leak(&row, &forbidden) {
                panic!("{table} still holds {value:?}: {row}");
            }
            assert!(
                !row.to_lowercase().contains("maria.trabalho"),
                "{table} still holds the work e-mail: {row}"
            );
        }
        // João is untouched: his payload, his message and his not-founds stay.
        let rows = all_rows(&app.db.url).await;
        assert!(
            rows.iter()
                .any(|(t, r)| t.ends_with("webhook_inbox") && r.contains("joao.lima@example.org")),
            "João's event keeps its payload"
        );
        let joao_key = enricher::domain::ContactKey::Email(
            enricher::domain::Email::parse("joao.lima@example.org").unwrap(),
        );
        assert_eq!(
            app.store().find_contact(&joao_key).await.unwrap(),
            Some(enricher::store::Lookup::NotFound)
        );

        for query in [
            format!("phone={PHONE_NATIONAL}"),
            "phone=1138001234".to_owned(),
            format!("email={EMAIL}"),
            "email=maria.trabalho@example.net".to_owned(),
            format!("cpf={CPF}"),
        ] {
            let view: Value = app
                .admin(Method::GET, &format!("/cache/lookup?{query}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(view["tier"], "none", "{query}: {view}");
        }

        // A replayed erased event ends done as erased, and nothing is posted again.
        let response = app
            .admin(
                Method::POST,
                &format!("/api/v1/events/{}/replay", rejected.id),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let replayed = app.wait_final(rejected.id).await;
        assert_eq!(
            (
                replayed.state.as_str(),
                replayed.outcome.map(|o| o.as_str())
            ),
            ("done", Some("erased"))
        );
        let maria_now = app.store().event(maria.id).await.unwrap().unwrap();
        assert_eq!(
            (
                maria_now.state.as_str(),
                maria_now.outcome.map(|o| o.as_str())
            ),
            ("done", Some("delivered")),
            "a delivered event keeps its outcome for the audit"
        );
        assert_eq!(app.c2s_messages().await.len(), 4);
        app.verify_mocks().await;
    }
);

both_backends!(
    an_event_in_flight_during_an_erasure_loses_its_claim_and_ends_erased_without_a_post,
    |backend| async move {
        let app = spawn_app_with(backend, with_admin).await;
        // The phone answer is slow: the erasure lands while the worker waits for it.
        Mock::given(method("GET"))
            .and(path(format!("/Consultas/Pessoa/Telefone/{PHONE_NATIONAL}")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(fixture("diretrix_found.json"))
                    .set_delay(std::time::Duration::from_secs(2)),
            )
            .expect(1)
            .mount(&app.diretrix)
            .await;
        mock_diretrix_email(&app.diretrix, EMAIL, fixture("diretrix_found.json"), 1).await;
        Mock::given(method("GET"))
            .and(path("/api"))
            .respond_with(ResponseTemplate::new(200).set_body_json(fixture("work_api_person.json")))
            .mount(&app.work_api)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(201))
            .expect(0)
            .mount(&app.c2s)
            .await;

        let id = app.post_c2s_ok(&fixture("c2s_webhook_create.json")).await[0];
        let store = app.store().clone();
        wait_for(
            "the e-mail lookup to store the party",
            std::time::Duration::from_secs(10),
            || {
                let store = store.clone();
                async move { (store.party_counts().await.ok()?.parties == 1).then_some(()) }
            },
        )
        .await;
        assert_eq!(
            app.store().event(id).await.unwrap().unwrap().state.as_str(),
            "processing"
        );

        let response = app
            .admin(Method::DELETE, &format!("/api/v1/parties/{CPF}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);

        let event = app.wait_final(id).await;
        assert_eq!(
            (event.state.as_str(), event.outcome.map(|o| o.as_str())),
            ("done", Some("erased"))
        );
        // The worker that held the old claim finishes too, and can neither write nor post.
        wait_for(
            "the worker that lost its claim to give up",
            std::time::Duration::from_secs(10),
            || async { app.scrape().await.contains("state=\"retry\"").then_some(()) },
        )
        .await;
        let event = app.store().event(id).await.unwrap().unwrap();
        assert_eq!(
            (event.state.as_str(), event.outcome.map(|o| o.as_str())),
            ("done", Some("erased"))
        );
        let rows = all_rows(&app.db.url).await;
        let inbox: Vec<&String> = rows
            .iter()
            .filter(|(t, _)| t.ends_with("webhook_inbox"))
            .map(|(_, r)| r)
            .collect();
        assert_eq!(inbox.len(), 1);
        assert_eq!(leak(inbox[0], &maria_values()), None, "{}", inbox[0]);
        app.verify_mocks().await;
    }
);

both_backends!(
    rotating_the_admin_token_keeps_erasures_answerable,
    |backend| async move {
        let app = spawn_app_with(backend, |s| {
            with_admin(s);
            s.admin.erasure_key = Some("erasure-key-of-this-deployment".to_owned().into());
        })
        .await;
        let response = app
            .admin(reqwest::Method::DELETE, "/api/v1/parties/526.018.159-06")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let erased: Value = response.json().await.unwrap();

        // The admin token is rotated; the erasure key stays. Whoever holds the key can still
        // tell that this CPF was erased, from the audit alone.
        let mut rotated = (*app.state.settings).clone();
        rotated.admin.token = Some("a-new-admin-token".to_owned().into());
        let cpf = enricher::domain::Cpf::parse("526.018.159-06").unwrap();
        let hash = enricher::admin::erasure::cpf_hash(&rotated.admin.erasure_key(), &cpf);
        assert_eq!(erased["cpf_hash"], hash.as_str());
        let audit = app.store().erasure_audit(10).await.unwrap();
        assert!(audit.iter().any(|a| a.cpf_hash == hash));
        // Keyed by the erasure key, not by the token: another key answers differently.
        let other = enricher::admin::erasure::cpf_hash(&"another-key".to_owned().into(), &cpf);
        assert!(audit.iter().all(|a| a.cpf_hash != other));
    }
);
