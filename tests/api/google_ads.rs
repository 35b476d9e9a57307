//! The Google Ads lead-form webhook end to end: the key, the stored lead, its enrichment and
//! description, and one C2S lead per Google lead id, whatever the duplicates and crashes.

use std::time::Duration;

use enricher::event::Source;
use enricher::store::{CrmCreation, EventState, Outcome};
use serde_json::{Value, json};
use wiremock::matchers::{bearer_token, body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_backends;
use crate::helpers::*;
use crate::pipeline::{CPF, mock_diretrix_email, mock_diretrix_phone, mock_work};
use crate::process::World;

/// The key the fixture carries.
const KEY: &str = "replace-with-configured-key";
/// The fixture's phone, as Diretrix is asked for it, and its e-mail.
const PHONE_NATIONAL: &str = "11912345678";
const EMAIL: &str = "carlos.pereira@example.net";

fn with_key(settings: &mut enricher::config::Settings) {
    settings.webhooks.google_ads_key = Some(KEY.to_owned().into());
}

async fn post_google(address: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{address}/api/v1/webhooks/google-ads"))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Posts and returns the accepted event id.
async fn post_accepted(address: &str, body: &Value) -> i64 {
    let response = post_google(address, body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "accepted", "{answer}");
    answer["event_id"].as_i64().unwrap()
}

/// The fixture's lead with other form answers.
fn lead_with(lead_id: &str, columns: Value) -> Value {
    let mut body = fixture("google_ads_lead.json");
    body["lead_id"] = json!(lead_id);
    body["is_test"] = json!(false);
    body["user_column_data"] = columns;
    body
}

fn col(id: &str, name: &str, value: &str) -> Value {
    json!({"column_id": id, "column_name": name, "string_value": value})
}

/// C2S creates a lead, `times` times, answering `id`.
async fn mock_create(server: &MockServer, id: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path("/integration/leads"))
        .and(bearer_token(C2S_TOKEN))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"data": {"type": "lead", "id": id}})),
        )
        .expect(times)
        .mount(server)
        .await;
}

/// The bodies of every create call C2S received.
async fn created(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/integration/leads")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

/// Diretrix knows the fixture's phone and e-mail (Maria's CPF), the Work API that CPF.
async fn mock_fixture_person(diretrix: &MockServer, work_api: &MockServer) {
    mock_diretrix_phone(diretrix, PHONE_NATIONAL, fixture("diretrix_found.json"), 1).await;
    mock_diretrix_email(diretrix, EMAIL, fixture("diretrix_found.json"), 1).await;
    mock_work(work_api, CPF, fixture("work_api_person.json"), 1).await;
}

both_backends!(
    the_fixture_creates_one_c2s_lead_with_its_form_test_mark_and_enrichment,
    |backend| async move {
        let app = spawn_app_with(backend, with_key).await;
        mock_fixture_person(&app.diretrix, &app.work_api).await;
        Mock::given(method("POST"))
            .and(path("/integration/leads"))
            .and(body_partial_json(
                json!({"data": {"type": "lead", "attributes": {
                    "name": "Carlos Eduardo Pereira",
                    "type_negotiation": "Compra",
                    "source": "Google Ads",
                    "phone": "+5511912345678",
                    "email": EMAIL,
                }}}),
            ))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"data": {"id": 987654}})))
            .expect(1)
            .mount(&app.c2s)
            .await;

        let body = fixture("google_ads_lead.json");
        let id = post_accepted(&app.address, &body).await;
        let event = app.wait_final(id).await;
        assert_eq!(
            (event.state, event.outcome),
            (EventState::Done, Some(Outcome::Created))
        );
        let sent = created(&app.c2s).await;
        let description = sent[0]["data"]["attributes"]["description"]
            .as_str()
            .unwrap();
        for expected in [
            "LEAD DE TESTE",
            "Campanha: 20000000001",
            "Formulário: 40000000001",
            "CPF: 526.018.159-06",
        ] {
            assert!(
                description.contains(expected),
                "{expected:?} in {description}"
            );
        }
        assert!(sent[0]["data"]["attributes"].get("product").is_none());

        // The C2S id is recorded against the Google lead; the key was never stored.
        let lead = enricher::domain::LeadId::parse(body["lead_id"].as_str().unwrap()).unwrap();
        let recorded = app
            .store()
            .crm_creation(Source::GoogleAds, &lead)
            .await
            .unwrap();
        assert_eq!(
            recorded.map(|(id, calls)| (id.map(|i| i.as_str().to_owned()), calls)),
            Some((Some("987654".to_owned()), 1))
        );
        let stored = app.store().event(id).await.unwrap().unwrap();
        assert!(!serde_json::to_string(&stored).unwrap().contains(KEY));

        // Delivered again later: a duplicate, nothing new.
        let again = post_google(&app.address, &body).await;
        assert_eq!(again.status(), 200);
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["status"], "duplicate");

        let metrics = app.scrape().await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("enricher_crm_leads_total")
                    && l.contains("outcome=\"created\"")
                    && l.contains("test=\"true\"")),
            "{metrics}"
        );
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("enricher_lead_forms_total")
                    && l.contains("outcome=\"accepted\"")
                    && l.contains("test=\"true\"")),
            "{metrics}"
        );
        app.verify_mocks().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_concurrent_deliveries_on_two_instances_create_one_c2s_lead() {
    let apps = spawn_instances(2, with_key).await;
    mock_fixture_person(&apps[0].diretrix, &apps[0].work_api).await;
    mock_create(&apps[0].c2s, "c2s-1", 1).await;

    let body = fixture("google_ads_lead.json");
    let posts = (0..12).map(|i| {
        let address = apps[i % 2].address.clone();
        let body = body.clone();
        async move {
            let response = post_google(&address, &body).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    });
    let answers = futures::future::join_all(posts).await;
    let accepted: Vec<i64> = answers
        .iter()
        .filter(|a| a["status"] == "accepted")
        .map(|a| a["event_id"].as_i64().unwrap())
        .collect();
    assert_eq!(accepted.len(), 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a["status"] == "accepted" || a["status"] == "duplicate")
    );
    let event = apps[0].wait_final(accepted[0]).await;
    assert_eq!(event.outcome, Some(Outcome::Created));
    apps[0].verify_mocks().await;
}

