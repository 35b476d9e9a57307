//! The normalized person: everything the enrichment message is rendered from, stored as JSON
//! in the database and packed in memory.
//!
//! This module owns the shape of a person once it is ours: plain, trimmed values, a [`Cpf`]
//! that is valid by construction. Reading a provider's answer into it belongs to that
//! provider's adapter (`providers::work_api::answer`). It must not format for display (the
//! message module does that), talk to the network, or let personal data reach a log: `Debug`
//! is masked on every type here.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Cpf;

/// One person as learned from the Work API. Every field except the CPF may be absent because
/// the provider omits whatever it does not know.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// The CPF; stored as its 11 plain digits, read back through `Cpf::parse`.
    pub cpf: Cpf,
    /// Full name as the provider spells it (usually upper case).
    #[serde(default)]
    pub name: Option<String>,
    /// Birth date as given, "dd/mm/yyyy".
    #[serde(default)]
    pub birth_date: Option<String>,
    /// "Feminino" / "Masculino", normalized from "F - FEMININO".
    #[serde(default)]
    pub sex: Option<String>,
    /// Mother's full name.
    #[serde(default)]
    pub mother_name: Option<String>,
    /// Declared or estimated income as given, e.g. "8500,50".
    #[serde(default)]
    pub income: Option<String>,
    /// `poderAquisitivoDescricao`, e.g. "MEDIO ALTO".
    #[serde(default)]
    pub purchasing_power: Option<String>,
    /// `faixaPoderAquisitivo`, e.g. "De R$ 7018 até R$ 15000".
    #[serde(default)]
    pub income_band: Option<String>,
    /// `scoreCSBA`, or `scoreCSB` when the former is missing.
    #[serde(default)]
    pub credit_score: Option<String>,
    /// `scoreCSBAFaixaRisco`, or `scoreCSBFaixaRisco` when the former is missing.
    #[serde(default)]
    pub risk: Option<String>,
    /// Emails in the provider's order.
    #[serde(default)]
    pub emails: Vec<PersonEmail>,
    /// Phones in the provider's order.
    #[serde(default)]
    pub phones: Vec<PersonPhone>,
    /// Addresses in the provider's order.
    #[serde(default)]
    pub addresses: Vec<PersonAddress>,
    /// Companies the person is related to, in the provider's order.
    #[serde(default)]
    pub companies: Vec<PersonCompany>,
}

/// One email of a person.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonEmail {
    /// The address as given.
    pub address: String,
    /// The provider's ranking, "1" being the most likely to be current.
    #[serde(default)]
    pub priority: Option<String>,
}

/// One phone of a person.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonPhone {
    /// National digits, area code included: "11987654321".
    pub number: String,
    /// The provider's line type, e.g. "CELULAR" or "FIXO".
    #[serde(default)]
    pub kind: Option<String>,
    /// Whether the provider saw a WhatsApp account on this number.
    #[serde(default)]
    pub whatsapp: bool,
}

/// One postal address of a person.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonAddress {
    /// Street type and name joined: "RUA DAS FLORES".
    #[serde(default)]
    pub street: Option<String>,
    /// House number as given (may hold "S/N").
    #[serde(default)]
    pub number: Option<String>,
    /// Complement, e.g. "AP 52".
    #[serde(default)]
    pub complement: Option<String>,
    /// District (bairro).
    #[serde(default)]
    pub district: Option<String>,
    /// City.
    #[serde(default)]
    pub city: Option<String>,
    /// State, two letters.
    #[serde(default)]
    pub uf: Option<String>,
    /// Postal code, digits only.
    #[serde(default)]
    pub cep: Option<String>,
}

/// A company the person is related to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonCompany {
    /// CNPJ digits.
    pub cnpj: String,
    /// The relation, e.g. "SOCIO-ADMINISTRADOR".
    #[serde(default)]
    pub relation: Option<String>,
}

// Debug impls are written by hand: these values are personal data and a derived Debug would
// print them into any log line that formats a Person or an error holding one.
impl fmt::Debug for Person {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Person")
            .field("cpf", &"***")
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PersonEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonEmail")
            .field("address", &"***")
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PersonPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonPhone")
            .field("number", &"***")
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PersonAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonAddress").finish_non_exhaustive()
    }
}

