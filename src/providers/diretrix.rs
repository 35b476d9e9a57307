//! Diretrix: contact -> CPF, HTTP Basic auth.
//!
//! `GET {base}/Consultas/Pessoa/Telefone/{national number}` and
//! `GET {base}/Consultas/Pessoa/Email/{percent-encoded email}`. A 200 with an empty array, or
//! a 404, means nobody. Several candidates may come back, people (CPF) and companies (CNPJ);
//! all valid ones are kept in order ([`parse_answer`]), and `lookup` answers the first person
//! until the caller chooses by name. Owns this contract only: no caching, no retries.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    Candidate, Candidates, CpfCandidate, CpfLookup, Http, ProviderError, http_client, read_body,
    send_lookup,
};
use crate::domain::text::{MAX_FIELD_CHARS, MAX_LIST_ITEMS, clip, strip_nul};
use crate::domain::{Cnpj, ContactKey, Cpf};

const PROVIDER: &str = "diretrix";

pub struct DiretrixClient {
    http: Http,
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
struct RawCandidate {
    nome: Option<String>,
    cpf: Option<serde_json::Value>,
    /// Not documented, but company entries have been seen carrying their number here.
    cnpj: Option<serde_json::Value>,
}

/// Reads a Diretrix answer body (a JSON array of `{nome, cpf}`) into every valid candidate, in
/// the provider's order: people by CPF, companies by CNPJ (14 digits in `cpf` or `cnpj`; never
/// truncated into a CPF). Entries with neither are dropped; at most
/// [`MAX_LIST_ITEMS`] are kept. NULs are stripped before anything sees the answer. Public so
/// the fuzz target and the property tests reach it with arbitrary bytes.
pub fn parse_answer(body: &[u8]) -> Result<Candidates, ProviderError> {
    parse_answer_with(body, MAX_FIELD_CHARS)
}

/// [`parse_answer`] keeping at most `max_field_chars` of each name.
pub fn parse_answer_with(body: &[u8], max_field_chars: usize) -> Result<Candidates, ProviderError> {
    let unreadable = || ProviderError::Decode {
        provider: PROVIDER,
        detail: "expected a JSON array of {nome, cpf}".into(),
    };
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|_| unreadable())?;
    strip_nul(&mut value);
    let raw: Vec<RawCandidate> = serde_json::from_value(value).map_err(|_| unreadable())?;
    Ok(Candidates::new(
        raw.into_iter()
            .filter_map(|raw| candidate(raw, max_field_chars))
            .take(MAX_LIST_ITEMS)
            .collect(),
    ))
}

/// One entry as a person or a company, or `None` when its number is neither.
fn candidate(raw: RawCandidate, max_field_chars: usize) -> Option<Candidate> {
    let name = raw
        .nome
        .map(|n| clip(n.trim(), max_field_chars).trim_end().to_owned())
        .filter(|n| !n.is_empty());
    match Document::read(raw.cpf.as_ref()).or_else(|| Document::read(raw.cnpj.as_ref()))? {
        Document::Cpf(cpf) => Some(Candidate::Person(CpfCandidate { cpf, name })),
        Document::Cnpj(cnpj) => Some(Candidate::Company { cnpj, name }),
    }
}

enum Document {
    Cpf(Cpf),
    Cnpj(Cnpj),
}