both_backends!(
    a_wrong_or_missing_key_is_401_and_stores_nothing,
    |backend| async move {
        let app = spawn_app_with(backend, with_key).await;
        let mut body = fixture("google_ads_lead.json");
        body["google_key"] = json!("not-the-key");
        assert_eq!(post_google(&app.address, &body).await.status(), 401);
        body.as_object_mut().unwrap().remove("google_key");
        assert_eq!(post_google(&app.address, &body).await.status(), 401);
        assert!(app.store().events(None, 10).await.unwrap().is_empty());
        app.verify_mocks().await;
    }
);

both_backends!(
    without_a_configured_key_the_route_is_404,
    |backend| async move {
        let app = spawn_app(backend).await;
        let body = fixture("google_ads_lead.json");
        assert_eq!(post_google(&app.address, &body).await.status(), 404);
        assert!(app.store().events(None, 10).await.unwrap().is_empty());
    }
);

both_backends!(
    a_cpf_from_the_form_skips_the_cpf_lookup_and_names_come_from_first_and_last,
    |backend| async move {
        let app = spawn_app_with(backend, with_key).await;
        // No Diretrix mock: the catch-all fails the test on any Diretrix call.
        mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 1).await;
        mock_create(&app.c2s, "c2s-2", 1).await;
        let body = lead_with(
            "lead-form-cpf",
            json!([
                col("FIRST_NAME", "Nome", "Ana"),
                col("LAST_NAME", "Sobrenome", "Lima"),
                col("PHONE_NUMBER", "Telefone", "+5511912345678"),
                col("custom_7", "Qual o seu CPF?", "526.018.159-06"),
                col("custom_8", "Qual o imóvel?", "Apartamento 2 quartos"),
            ]),
        );
        let id = post_accepted(&app.address, &body).await;
        assert_eq!(app.wait_final(id).await.outcome, Some(Outcome::Created));
        let sent = created(&app.c2s).await;
        let attributes = &sent[0]["data"]["attributes"];
        assert_eq!(attributes["name"], "Ana Lima");
        let description = attributes["description"].as_str().unwrap();
        for expected in [
            "CPF informado: 526.018.159-06",
            "Qual o imóvel?: Apartamento 2 quartos",
            "MARIA APARECIDA SOUZA",
        ] {
            assert!(
                description.contains(expected),
                "{expected:?} in {description}"
            );
        }
        assert!(!description.contains("LEAD DE TESTE"));
        app.verify_mocks().await;
    }
);

both_backends!(
    an_invalid_form_cpf_is_ignored_and_the_contacts_are_looked_up,
    |backend| async move {
        let app = spawn_app_with(backend, with_key).await;
        mock_diretrix_phone(
            &app.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 1).await;
        mock_create(&app.c2s, "c2s-3", 1).await;
        let body = lead_with(
            "lead-bad-cpf",
            json!([
                col("FULL_NAME", "Nome", "Ana Lima"),
                col("PHONE_NUMBER", "Telefone", "+5511912345678"),
                col("CPF", "CPF", "111.111.111-11"),
            ]),
        );
        let id = post_accepted(&app.address, &body).await;
        assert_eq!(app.wait_final(id).await.outcome, Some(Outcome::Created));
        let sent = created(&app.c2s).await;
        let description = sent[0]["data"]["attributes"]["description"]
            .as_str()
            .unwrap();
        assert!(!description.contains("CPF informado"), "{description}");
        assert!(!description.contains("111.111.111-11"), "{description}");
        assert!(description.contains("CPF: 526.018.159-06"), "{description}");
        app.verify_mocks().await;
    }
);