impl fmt::Debug for PersonCompany {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonCompany")
            .field("cnpj", &"***")
            .finish_non_exhaustive()
    }
}

impl Person {
    /// A person of whom nothing but the CPF is known yet.
    pub fn with_cpf(cpf: Cpf) -> Person {
        Person {
            cpf,
            name: None,
            birth_date: None,
            sex: None,
            mother_name: None,
            income: None,
            purchasing_power: None,
            income_band: None,
            credit_score: None,
            risk: None,
            emails: Vec::new(),
            phones: Vec::new(),
            addresses: Vec::new(),
            companies: Vec::new(),
        }
    }

    /// A made-up person with every field set (synthetic data, valid check digits): what an
    /// operator's template is rendered against at startup, and the person the Work API
    /// fixture `tests/fixtures/work_api_person.json` reads into.
    pub fn sample() -> Person {
        Person {
            cpf: Cpf::from_base([5, 2, 6, 0, 1, 8, 1, 5, 9]),
            name: Some("MARIA APARECIDA SOUZA".into()),
            birth_date: Some("14/03/1984".into()),
            sex: Some("Feminino".into()),
            mother_name: Some("ANA LUCIA SOUZA".into()),
            income: Some("8500,50".into()),
            purchasing_power: Some("MEDIO ALTO".into()),
            income_band: Some("De R$ 7018 até R$ 15000".into()),
            credit_score: Some("688".into()),
            risk: Some("BAIXO".into()),
            emails: vec![
                PersonEmail {
                    address: "maria.souza@example.com".into(),
                    priority: Some("1".into()),
                },
                PersonEmail {
                    address: "msouza84@example.org".into(),
                    priority: Some("2".into()),
                },
            ],
            phones: vec![
                PersonPhone {
                    number: "11987654321".into(),
                    kind: Some("CELULAR".into()),
                    whatsapp: true,
                },
                PersonPhone {
                    number: "1138001234".into(),
                    kind: Some("FIXO".into()),
                    whatsapp: false,
                },
            ],
            addresses: vec![PersonAddress {
                street: Some("RUA DAS FLORES".into()),
                number: Some("120".into()),
                complement: Some("AP 52".into()),
                district: Some("MOEMA".into()),
                city: Some("SAO PAULO".into()),
                uf: Some("SP".into()),
                cep: Some("04077000".into()),
            }],
            companies: vec![PersonCompany {
                cnpj: "11222333000181".into(),
                relation: Some("SOCIO-ADMINISTRADOR".into()),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_cpf_is_the_fixture_cpf() {
        assert_eq!(Person::sample().cpf.as_str(), "52601815906");
    }

    #[test]
    fn debug_output_hides_personal_data() {
        let person = Person::sample();
        let printed = format!("{person:?}");
        assert!(
            printed.contains(r#"Person { cpf: "***", .. }"#),
            "{printed}"
        );
        for secret in ["52601815906", "MARIA", "example.com", "11987654321"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        let parts = format!(
            "{:?} {:?} {:?} {:?}",
            person.emails, person.phones, person.addresses, person.companies
        );
        for secret in ["example.com", "11987654321", "FLORES", "11222333000181"] {
            assert!(!parts.contains(secret), "{parts}");
        }
    }

    #[test]
    fn a_person_round_trips_through_its_stored_json() {
        let person = Person::sample();
        let stored = serde_json::to_string(&person).unwrap();
        assert!(stored.starts_with(r#"{"cpf":"52601815906","#), "{stored}");
        let back: Person = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, person);
    }

    #[test]
    fn stored_json_missing_optional_fields_still_loads() {
        let back: Person = serde_json::from_str(r#"{"cpf": "52601815906"}"#).unwrap();
        assert_eq!(back.cpf.as_str(), "52601815906");
        assert!(back.emails.is_empty());
    }

    #[test]
    fn stored_json_with_a_cpf_that_is_no_cpf_does_not_load() {
        for cpf in ["52601815900", "11111111111", "5260181590"] {
            let stored = format!(r#"{{"cpf": "{cpf}"}}"#);
            assert!(serde_json::from_str::<Person>(&stored).is_err(), "{cpf}");
        }
    }
}
