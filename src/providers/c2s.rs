//! C2S API: posts the enrichment message on a lead. Bearer token.
//!
//! `POST {base}/integration/leads/{lead_id}/create_message` with `{"leadId", "body"}`; any
//! 2xx is success. 429 (with `Retry-After`), 5xx and connection failures are transient, other
//! 4xx and 3xx permanent; a POST sent and never answered is [`ProviderError::Unanswered`]:
//! delivery decides what to do with each.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{Crm, ProviderError, http_client};
use crate::domain::LeadId;

const PROVIDER: &str = "c2s";

pub struct C2sClient {
    http: reqwest::Client,
    base: url::Url,
    token: SecretString,
}

impl C2sClient {
    pub fn new(base: url::Url, token: SecretString, timeout: Duration) -> Self {
        C2sClient {
            http: http_client(timeout),
            base,
            token,
        }
    }
}

#[async_trait]
impl Crm for C2sClient {
    #[tracing::instrument(name = "c2s.post_message", skip_all, fields(lead = %lead))]
    async fn post_message(&self, lead: &LeadId, body: &str) -> Result<(), ProviderError> {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([
                "integration",
                "leads",
                lead.as_str(),
                "create_message",
            ]);
        }
        let response = self
            .http
            .post(url)
            .bearer_auth(self.token.expose_secret())
            .json(&serde_json::json!({ "leadId": lead.as_str(), "body": body }))
            .send()
            .await
            .map_err(|e| ProviderError::from_reqwest_after_send(PROVIDER, &e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(ProviderError::from_status(
                PROVIDER,
                status,
                response.headers(),
            ))
        }
    }
}