both_backends!(
    the_description_is_cut_to_the_configured_characters,
    |backend| async move {
        let app = spawn_app_with(backend, |s| {
            with_key(s);
            s.c2s.description_max_chars = 120;
        })
        .await;
        mock_create(&app.c2s, "c2s-4", 1).await;
        let long = "é".repeat(150);
        let body = lead_with(
            "lead-long",
            json!([
                col("FULL_NAME", "Nome", "Ana Lima"),
                col("custom_1", "Obs", &long)
            ]),
        );
        let id = post_accepted(&app.address, &body).await;
        assert_eq!(app.wait_final(id).await.outcome, Some(Outcome::Created));
        let sent = created(&app.c2s).await;
        let description = sent[0]["data"]["attributes"]["description"]
            .as_str()
            .unwrap();
        assert_eq!(description.chars().count(), 120, "{description}");
        assert!(description.ends_with("[…]"));
        app.verify_mocks().await;
    }
);

both_backends!(
    an_intent_left_without_a_c2s_id_is_the_unknown_outcome_and_never_created_again,
    |backend| async move {
        let app = spawn_app_with(backend, with_key).await;
        mock_diretrix_phone(
            &app.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 1).await;
        mock_create(&app.c2s, "never", 0).await;
        // A process claimed the call and died before recording an answer, long enough ago
        // that its lease ran out.
        let lead = enricher::domain::LeadId::parse("lead-crashed").unwrap();
        let long_ago = time::OffsetDateTime::now_utc() - Duration::from_secs(3600);
        let claim = app
            .store()
            .claim_crm_creation(
                Source::GoogleAds,
                &lead,
                1,
                Duration::from_secs(30),
                long_ago,
            )
            .await
            .unwrap();
        assert_eq!(claim, CrmCreation::Claimed { attempt: 1 });
        let body = lead_with(
            "lead-crashed",
            json!([
                col("FULL_NAME", "Nome", "Ana Lima"),
                col("PHONE_NUMBER", "Telefone", "+5511912345678"),
            ]),
        );
        let id = post_accepted(&app.address, &body).await;
        let event = app.wait_final(id).await;
        assert_eq!(event.state, EventState::Dead);
        assert!(
            event
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("outcome unknown"),
            "{event:?}"
        );
        app.verify_mocks().await;
    }
);

/// C2S takes the create and never answers in time.
async fn mock_create_stalls(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/integration/leads"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"data": {"id": "late"}}))
                .set_delay(Duration::from_secs(60)),
        )
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(server)
        .await;
}

async fn wait_creates(server: &MockServer, n: usize) {
    wait_for(
        &format!("{n} create call(s)"),
        Duration::from_secs(20),
        || async move { (created(server).await.len() >= n).then_some(()) },
    )
    .await;
}

both_backends!(
    a_process_killed_during_the_create_call_leaves_at_most_the_documented_copies,
    |backend| async move {
        let w = World::new(backend).await;
        mock_diretrix_phone(
            &w.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            1,
        )
        .await;
        mock_diretrix_email(&w.diretrix, EMAIL, fixture("diretrix_found.json"), 1).await;
        mock_work(&w.work_api, CPF, fixture("work_api_person.json"), 1).await;
        mock_create_stalls(&w.c2s).await;
        let key = [("ENRICHER__WEBHOOKS__GOOGLE_ADS_KEY", KEY)];

        // Default allowance (no repost): killed mid-create, the lead is never created again.
        let mut first = w.process(&key).await;
        let id = post_accepted(&first.address, &fixture("google_ads_lead.json")).await;
        wait_creates(&w.c2s, 1).await;
        first.kill();
        let second = w.process(&key).await;
        let event = w.wait_final(id).await;
        assert_eq!(event.state, EventState::Dead, "{event:?}");
        assert!(
            event
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("outcome unknown")
        );
        assert_eq!(created(&w.c2s).await.len(), 1, "one create call in all");
        drop(second);
        w.verify_mocks().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_repost_allowed_a_kill_mid_create_makes_exactly_two_calls() {
    let w = World::new(Backend::Postgres).await;
    mock_diretrix_phone(
        &w.diretrix,
        PHONE_NATIONAL,
        fixture("diretrix_found.json"),
        1,
    )
    .await;
    mock_diretrix_email(&w.diretrix, EMAIL, fixture("diretrix_found.json"), 1).await;
    mock_work(&w.work_api, CPF, fixture("work_api_person.json"), 1).await;
    mock_create_stalls(&w.c2s).await;
    mock_create(&w.c2s, "c2s-after", 1).await;
    let extra = [
        ("ENRICHER__WEBHOOKS__GOOGLE_ADS_KEY", KEY),
        ("ENRICHER__DELIVERY__UNKNOWN_OUTCOME_REPOSTS", "1"),
    ];
    let mut first = w.process(&extra).await;
    let id = post_accepted(&first.address, &fixture("google_ads_lead.json")).await;
    wait_creates(&w.c2s, 1).await;
    first.kill();
    let _second = w.process(&extra).await;
    let event = w.wait_final(id).await;
    assert_eq!(event.outcome, Some(Outcome::Created), "{event:?}");
    assert_eq!(created(&w.c2s).await.len(), 2);
    w.verify_mocks().await;
}
