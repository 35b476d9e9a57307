//! A contact listing several candidates: the lead's name chooses, only the chosen person is
//! bought, the message says how sure the choice is, and memory and the database choose alike.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::operators::{json as body_of, series, with_admin};
use crate::pipeline::{CPF, PHONE_NATIONAL, mock_c2s_ok, mock_diretrix_phone, mock_work};

/// The first candidate of the family line below; Maria ([`CPF`]) is the second.
const JOAO_CPF: &str = "11144477735";
const COMPANY_CNPJ: &str = "39182746000107";

/// Diretrix's answer for the phone: João first, Maria second.
fn two_people() -> Value {
    json!([
        {"nome": "JOAO CARLOS DE SOUZA", "cpf": JOAO_CPF},
        {"nome": "MARIA APARECIDA SOUZA", "cpf": CPF},
    ])
}

/// The Work API's answer for João: the fixture person under his CPF and name.
fn joao_person() -> Value {
    let mut body = fixture("work_api_person.json");
    body["DadosBasicos"]["cpf"] = json!(JOAO_CPF);
    body["DadosBasicos"]["nome"] = json!("JOAO CARLOS DE SOUZA");
    body
}

/// A lead with the phone only, named `name` (or with no name).
fn lead(id: &str, at: &str, name: Option<&str>) -> Value {
    json!({
        "id": id,
        "hook_action": "on_create_lead",
        "attributes": {
            "updated_at": at,
            "customer": {"name": name, "phone": PHONE_NATIONAL},
        }
    })
}

/// Posts one lead, waits until it is delivered, and returns the message it got.
async fn message_for(app: &TestApp, lead_id: &str, body: Value) -> String {
    let ids = app.post_c2s_ok(&body).await;
    let event = app.wait_final(ids[0]).await;
    assert_eq!(
        event.outcome.map(|o| o.as_str()),
        Some("delivered"),
        "{lead_id}"
    );
    app.c2s_messages()
        .await
        .into_iter()
        .rev()
        .find(|(lead, _)| lead == lead_id)
        .map(|(_, text)| text)
        .expect("a message for the lead")
}

fn matches(scrape: &str, quality: &str) -> f64 {
    series(
        scrape,
        &format!("enricher_name_matches_total{{quality=\"{quality}\"}}"),
    )
    .unwrap_or(0.0)
}

