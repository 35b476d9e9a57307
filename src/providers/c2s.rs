//! C2S API: posts the enrichment message on a lead, creates leads, lists them and subscribes
//! the webhook. Bearer token.
//!
//! - `POST {base}/integration/leads/{lead_id}/create_message` with `{"leadId", "body"}`.
//! - `POST {base}/integration/leads` with a JSON:API lead; the new id is `data.id` (a string or
//!   an integer).
//! - `GET {base}/integration/leads?page&perpage&sort=-updated_at&updated_gte&updated_lt`:
//!   `{"data": [lead, …], "meta": {"total", "page", "perpage"}}`, each lead the resource the
//!   webhook carries, read by the webhook's own parser.
//! - `POST {base}/integration/webhook/leads/subscribe` with `{"url", "events"}`.
//!
//! Any 2xx is success. 429 (with `Retry-After`), 5xx and connection failures are transient,
//! other 4xx and 3xx permanent (redirects are never followed); a POST sent and never answered
//! is [`ProviderError::Unanswered`]: the caller decides what to do with each. Answers are read
//! up to a size cap.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Crm, Http, LeadPage, LeadQuery, ListedLead, MAX_PER_PAGE, NewCrmLead, ProviderError,
    http_client, read_json,
};
use crate::domain::LeadId;
use crate::intake::c2s::C2sEvent;

const PROVIDER: &str = "c2s";

pub struct C2sClient {
    http: Http,
    base: url::Url,
    token: SecretString,
    /// Largest answer body read.
    max_answer_bytes: usize,
}

impl C2sClient {
    pub fn new(
        base: url::Url,
        token: SecretString,
        timeout: Duration,
        max_answer_bytes: usize,
    ) -> Self {
        C2sClient {
            http: http_client(timeout),
            base,
            token,
            max_answer_bytes,
        }
    }

    /// `{base}/{segments…}`, each segment percent-encoded so a lead id cannot alter the path.
    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request that changes something: an error once it has left means the outcome
    /// is unknown. Answers the 2xx response.
    async fn send_change(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ProviderError> {
        let response = request
            .bearer_auth(self.token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ProviderError::from_reqwest_after_send(PROVIDER, &e))?;
        let status = response.status();
        if status.is_success() {
            Ok(response)
        } else {
            Err(ProviderError::from_status(
                PROVIDER,
                status,
                response.headers(),
            ))
        }
    }
}

/// `2026-11-20T00:00:00Z`.
fn rfc3339(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        // Any UTC instant in the years 0..=9999 formats; the CRM's leads live there.
        .unwrap_or_default()
}

/// The created lead's id: `data.id`, a string or an exact integer.
fn created_id(answer: &Value) -> Result<LeadId, ProviderError> {
    let unreadable = |detail: &str| ProviderError::Decode {
        provider: PROVIDER,
        detail: detail.to_owned(),
    };
    let raw = match answer.pointer("/data/id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return Err(unreadable("expected data.id, a string or an integer")),
    };
    LeadId::parse(&raw).map_err(|_| unreadable("data.id is not a usable lead id"))
}

#[derive(Deserialize)]
struct ListAnswer {
    data: Vec<Value>,
    #[serde(default)]
    meta: Option<ListMeta>,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(default)]
    total: Option<u64>,
}

/// Reads each listed lead with the webhook's parser; one that does not read is reported by
/// position and skipped, so one odd lead cannot stop the rest.
fn read_page(answer: ListAnswer, query: &LeadQuery) -> LeadPage {
    let mut page = LeadPage {
        total: answer.meta.and_then(|m| m.total),
        page: query.page,
        perpage: query.perpage,
        ..LeadPage::default()
    };
    for (i, payload) in answer.data.into_iter().enumerate() {
        match C2sEvent::from_payload(&payload, &format!("data[{i}].")) {
            Ok(lead) => page.leads.push(ListedLead { payload, lead }),
            Err(e) => page.unreadable.push(e),
        }
    }
    page
}

