//! Work API: CPF -> person data. The token travels in the query string.
//!
//! `GET {base}/api?token={token}&modulo=cpf&consulta={cpf}`. Not-found arrives inside a 200
//! (`{"status": 404, ...}`) and is returned as [`WorkApiAnswer::NotFound`], never as a person.
//! Because the URL holds the token, nothing here ever formats a URL or a reqwest error.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{PersonData, ProviderError, http_client, read_json, send_lookup};
use crate::domain::Cpf;
use crate::domain::person::{Person, WorkApiAnswer};

const PROVIDER: &str = "work_api";

pub struct WorkApiClient {
    http: reqwest::Client,
    base: url::Url,
    token: SecretString,
}

impl WorkApiClient {
    pub fn new(base: url::Url, token: SecretString, timeout: Duration) -> Self {
        WorkApiClient {
            http: http_client(timeout),
            base,
            token,
        }
    }
}

#[async_trait]
impl PersonData for WorkApiClient {
    #[tracing::instrument(name = "work_api.fetch", skip_all, fields(cpf = %cpf))]
    async fn fetch(&self, cpf: &Cpf) -> Result<(serde_json::Value, WorkApiAnswer), ProviderError> {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("api");
        }
        let request = self.http.get(url).query(&[
            ("token", self.token.expose_secret()),
            ("modulo", "cpf"),
            ("consulta", cpf.as_str()),
        ]);
        let Some(response) = send_lookup(PROVIDER, request).await? else {
            return Ok((serde_json::Value::Null, WorkApiAnswer::NotFound));
        };
        let body: serde_json::Value = read_json(PROVIDER, response, "a JSON object").await?;
        let answer = Person::from_work_api(&body).map_err(|e| ProviderError::Decode {
            provider: PROVIDER,
            detail: e.to_string(),
        })?;
        Ok((body, answer))
    }
}