both_backends!(
    the_lead_name_picks_the_second_candidate_and_only_that_person_is_bought_whatever_tier_answers,
    |backend| async move {
        let app = spawn_app_with(backend, with_admin).await;
        mock_diretrix_phone(&app.diretrix, PHONE_NATIONAL, two_people(), 1).await;
        mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 1).await;
        mock_work(&app.work_api, JOAO_CPF, joao_person(), 0).await;
        mock_c2s_ok(&app.c2s, 3).await;

        let text = message_for(
            &app,
            "L-1",
            lead("L-1", "2026-11-20T15:00:00Z", Some("Maria A. Souza")),
        )
        .await;
        assert!(text.contains("CPF: 526.018.159-06"), "{text}");
        assert!(!text.contains("111.444.777-35"), "{text}");
        assert!(
            !text.contains("⚠️"),
            "a confirmed match reads as before:\n{text}"
        );

        // A second lead on the same phone, her name written otherwise: the candidates come
        // from memory, the choice is made again for this lead, nothing is bought.
        let text = message_for(
            &app,
            "L-2",
            lead(
                "L-2",
                "2026-11-20T15:01:00Z",
                Some("SOUZA, Maria Aparecida"),
            ),
        )
        .await;
        assert!(text.contains("CPF: 526.018.159-06"), "{text}");

        // Operators see both candidates, masked, and which one each lead got.
        let view = body_of(
            app.admin(
                Method::GET,
                &format!("/cache/lookup?phone={PHONE_NATIONAL}"),
            )
            .send()
            .await
            .unwrap(),
            200,
        )
        .await;
        assert_eq!(view["tier"], "memory");
        let listed = view["candidates"].as_array().expect("candidates").clone();
        assert_eq!(listed.len(), 2, "{view}");
        assert_eq!(listed[1]["kind"], "person");
        assert_eq!(listed[1]["name"], "M*** A*** S***", "{view}");
        let shown = view.to_string();
        assert!(
            !shown.contains(CPF) && !shown.contains(JOAO_CPF) && !shown.contains("MARIA"),
            "masked: {shown}"
        );
        let recent = view["recent_leads"].as_array().expect("recent leads");
        let got: Vec<(&str, i64, &str)> = recent
            .iter()
            .map(|c| {
                (
                    c["lead_id"].as_str().unwrap(),
                    c["position"].as_i64().unwrap(),
                    c["quality"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, vec![("L-2", 1, "confirmed"), ("L-1", 1, "confirmed")]);
        assert_eq!(matches(&app.scrape().await, "confirmed"), 2.0);

        // A new instance with empty memory: the database holds the whole list and gives the
        // same choice for a third lead, still without buying anything.
        let app = app.restart().await;
        let text = message_for(
            &app,
            "L-3",
            lead("L-3", "2026-11-20T15:02:00Z", Some("Maria Souza")),
        )
        .await;
        assert!(text.contains("CPF: 526.018.159-06"), "{text}");
        let view = body_of(
            app.admin(
                Method::GET,
                &format!("/cache/lookup?phone={PHONE_NATIONAL}"),
            )
            .send()
            .await
            .unwrap(),
            200,
        )
        .await;
        assert_eq!(view["candidates"].as_array().map(Vec::len), Some(2));
        app.verify_mocks().await;
    }
);

both_backends!(
    a_lead_name_matching_nobody_gets_the_first_person_with_the_warning_and_a_later_lead_chooses_again,
    |backend| async move {
        let app = spawn_app_with(backend, with_admin).await;
        mock_diretrix_phone(&app.diretrix, PHONE_NATIONAL, two_people(), 1).await;
        mock_work(&app.work_api, JOAO_CPF, joao_person(), 1).await;
        mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 1).await;
        mock_c2s_ok(&app.c2s, 2).await;

        let text = message_for(
            &app,
            "L-1",
            lead("L-1", "2026-11-20T15:00:00Z", Some("Pedro Lima")),
        )
        .await;
        assert!(
            text.contains(
                "👤 Encontrado pelo telefone (11) 98765-4321\n⚠️ Nome diferente do lead: JOAO CARLOS DE SOUZA\n"
            ),
            "{text}"
        );
        assert!(text.contains("CPF: 111.444.777-35"), "{text}");

        // The candidates belong to the phone, the choice to the lead: Maria's lead on the same
        // phone, after a restart (the database answers), gets Maria, confirmed; only her
        // person data is bought, the phone is not looked up again.
        let app = app.restart().await;
        let text = message_for(
            &app,
            "L-2",
            lead("L-2", "2026-11-20T15:01:00Z", Some("Maria Aparecida de Souza")),
        )
        .await;
        assert!(text.contains("CPF: 526.018.159-06"), "{text}");
        assert!(!text.contains("⚠️"), "{text}");
        let scrape = app.scrape().await;
        assert_eq!(matches(&scrape, "confirmed"), 1.0, "counters are per process");
        app.verify_mocks().await;
    }
);

both_backends!(
    a_company_in_the_list_is_shown_as_a_company_and_a_lead_without_a_name_gets_the_first_person,
    |backend| async move {
        let app = spawn_app_with(backend, with_admin).await;
        let answer = json!([
            {"nome": "PADARIA BOM PAO LTDA", "cpf": COMPANY_CNPJ},
            {"nome": "MARIA APARECIDA SOUZA", "cpf": CPF},
            {"nome": "JOAO CARLOS DE SOUZA", "cpf": JOAO_CPF},
        ]);
        mock_diretrix_phone(&app.diretrix, PHONE_NATIONAL, answer, 1).await;
        mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 1).await;
        mock_work(&app.work_api, JOAO_CPF, joao_person(), 0).await;
        mock_c2s_ok(&app.c2s, 1).await;

        let text = message_for(&app, "L-1", lead("L-1", "2026-11-20T15:00:00Z", None)).await;
        assert!(text.contains("CPF: 526.018.159-06"), "{text}");
        assert!(!text.contains("⚠️"), "nothing to compare:\n{text}");
        assert!(
            text.contains(
                "🏢 EMPRESAS LIGADAS AOS CONTATOS\n• 39.182.746/0001-07 - PADARIA BOM PAO LTDA (pelo telefone (11) 98765-4321)"
            ),
            "{text}"
        );
        assert!(
            !text.contains("391.827.460"),
            "never read as a CPF:\n{text}"
        );
        assert_eq!(matches(&app.scrape().await, "no_lead_name"), 1.0);

        let view = body_of(
            app.admin(
                Method::GET,
                &format!("/cache/lookup?phone={PHONE_NATIONAL}&reveal=true"),
            )
            .send()
            .await
            .unwrap(),
            200,
        )
        .await;
        let kinds: Vec<(&str, &str)> = view["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["kind"].as_str().unwrap(), c["id"].as_str().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("company", COMPANY_CNPJ),
                ("person", CPF),
                ("person", JOAO_CPF)
            ]
        );
        assert_eq!(view["cpf"], CPF, "the first person, not the company");
        app.verify_mocks().await;
    }
);
