//! Diretrix: contact -> CPF, HTTP Basic auth.
//!
//! `GET {base}/Consultas/Pessoa/Telefone/{national number}` and
//! `GET {base}/Consultas/Pessoa/Email/{percent-encoded email}`. A 200 with an empty array, or
//! a 404, means nobody. Several candidates may come back; the first with valid check digits
//! wins. Owns this contract only: no caching, no retries.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{CpfCandidate, CpfLookup, ProviderError, http_client, read_json, send_lookup};
use crate::domain::text::{MAX_FIELD_CHARS, clip};
use crate::domain::{ContactKey, Cpf};

const PROVIDER: &str = "diretrix";

pub struct DiretrixClient {
    http: reqwest::Client,
    base: url::Url,
    user: SecretString,
    password: SecretString,
    /// Largest answer body read.
    max_answer_bytes: usize,
    /// Longest candidate name kept, in characters.
    max_field_chars: usize,
}

impl DiretrixClient {
    pub fn new(
        base: url::Url,
        user: SecretString,
        password: SecretString,
        timeout: Duration,
        max_answer_bytes: usize,
    ) -> Self {
        DiretrixClient {
            http: http_client(timeout),
            base,
            user,
            password,
            max_answer_bytes,
            max_field_chars: MAX_FIELD_CHARS,
        }
    }

    /// Keeps at most `max_field_chars` characters of a candidate's name.
    pub fn with_max_field_chars(mut self, max_field_chars: usize) -> Self {
        self.max_field_chars = max_field_chars;
        self
    }

    /// The lookup URL; each segment percent-encoded, so an email cannot alter the path.
    fn url(&self, key: &ContactKey) -> url::Url {
        let (kind, value) = match key {
            ContactKey::Phone(p) => ("Telefone", p.national()),
            ContactKey::Email(e) => ("Email", e.as_str().to_owned()),
        };
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["Consultas", "Pessoa", kind, value.as_str()]);
        }
        url
    }
}

#[derive(Deserialize)]
struct Candidate {
    nome: Option<String>,
    cpf: Option<serde_json::Value>,
}

/// Picks the first candidate whose CPF is valid. CPFs may come as numbers that lost their
/// leading zeros, hence the left-padding.
fn first_valid(candidates: Vec<Candidate>, max_field_chars: usize) -> Option<CpfCandidate> {
    candidates.into_iter().find_map(|c| {
        let raw = match c.cpf? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => format!("{n:0>11}"),
            _ => return None,
        };
        let cpf = Cpf::parse(&raw).ok()?;
        let name = c
            .nome
            .map(|n| clip(n.trim(), max_field_chars).trim_end().to_owned())
            .filter(|n| !n.is_empty());
        Some(CpfCandidate { cpf, name })
    })
}

#[async_trait]
impl CpfLookup for DiretrixClient {
    #[tracing::instrument(name = "diretrix.lookup", skip_all, fields(key = %key))]
    async fn lookup(&self, key: &ContactKey) -> Result<Option<CpfCandidate>, ProviderError> {
        let request = self.http.get(self.url(key)).basic_auth(
            self.user.expose_secret(),
            Some(self.password.expose_secret()),
        );
        let Some(response) = send_lookup(PROVIDER, request).await? else {
            return Ok(None);
        };
        let candidates: Vec<Candidate> = read_json(
            PROVIDER,
            response,
            self.max_answer_bytes,
            "a JSON array of {nome, cpf}",
        )
        .await?;
        Ok(first_valid(candidates, self.max_field_chars))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, Phone};

    fn client() -> DiretrixClient {
        DiretrixClient::new(
            url::Url::parse("http://diretrix.test/base/").unwrap(),
            SecretString::from("u"),
            SecretString::from("p"),
            Duration::from_secs(1),
            1024,
        )
    }

    #[test]
    fn phone_lookups_put_the_national_number_in_the_path() {
        let key = ContactKey::Phone(Phone::parse("+55 11 98765-4321").unwrap());
        assert_eq!(
            client().url(&key).as_str(),
            "http://diretrix.test/base/Consultas/Pessoa/Telefone/11987654321"
        );
    }

    #[test]
    fn email_lookups_percent_encode_the_address_as_one_segment() {
        let key = ContactKey::Email(Email::parse("a.b+c/d@example.com").unwrap());
        let url = client().url(&key);
        assert_eq!(
            url.as_str(),
            "http://diretrix.test/base/Consultas/Pessoa/Email/a.b+c%2Fd@example.com"
        );
    }

    #[test]
    fn the_first_candidate_with_valid_check_digits_wins() {
        let candidates = vec![
            Candidate {
                nome: Some("X".into()),
                cpf: Some(serde_json::json!("52601815900")),
            },
            Candidate {
                nome: Some(" MARIA ".into()),
                cpf: Some(serde_json::json!("526.018.159-06")),
            },
        ];
        let found = first_valid(candidates, MAX_FIELD_CHARS).unwrap();
        assert_eq!(found.cpf.as_str(), "52601815906");
        assert_eq!(found.name.as_deref(), Some("MARIA"));
    }

    #[test]
    fn no_valid_candidate_means_nobody() {
        assert!(first_valid(vec![], MAX_FIELD_CHARS).is_none());
        assert!(
            first_valid(
                vec![Candidate {
                    nome: None,
                    cpf: Some(serde_json::json!("123"))
                }],
                MAX_FIELD_CHARS
            )
            .is_none()
        );
    }
}
