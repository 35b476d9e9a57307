//! Work API: CPF -> person data. The token travels in the query string.
//!
//! `GET {base}/api?token={token}&modulo=cpf&consulta={cpf}`. Not-found arrives inside a 200
//! (`{"status": 404, ...}`) and is returned as [`WorkApiAnswer::NotFound`], never as a person.
//! Because the URL holds the token, nothing here ever formats a URL or a reqwest error.
//! `answer.rs` reads the body into a [`WorkApiAnswer`] (the provider's contract).

pub mod answer;

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{Http, PersonData, ProviderError, http_client, read_json, send_lookup};
use crate::domain::Cpf;
use crate::domain::text::TextLimits;
pub use answer::{AnswerError, WorkApiAnswer};

const PROVIDER: &str = "work_api";

pub struct WorkApiClient {
    http: Http,
    base: url::Url,
    token: SecretString,
    /// Largest answer body read.
    max_answer_bytes: usize,
    /// How much of each field and list of an answer is kept.
    limits: TextLimits,
}

impl WorkApiClient {
    pub fn new(
        base: url::Url,
        token: SecretString,
        timeout: Duration,
        max_answer_bytes: usize,
    ) -> Self {
        WorkApiClient {
            http: http_client(timeout),
            base,
            token,
            max_answer_bytes,
            limits: TextLimits::default(),
        }
    }

    /// Keeps at most what `limits` allow of each field and list of an answer.
    pub fn with_limits(mut self, limits: TextLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// The answer must be about the CPF asked for: an answer naming someone else (or a CPF that
/// cannot exist) would be stored and posted as this person's data.
fn check_answer_is_for(
    asked: &Cpf,
    answer: Result<WorkApiAnswer, AnswerError>,
) -> Result<WorkApiAnswer, ProviderError> {
    let mismatch = |detail| ProviderError::Mismatch {
        provider: PROVIDER,
        detail,
    };
    match answer {
        Err(AnswerError::NotACpf) => Err(mismatch("the answer's CPF has invalid check digits")),
        Err(e) => Err(ProviderError::Decode {
            provider: PROVIDER,
            detail: e.to_string(),
        }),
        Ok(WorkApiAnswer::Found(person)) if person.cpf != *asked => {
            Err(mismatch("the answer is about another CPF"))
        }
        Ok(answer) => Ok(answer),
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
        let body: serde_json::Value =
            read_json(PROVIDER, response, self.max_answer_bytes, "a JSON object").await?;
        let answer = check_answer_is_for(cpf, WorkApiAnswer::parse_with(&body, self.limits))?;
        Ok((body, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(cpf: &str) -> Result<WorkApiAnswer, AnswerError> {
        WorkApiAnswer::parse(&serde_json::json!({"DadosBasicos": {"cpf": cpf, "nome": "X"}}))
    }

    #[test]
    fn only_an_answer_about_the_cpf_asked_for_is_accepted() {
        let asked = Cpf::parse("52601815906").unwrap();
        assert!(matches!(
            check_answer_is_for(&asked, answer("526.018.159-06")),
            Ok(WorkApiAnswer::Found(p)) if p.cpf == asked
        ));
        assert_eq!(
            check_answer_is_for(&asked, Ok(WorkApiAnswer::NotFound)),
            Ok(WorkApiAnswer::NotFound)
        );
        for other in ["09925419050", "52601815900"] {
            let err = check_answer_is_for(&asked, answer(other)).unwrap_err();
            assert_eq!(err.class(), "mismatch", "{other}");
            assert!(!err.is_transient());
            assert!(!err.to_string().contains(other), "no CPF in the error");
        }
    }

    #[test]
    fn an_unreadable_answer_is_a_decode_error_that_names_no_data() {
        let err = check_answer_is_for(
            &Cpf::parse("52601815906").unwrap(),
            answer("526.018.159-061"),
        )
        .unwrap_err();
        assert_eq!(err.class(), "decode");
        assert!(!err.is_transient());
        assert!(!err.to_string().contains("526"), "{err}");
    }
}