#[async_trait]
impl Crm for C2sClient {
    #[tracing::instrument(name = "c2s.post_message", skip_all, fields(lead = %lead))]
    async fn post_message(&self, lead: &LeadId, body: &str) -> Result<(), ProviderError> {
        let url = self.url(&["integration", "leads", lead.as_str(), "create_message"]);
        self.send_change(
            self.http
                .post(url)
                .json(&serde_json::json!({ "leadId": lead.as_str(), "body": body })),
        )
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "c2s.create_lead", skip_all)]
    async fn create_lead(&self, lead: &NewCrmLead) -> Result<LeadId, ProviderError> {
        let mut attributes = serde_json::json!({
            "name": lead.name,
            "description": lead.description,
            "type_negotiation": "Compra",
            "source": lead.source,
        });
        for (field, value) in [
            ("phone", &lead.phone),
            ("email", &lead.email),
            ("product", &lead.product),
            ("seller_id", &lead.seller_id),
        ] {
            if let Some(value) = value {
                attributes[field] = Value::from(value.as_str());
            }
        }
        let body = serde_json::json!({"data": {"type": "lead", "attributes": attributes}});
        let response = self
            .send_change(
                self.http
                    .post(self.url(&["integration", "leads"]))
                    .json(&body),
            )
            .await?;
        // The lead exists now; an unreadable answer loses its id, which the caller must treat
        // like an unanswered create (never create again blindly).
        let answer: Value = read_json(
            PROVIDER,
            response,
            self.max_answer_bytes,
            "a JSON:API lead with data.id",
        )
        .await?;
        created_id(&answer)
    }

    #[tracing::instrument(name = "c2s.list_leads", skip_all, fields(page = query.page))]
    async fn list_leads(&self, query: &LeadQuery) -> Result<LeadPage, ProviderError> {
        let perpage = query.perpage.clamp(1, MAX_PER_PAGE);
        let query = LeadQuery {
            perpage,
            page: query.page.max(1),
            ..query.clone()
        };
        let mut params: Vec<(&str, String)> = vec![
            ("page", query.page.to_string()),
            ("perpage", perpage.to_string()),
            ("sort", "-updated_at".to_owned()),
        ];
        if let Some(t) = query.updated_gte {
            params.push(("updated_gte", rfc3339(t)));
        }
        if let Some(t) = query.updated_lt {
            params.push(("updated_lt", rfc3339(t)));
        }
        let response = self
            .http
            .get(self.url(&["integration", "leads"]))
            .query(&params)
            .bearer_auth(self.token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ProviderError::from_reqwest(PROVIDER, &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ProviderError::from_status(
                PROVIDER,
                status,
                response.headers(),
            ));
        }
        let answer: ListAnswer = read_json(
            PROVIDER,
            response,
            self.max_answer_bytes,
            "{data: [lead, …], meta}",
        )
        .await?;
        Ok(read_page(answer, &query))
    }

    #[tracing::instrument(name = "c2s.subscribe", skip_all)]
    async fn subscribe(&self, url: &url::Url, events: &[&str]) -> Result<(), ProviderError> {
        self.send_change(
            self.http
                .post(self.url(&["integration", "webhook", "leads", "subscribe"]))
                .json(&serde_json::json!({ "url": url.as_str(), "events": events })),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use wiremock::matchers::{any, body_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// A mock C2S whose catch-all answers 500 and expects nothing: a wrong path, method or
    /// token fails the test instead of passing as wiremock's default 404.
    async fn crm() -> (MockServer, C2sClient) {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(500))
            .with_priority(u8::MAX)
            .expect(0)
            .named("catch-all")
            .mount(&server)
            .await;
        let client = C2sClient::new(
            url::Url::parse(&format!("{}/api/", server.uri())).unwrap(),
            SecretString::from("c2s-token"),
            Duration::from_secs(2),
            64 * 1024,
        );
        (server, client)
    }

    fn new_lead() -> NewCrmLead {
        NewCrmLead {
            name: "Carlos Eduardo Pereira".into(),
            phone: Some("+5511912345678".into()),
            email: None,
            description: "📣 Lead do Google Ads".into(),
            source: "Google Ads".into(),
            product: None,
            seller_id: None,
        }
    }

    fn listed(id: &str, updated_at: &str) -> Value {
        serde_json::json!({
            "id": id,
            "type": "lead",
            "attributes": {
                "updated_at": updated_at,
                "customer": {"name": "Ana", "phone": "(11) 91234-5678", "email": null},
                "lead_status": {"alias": "novo"}
            }
        })
    }

    #[tokio::test]
    async fn create_lead_sends_a_json_api_lead_and_reads_a_string_id() {
        let (server, client) = crm().await;
        Mock::given(method("POST"))
            .and(path("/api/integration/leads"))
            .and(header("authorization", "Bearer c2s-token"))
            .and(body_json(
                serde_json::json!({"data": {"type": "lead", "attributes": {
                    "name": "Carlos Eduardo Pereira",
                    "description": "📣 Lead do Google Ads",
                    "type_negotiation": "Compra",
                    "source": "Google Ads",
                    "phone": "+5511912345678",
                }}}),
            ))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(serde_json::json!({"data": {"type": "lead", "id": "abc123"}})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let id = client.create_lead(&new_lead()).await.unwrap();
        assert_eq!(id.as_str(), "abc123");
    }

    #[tokio::test]
    async fn create_lead_reads_a_numeric_id_exactly() {
        let (server, client) = crm().await;
        Mock::given(method("POST"))
            .and(path("/api/integration/leads"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw(r#"{"data": {"id": 9007199254740993}}"#, "application/json"),
            )
            .expect(1)
            .mount(&server)
            .await;
        let id = client.create_lead(&new_lead()).await.unwrap();
        assert_eq!(id.as_str(), "9007199254740993");
    }

    #[tokio::test]
    async fn create_lead_failures_are_classified() {
        let cases: [(ResponseTemplate, &str); 6] = [
            (
                ResponseTemplate::new(429).insert_header("retry-after", "7"),
                "429",
            ),
            (ResponseTemplate::new(503), "5xx"),
            (ResponseTemplate::new(422), "4xx"),
            (
                ResponseTemplate::new(302).insert_header("location", "/elsewhere"),
                "3xx",
            ),
            (
                ResponseTemplate::new(201).set_body_json(serde_json::json!({"data": {}})),
                "decode",
            ),
            (
                ResponseTemplate::new(201).set_body_string("x".repeat(70 * 1024)),
                "decode",
            ),
        ];
        for (answer, class) in cases {
            let (server, client) = crm().await;
            Mock::given(method("POST"))
                .and(path("/api/integration/leads"))
                .respond_with(answer)
                .expect(1)
                .mount(&server)
                .await;
            // A followed redirect would reach this mock and break its expectation.
            Mock::given(path("/elsewhere"))
                .respond_with(ResponseTemplate::new(200))
                .expect(0)
                .mount(&server)
                .await;
            let err = client.create_lead(&new_lead()).await.unwrap_err();
            assert_eq!(err.class(), class, "{err}");
            assert!(!err.to_string().contains(&server.uri()), "no URL in errors");
        }
    }

    #[tokio::test]
    async fn a_create_sent_and_never_answered_is_an_unknown_outcome() {
        let (server, _) = crm().await;
        let client = C2sClient::new(
            url::Url::parse(&format!("{}/api/", server.uri())).unwrap(),
            SecretString::from("c2s-token"),
            Duration::from_millis(200),
            1024,
        );
        Mock::given(method("POST"))
            .and(path("/api/integration/leads"))
            .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(2)))
            .expect(1)
            .mount(&server)
            .await;
        let err = client.create_lead(&new_lead()).await.unwrap_err();
        assert_eq!(err.class(), "unanswered");
    }

    #[tokio::test]
    async fn list_leads_asks_for_the_window_and_reads_each_lead_like_the_webhook() {
        let (server, client) = crm().await;
        Mock::given(method("GET"))
            .and(path("/api/integration/leads"))
            .and(header("authorization", "Bearer c2s-token"))
            .and(query_param("page", "2"))
            .and(query_param("perpage", "50"))
            .and(query_param("sort", "-updated_at"))
            .and(query_param("updated_gte", "2026-11-20T00:00:00Z"))
            .and(query_param("updated_lt", "2026-11-21T12:30:00Z"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "data": [
                    listed("lead-a", "2026-11-21T10:00:00Z"),
                    {"id": "lead-b", "attributes": {}},
                    listed("lead-c", "2026-11-20 09:00:00 -0300"),
                ],
                "meta": {"total": 53, "page": 2, "perpage": 50}
            })))
            .expect(1)
            .mount(&server)
            .await;
        let page = client
            .list_leads(&LeadQuery {
                updated_gte: Some(datetime!(2026-11-20 00:00 UTC)),
                updated_lt: Some(datetime!(2026-11-21 09:30 -3)),
                page: 2,
                // More than the CRM allows: asked as 50.
                perpage: 500,
            })
            .await
            .unwrap();
        assert_eq!(page.total, Some(53));
        assert_eq!((page.page, page.perpage), (2, 50));
        let ids: Vec<&str> = page.leads.iter().map(|l| l.lead.lead_id.as_str()).collect();
        assert_eq!(ids, ["lead-a", "lead-c"]);
        assert_eq!(
            page.leads[1].lead.updated_at,
            datetime!(2026-11-20 12:00 UTC)
        );
        assert_eq!(
            page.leads[0].lead.customer.phone.as_ref().unwrap().e164(),
            "+5511912345678"
        );
        assert_eq!(
            page.leads[0].payload["attributes"]["lead_status"]["alias"],
            "novo"
        );
        assert_eq!(page.unreadable.len(), 1);
        assert_eq!(page.unreadable[0].field, "data[1].attributes.updated_at");
    }

    #[tokio::test]
    async fn list_leads_failures_are_classified_and_big_pages_refused() {
        let cases: [(ResponseTemplate, &str); 4] = [
            (ResponseTemplate::new(500), "5xx"),
            (ResponseTemplate::new(401), "4xx"),
            (ResponseTemplate::new(200).set_body_string("[]"), "decode"),
            (
                ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "data": (0..600).map(|i| listed(&format!("l{i}"), "2026-11-21T10:00:00Z"))
                        .collect::<Vec<_>>()
                })),
                "decode",
            ),
        ];
        for (answer, class) in cases {
            let (server, client) = crm().await;
            Mock::given(method("GET"))
                .and(path("/api/integration/leads"))
                .respond_with(answer)
                .expect(1)
                .mount(&server)
                .await;
            let err = client
                .list_leads(&LeadQuery {
                    updated_gte: None,
                    updated_lt: None,
                    page: 1,
                    perpage: 50,
                })
                .await
                .unwrap_err();
            assert_eq!(err.class(), class, "{err}");
        }
    }

    #[tokio::test]
    async fn subscribe_registers_the_url_for_the_events() {
        let (server, client) = crm().await;
        Mock::given(method("POST"))
            .and(path("/api/integration/webhook/leads/subscribe"))
            .and(header("authorization", "Bearer c2s-token"))
            .and(body_json(serde_json::json!({
                "url": "https://enricher.example.com/api/v1/webhooks/c2s?token=t",
                "events": ["on_create_lead", "on_update_lead", "on_close_lead"]
            })))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&server)
            .await;
        client
            .subscribe(
                &url::Url::parse("https://enricher.example.com/api/v1/webhooks/c2s?token=t")
                    .unwrap(),
                &["on_create_lead", "on_update_lead", "on_close_lead"],
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn subscribe_failures_are_classified() {
        let (server, client) = crm().await;
        Mock::given(method("POST"))
            .and(path("/api/integration/webhook/leads/subscribe"))
            .respond_with(ResponseTemplate::new(422))
            .expect(1)
            .mount(&server)
            .await;
        let err = client
            .subscribe(
                &url::Url::parse("https://x.example/").unwrap(),
                &["on_create_lead"],
            )
            .await
            .unwrap_err();
        assert_eq!(err.class(), "4xx");
    }
}
