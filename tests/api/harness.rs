//! The harness itself: what makes a test fail that would otherwise pass by accident.

use crate::helpers::*;

#[tokio::test]
#[should_panic(expected = "catch-all: a request no mock of this test expects")]
async fn a_request_that_no_mock_expects_fails_the_test_when_the_app_is_dropped() {
    let app = spawn_app(Backend::Sqlite).await;
    // What a misrouted provider call looks like: wrong path, no credentials.
    let response = app
        .http
        .get(format!(
            "{}/Consultas/Pessoa/Telefon/11987654321",
            app.diretrix.uri()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500, "never a 404 that reads as nobody");
}