impl Document {
    /// A string is taken as written: 14 digits (or a `/`) is a CNPJ, anything else must be a
    /// CPF. A JSON number has lost its leading zeros: up to 11 digits it is a CPF padded back
    /// ([`Cpf::parse_padded`]), 12 to 14 a CNPJ padded back.
    fn read(value: Option<&serde_json::Value>) -> Option<Document> {
        match value? {
            serde_json::Value::String(s) => {
                let digits = s.chars().filter(char::is_ascii_digit).count();
                if digits == 14 || s.contains('/') {
                    Cnpj::parse(s).ok().map(Document::Cnpj)
                } else {
                    Cpf::parse(s).ok().map(Document::Cpf)
                }
            }
            serde_json::Value::Number(n) => {
                let s = n.to_string();
                if !s.bytes().all(|b| b.is_ascii_digit()) {
                    // Negative, fractional or scientific: digits were lost or never there.
                    return None;
                }
                match s.len() {
                    ..=11 => Cpf::parse_padded(&s).ok().map(Document::Cpf),
                    12..=14 => Cnpj::parse(&format!("{s:0>14}")).ok().map(Document::Cnpj),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

#[async_trait]
impl CpfLookup for DiretrixClient {
    async fn lookup(&self, key: &ContactKey) -> Result<Option<CpfCandidate>, ProviderError> {
        Ok(self.lookup_all(key).await?.first_person().cloned())
    }

    #[tracing::instrument(name = "diretrix.lookup", skip_all, fields(key = %key))]
    async fn lookup_all(&self, key: &ContactKey) -> Result<Candidates, ProviderError> {
        let request = self.http.get(self.url(key)).basic_auth(
            self.user.expose_secret(),
            Some(self.password.expose_secret()),
        );
        let Some(response) = send_lookup(PROVIDER, request).await? else {
            return Ok(Candidates::default());
        };
        let body = read_body(PROVIDER, response, self.max_answer_bytes).await?;
        parse_answer_with(&body, self.max_field_chars)
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

    fn cpfs(list: &Candidates) -> Vec<String> {
        list.iter()
            .map(|c| match c {
                Candidate::Person(p) => format!(
                    "cpf {} {}",
                    p.cpf.as_str(),
                    p.name.as_deref().unwrap_or("-")
                ),
                Candidate::Company { cnpj, name } => {
                    format!("cnpj {} {}", cnpj.as_str(), name.as_deref().unwrap_or("-"))
                }
            })
            .collect()
    }

    #[test]
    fn every_valid_candidate_is_kept_in_order_as_a_person_or_a_company() {
        // (answer body, candidates read, why)
        let table: &[(&str, &[&str], &str)] = &[
            (r#"[]"#, &[], "nobody"),
            (
                r#"[{"nome":"X","cpf":"52601815900"},{"nome":" MARIA ","cpf":"526.018.159-06"}]"#,
                &["cpf 52601815906 MARIA"],
                "bad check digits dropped, name trimmed",
            ),
            (
                r#"[{"nome":"JOAO","cpf":"52601815906"},{"nome":"MARIA","cpf":"11144477735"}]"#,
                &["cpf 52601815906 JOAO", "cpf 11144477735 MARIA"],
                "two people, both kept",
            ),
            (
                r#"[{"nome":"PADARIA LTDA","cpf":"39182746000107"},{"nome":"ANA","cpf":"52601815906"}]"#,
                &["cnpj 39182746000107 PADARIA LTDA", "cpf 52601815906 ANA"],
                "a 14-digit value in cpf is a company, not truncated",
            ),
            (
                r#"[{"nome":"PADARIA LTDA","cpf":"39.182.746/0001-07"}]"#,
                &["cnpj 39182746000107 PADARIA LTDA"],
                "a formatted CNPJ",
            ),
            (
                r#"[{"nome":"PADARIA LTDA","cnpj":"39182746000107"}]"#,
                &["cnpj 39182746000107 PADARIA LTDA"],
                "a cnpj field",
            ),
            (
                r#"[{"nome":"X","cpf":"39182746000108"}]"#,
                &[],
                "14 digits with bad check digits: neither",
            ),
            (
                r#"[{"nome":"ANA","cpf":4567812344}]"#,
                &["cpf 04567812344 ANA"],
                "a number that lost its leading zero",
            ),
            (
                r#"[{"nome":"ANA","cpf":1.23457E+10}]"#,
                &[],
                "scientific notation lost digits",
            ),
            (
                r#"[{"nome":"X","cpf":"12345678909"}]"#,
                &[],
                "a placeholder CPF",
            ),
            (
                r#"[{"nome":"X","cpf":"123"},{"cpf":null}]"#,
                &[],
                "nothing valid",
            ),
            (
                r#"[{"cpf":"52601815906"}]"#,
                &["cpf 52601815906 -"],
                "no name",
            ),
        ];
        for (body, expected, why) in table {
            let got = parse_answer(body.as_bytes()).expect(why);
            assert_eq!(cpfs(&got), *expected, "{why}");
        }
    }

    #[test]
    fn an_answer_that_is_not_a_list_is_a_decode_error_that_does_not_echo_it() {
        for body in [&b"{}"[..], b"not json", b"[{\"cpf\": 52601815906}", b""] {
            match parse_answer(body) {
                Err(ProviderError::Decode { detail, .. }) => assert!(!detail.contains("526")),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_long_list_is_capped() {
        let one = r#"{"nome":"ANA","cpf":"52601815906"}"#;
        let body = format!("[{}]", vec![one; MAX_LIST_ITEMS + 5].join(","));
        assert_eq!(parse_answer(body.as_bytes()).unwrap().len(), MAX_LIST_ITEMS);
    }
}
