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

/// Two instances on one database reconciling at once: one lists the CRM, the other is turned
/// away while the first holds the lock instead of listing the same window again; a later pass
/// of the other goes ahead; and a pass over an older window never moves the stored watermark
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_take_turns_at_reconciling_and_the_watermark_never_moves_back() {
    use enricher::reconcile::{ReconcileError, Window, pass};
    use time::macros::datetime;

    let apps = spawn_instances(2, |_| {}).await;
    // Slower than the losing pass is willing to wait for the lock. Three listings in all: the
    // winner of the race, the other's later pass, and the pass over the older window.
    Mock::given(method("GET"))
        .and(path("/integration/leads"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [], "meta": {"total": 0}}))
                .set_delay(Duration::from_millis(800)),
        )
        .expect(3)
        .mount(&apps[0].c2s)
        .await;
    let window = Window {
        since: datetime!(2026-11-01 00:00 UTC),
        until: datetime!(2026-11-22 12:00 UTC),
    };
    let wait = Duration::from_millis(200);
    let (a, b) = tokio::join!(
        pass(&apps[0].state, window, wait),
        pass(&apps[1].state, window, wait)
    );
    let (done, busy) = match (a, b) {
        (Ok(done), Err(busy)) | (Err(busy), Ok(done)) => (done, busy),
        other => panic!("one pass lists, the other is turned away: {other:?}"),
    };
    assert_eq!(done.pages, 1, "{done:?}");
    assert!(matches!(busy, ReconcileError::Busy), "{busy:?}");
    let mark = || async { apps[0].store().watermark("c2s").await.unwrap() };
    assert_eq!(mark().await, Some(window.until));

    // With the lock free, the second instance's next pass goes ahead.
    let later = Window {
        since: window.until,
        until: datetime!(2026-11-22 13:00 UTC),
    };
    pass(&apps[1].state, later, wait).await.unwrap();
    assert_eq!(mark().await, Some(later.until));
    // A pass over an older window (a clock behind, a slow instance) leaves it where it is.
    pass(&apps[0].state, window, wait).await.unwrap();
    assert_eq!(mark().await, Some(later.until));
    apps[0].verify_mocks().await;
}
