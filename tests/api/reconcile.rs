//! Reconciliation: a lead the CRM lists but whose webhook never came is processed once, as if
//! it had; a lead the webhook did bring gets nothing new; the watermark is stored.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::both_backends;
use crate::helpers::*;
use crate::pipeline::{PHONE_NATIONAL, mock_c2s_ok, mock_phone_person};

both_backends!(
    a_listed_lead_the_webhook_never_brought_gets_one_message_and_a_brought_one_nothing,
    |backend| async move {
        let app = spawn_app(backend).await;
        mock_phone_person(&app, 1).await;
        // One message for the webhook's lead, one for the lost lead: two in all.
        mock_c2s_ok(&app.c2s, 2).await;
        let brought = c2s_event(
            "brought",
            "on_create_lead",
            "2026-11-22T10:00:00Z",
            Some(PHONE_NATIONAL),
            None,
        );
        let ids = app.post_c2s_ok(&json!([brought.clone()])).await;
        app.wait_final(ids[0]).await;
        let lost = c2s_event(
            "lost",
            "on_create_lead",
            "2026-11-22T10:05:00Z",
            Some(PHONE_NATIONAL),
            None,
        );
        Mock::given(method("GET"))
            .and(path("/integration/leads"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "data": [lost, brought],
                "meta": {"total": 2}
            })))
            .expect(2)
            .mount(&app.c2s)
            .await;
        let since = time::macros::datetime!(2026-11-01 00:00 UTC);
        let pass = enricher::reconcile::once(&app.state, since).await.unwrap();
        assert_eq!((pass.listed, pass.enqueued), (2, 1), "{pass:?}");
        let mark = app.store().watermark("c2s").await.unwrap().unwrap();
        assert!(mark > since);
        wait_for(
            "the lost lead's message",
            Duration::from_secs(20),
            || async { (app.c2s_messages().await.len() == 2).then_some(()) },
        )
        .await;
        // A second pass lists both again: nothing new.
        let again = enricher::reconcile::once(&app.state, since).await.unwrap();
        assert_eq!(again.enqueued, 0, "{again:?}");
        let leads: Vec<String> = app
            .c2s_messages()
            .await
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(
            leads.iter().filter(|l| *l == "lost").count(),
            1,
            "{leads:?}"
        );
        app.verify_mocks().await;
    }
);
