//! The Work API's answer contract: a 200 body read into a [`WorkApiAnswer`].
//!
//! This module owns the translation from the provider's quirky shape (missing, null, empty or
//! numeric fields; "SIM"/"S"/true flags; a CPF sent as a number that lost its leading zeros)
//! into the plain, trimmed values of a domain [`Person`]. It must not format for display (the
//! message module does that), talk to the network (the adapter in `mod.rs` does), or let
//! personal data reach a log: errors name the problem, never quote the body.

use serde_json::{Map, Value};

use crate::domain::Cpf;
use crate::domain::person::{Person, PersonAddress, PersonCompany, PersonEmail, PersonPhone};
use crate::domain::text::{TextLimits, clip};

/// Length of a CPF in digits.
const CPF_LEN: usize = 11;

/// What a Work API 200 body says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "built once per paid lookup and moved straight to the caller; a Box buys nothing"
)]
pub enum WorkApiAnswer {
    /// The provider knows this CPF.
    Found(Person),
    /// The provider answered `{"status": 404, ...}`: a negative result, never an enrichment.
    NotFound,
}

/// Why a Work API body could not be read. Messages name the problem, never the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The body is not a JSON object.
    #[error("the Work API body is not a JSON object")]
    NotAnObject,
    /// A status other than 200 or 404 (the status code is not personal data).
    #[error("the Work API body carries unexpected status {0}")]
    UnexpectedStatus(i64),
    /// A status that is not a number at all.
    #[error("the Work API body carries a non-numeric status")]
    InvalidStatus,
    /// No `DadosBasicos.cpf`: without it the answer cannot be tied to anyone.
    #[error("the Work API body has no DadosBasicos.cpf")]
    MissingCpf,
    /// `DadosBasicos.cpf` holds no digits or more than 11 of them.
    #[error("the Work API body has a CPF with {digits} digits, expected 11")]
    InvalidCpf {
        /// How many digits it held.
        digits: usize,
    },
    /// `DadosBasicos.cpf` has 11 digits (after padding) that are no CPF: wrong check digits
    /// or the all-same filler. The adapter reports it as a mismatch, like an answer about
    /// someone else, since it cannot be about the CPF asked for.
    #[error("the Work API body has a CPF that is not valid")]
    NotACpf,
}

impl WorkApiAnswer {
    /// Reads a Work API 200 body. `{"status":404,...}` (status as number or string) -> NotFound, never a Person.
    /// A body without DadosBasicos.cpf, or other statuses, -> Err.
    pub fn parse(body: &Value) -> Result<WorkApiAnswer, AnswerError> {
        Self::parse_with(body, TextLimits::default())
    }

    /// [`WorkApiAnswer::parse`] keeping at most what `limits` allow of each field and list.
    pub fn parse_with(body: &Value, limits: TextLimits) -> Result<WorkApiAnswer, AnswerError> {
        let l = &limits;
        let root = body.as_object().ok_or(AnswerError::NotAnObject)?;

        // The provider reports "not found" inside a 200, so the status field decides first;
        // a missing status is how some success bodies look.
        match root.get("status").map(status_code).transpose()? {
            None | Some(200) => {}
            Some(404) => return Ok(WorkApiAnswer::NotFound),
            Some(other) => return Err(AnswerError::UnexpectedStatus(other)),
        }

        let basic = object(root, "DadosBasicos");
        let cpf = basic
            // The CPF is an identifier, not free text: never cut by the field cap.
            .and_then(|b| text(&TextLimits::default(), b.get("cpf")))
            .ok_or(AnswerError::MissingCpf)?;
        let cpf = normalize_cpf(&cpf)?;

        let economic = object(root, "DadosEconomicos");
        let power = economic.and_then(|e| object(e, "poderAquisitivo"));
        let score = economic.and_then(|e| object(e, "score"));

        Ok(WorkApiAnswer::Found(Person {
            cpf,
            name: field(l, basic, "nome"),
            birth_date: field(l, basic, "dataNascimento"),
            sex: field(l, basic, "sexo").and_then(|s| normalize_sex(&s)),
            mother_name: field(l, basic, "nomeMae"),
            income: field(l, economic, "renda"),
            purchasing_power: field(l, power, "poderAquisitivoDescricao"),
            income_band: field(l, power, "faixaPoderAquisitivo"),
            credit_score: field(l, score, "scoreCSBA").or_else(|| field(l, score, "scoreCSB")),
            risk: field(l, score, "scoreCSBAFaixaRisco")
                .or_else(|| field(l, score, "scoreCSBFaixaRisco")),
            emails: items(l, root, "emails")
                .filter_map(|i| parse_email(l, i))
                .collect(),
            phones: items(l, root, "telefones")
                .filter_map(|i| parse_phone(l, i))
                .collect(),
            addresses: items(l, root, "enderecos")
                .filter_map(|i| parse_address(l, i))
                .collect(),
            companies: items(l, root, "empresas")
                .filter_map(|i| parse_company(l, i))
                .collect(),
        }))
    }
}

/// The status as a number; the provider sends both `404` and `"404"`.
fn status_code(value: &Value) -> Result<i64, AnswerError> {
    match value {
        Value::Number(n) => n.as_i64().ok_or(AnswerError::InvalidStatus),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| AnswerError::InvalidStatus),
        _ => Err(AnswerError::InvalidStatus),
    }
}

/// The CPF from its digits, left-padded when the provider sent it as a number and lost
/// leading zeros.
fn normalize_cpf(raw: &str) -> Result<Cpf, AnswerError> {
    let digits = digits_of(raw);
    if digits.is_empty() || digits.len() > CPF_LEN {
        return Err(AnswerError::InvalidCpf {
            digits: digits.len(),
        });
    }
    Cpf::parse(&format!("{digits:0>CPF_LEN$}")).map_err(|_| AnswerError::NotACpf)
}

/// "F - FEMININO" -> "Feminino"; a bare "F"/"M" is expanded; anything else is capitalized.
fn normalize_sex(raw: &str) -> Option<String> {
    let word = raw.rsplit('-').next().unwrap_or(raw).trim();
    match word.to_uppercase().as_str() {
        "" => None,
        "F" => Some("Feminino".to_owned()),
        "M" => Some("Masculino".to_owned()),
        _ => Some(capitalize(word)),
    }
}

fn capitalize(word: &str) -> String {
    let lower = word.to_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn parse_email(l: &TextLimits, item: &Value) -> Option<PersonEmail> {
    // Some answers list bare strings instead of objects; both carry the address.
    if let Some(address) = text(l, Some(item)) {
        return Some(PersonEmail {
            address,
            priority: None,
        });
    }
    let obj = item.as_object()?;
    Some(PersonEmail {
        address: text(l, obj.get("email"))?,
        priority: text(l, obj.get("prioridade")),
    })
}

fn parse_phone(l: &TextLimits, item: &Value) -> Option<PersonPhone> {
    if let Some(raw) = text(l, Some(item)) {
        return non_empty(digits_of(&raw)).map(|number| PersonPhone {
            number,
            kind: None,
            whatsapp: false,
        });
    }
    let obj = item.as_object()?;
    Some(PersonPhone {
        number: non_empty(digits_of(&text(l, obj.get("telefone"))?))?,
        kind: text(l, obj.get("tipo")),
        whatsapp: obj.get("whatsapp").is_some_and(is_yes),
    })
}

fn parse_address(l: &TextLimits, item: &Value) -> Option<PersonAddress> {
    let obj = item.as_object()?;
    let address = PersonAddress {
        street: street(
            text(l, obj.get("tipoLogradouro")),
            text(l, obj.get("logradouro")),
        ),
        number: text(l, obj.get("logradouroNumero")).or_else(|| text(l, obj.get("numero"))),
        complement: text(l, obj.get("complemento")),
        district: text(l, obj.get("bairro")),
        city: text(l, obj.get("cidade")),
        uf: text(l, obj.get("uf")),
        cep: text(l, obj.get("cep")).and_then(|c| non_empty(digits_of(&c))),
    };
    // An entry with nothing in it would only render as an empty line.
    (address != PersonAddress::default()).then_some(address)
}

/// "RUA" + "DAS FLORES" -> "RUA DAS FLORES", without doubling a type the name already has.
fn street(kind: Option<String>, name: Option<String>) -> Option<String> {
    match (kind, name) {
        (Some(kind), Some(name)) => {
            let already_typed = name
                .to_uppercase()
                .strip_prefix(&kind.to_uppercase())
                .is_some_and(|rest| rest.starts_with(' '));
            Some(if already_typed {
                name
            } else {
                format!("{kind} {name}")
            })
        }
        (None, name) => name,
        // A type without a name ("RUA") says nothing about where the person lives.
        (Some(_), None) => None,
    }
}

fn parse_company(l: &TextLimits, item: &Value) -> Option<PersonCompany> {
    let obj = item.as_object()?;
    Some(PersonCompany {
        cnpj: non_empty(digits_of(&text(l, obj.get("cnpj"))?))?,
        relation: text(l, obj.get("relacao")).or_else(|| text(l, obj.get("tipoRelacao"))),
    })
}

/// The provider's "yes": "SIM", "S", true (and, defensively, 1 / "TRUE").
fn is_yes(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64() == Some(1),
        Value::String(s) => matches!(s.trim().to_uppercase().as_str(), "SIM" | "S" | "TRUE" | "1"),
        _ => false,
    }
}

/// A sub-object, or None when missing or of another type.
fn object<'a>(parent: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    parent.get(key).and_then(Value::as_object)
}

/// A text field of an optional object.
fn field(l: &TextLimits, parent: Option<&Map<String, Value>>, key: &str) -> Option<String> {
    parent.and_then(|p| text(l, p.get(key)))
}

/// The entries of an array field; a missing or non-array field is simply empty.
fn items<'a>(
    l: &TextLimits,
    parent: &'a Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a Value> {
    parent
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(l.max_list_items)
}

/// A trimmed string, a number rendered as text, or None for null/empty/other shapes.
fn text(l: &TextLimits, value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => {
            let trimmed = clip(s.trim(), l.max_field_chars).trim_end();
            (!trimmed.is_empty()).then(|| trimmed.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn digits_of(raw: &str) -> String {
    raw.chars().filter(char::is_ascii_digit).collect()
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::text::{MAX_FIELD_CHARS, MAX_LIST_ITEMS};
    use serde_json::json;

    const PERSON_FIXTURE: &str = include_str!("../../../tests/fixtures/work_api_person.json");
    const NOT_FOUND_FIXTURE: &str = include_str!("../../../tests/fixtures/work_api_not_found.json");

    fn parse(body: Value) -> Result<WorkApiAnswer, AnswerError> {
        WorkApiAnswer::parse(&body)
    }

    fn found(body: Value) -> Person {
        match parse(body) {
            Ok(WorkApiAnswer::Found(person)) => person,
            other => panic!("expected a person, got {other:?}"),
        }
    }

    #[test]
    fn huge_fields_and_lists_are_capped_before_anything_keeps_them() {
        let phones: Vec<Value> = (0..1000).map(|i| json!(format!("1199999{i:04}"))).collect();
        let body = json!({
            "DadosBasicos": {"cpf": "52601815906", "nome": "A".repeat(100_000)},
            "telefones": phones,
        });
        let person = found(body);
        assert_eq!(
            person.name.as_deref().map(|n| n.chars().count()),
            Some(MAX_FIELD_CHARS)
        );
        assert_eq!(person.phones.len(), MAX_LIST_ITEMS);

        let limits = TextLimits {
            max_field_chars: 5,
            max_list_items: 2,
        };
        let body = json!({
            "DadosBasicos": {"cpf": "52601815906", "nome": "MARIA APARECIDA"},
            "telefones": ["11999990001", "11999990002", "11999990003"],
            "enderecos": [{"logradouro": "RUA DAS FLORES", "cidade": "SAO PAULO"}],
        });
        match WorkApiAnswer::parse_with(&body, limits).unwrap() {
            WorkApiAnswer::Found(person) => {
                assert_eq!(person.name.as_deref(), Some("MARIA"));
                assert_eq!(person.phones.len(), 2);
                assert_eq!(person.addresses[0].city.as_deref(), Some("SAO P"));
            }
            other => panic!("expected a person, got {other:?}"),
        }
    }

    #[test]
    fn the_work_api_fixture_parses_to_the_expected_person() {
        let body: Value = serde_json::from_str(PERSON_FIXTURE).unwrap();
        assert_eq!(found(body), Person::sample());
    }

    #[test]
    fn the_not_found_fixture_is_not_found() {
        let body: Value = serde_json::from_str(NOT_FOUND_FIXTURE).unwrap();
        assert_eq!(parse(body), Ok(WorkApiAnswer::NotFound));
    }

    #[test]
    fn a_404_status_as_a_string_is_not_found() {
        let body = json!({"status": "404", "reason": "Document not found."});
        assert_eq!(parse(body), Ok(WorkApiAnswer::NotFound));
    }

    #[test]
    fn a_404_status_wins_even_when_the_body_has_person_data() {
        let body = json!({"status": 404, "DadosBasicos": {"cpf": "52601815906"}});
        assert_eq!(parse(body), Ok(WorkApiAnswer::NotFound));
    }

    #[test]
    fn garbage_bodies_are_errors() {
        let cases = [
            (json!("not an object"), AnswerError::NotAnObject, "string"),
            (json!([1, 2]), AnswerError::NotAnObject, "array"),
            (json!(null), AnswerError::NotAnObject, "null"),
            (json!({}), AnswerError::MissingCpf, "empty object"),
            (
                json!({"status": 200, "DadosBasicos": {"nome": "X"}}),
                AnswerError::MissingCpf,
                "no cpf",
            ),
            (
                json!({"DadosBasicos": {"cpf": "  "}}),
                AnswerError::MissingCpf,
                "blank cpf",
            ),
            (
                json!({"DadosBasicos": {"cpf": "526.018.159-061"}}),
                AnswerError::InvalidCpf { digits: 12 },
                "too many digits",
            ),
            (
                json!({"DadosBasicos": {"cpf": "abc"}}),
                AnswerError::InvalidCpf { digits: 0 },
                "no digits",
            ),
            (
                json!({"status": 500, "DadosBasicos": {"cpf": "52601815906"}}),
                AnswerError::UnexpectedStatus(500),
                "status 500",
            ),
            (
                json!({"status": "erro"}),
                AnswerError::InvalidStatus,
                "non-numeric status",
            ),
            (
                json!({"status": true}),
                AnswerError::InvalidStatus,
                "boolean status",
            ),
        ];
        for (body, expected, case) in cases {
            assert_eq!(parse(body), Err(expected), "case: {case}");
        }
    }

    #[test]
    fn a_success_body_with_status_as_a_string_parses() {
        let person = found(json!({"status": "200", "DadosBasicos": {"cpf": "52601815906"}}));
        assert_eq!(person.cpf.as_str(), "52601815906");
    }

    #[test]
    fn a_numeric_cpf_gets_its_leading_zeros_back() {
        let person = found(json!({"DadosBasicos": {"cpf": 5278034130u64}}));
        assert_eq!(person.cpf.as_str(), "05278034130");
    }

    #[test]
    fn a_punctuated_cpf_is_reduced_to_digits() {
        let person = found(json!({"DadosBasicos": {"cpf": "526.018.159-06"}}));
        assert_eq!(person.cpf.as_str(), "52601815906");
    }

    #[test]
    fn a_minimal_body_gives_a_person_with_only_a_cpf() {
        let person = found(json!({"DadosBasicos": {"cpf": "52601815906"}}));
        assert_eq!(person, Person::with_cpf(Cpf::parse("52601815906").unwrap()));
    }

    #[test]
    fn empty_null_and_wrongly_typed_fields_are_absent() {
        let person = found(json!({
            "DadosBasicos": {"cpf": "52601815906", "nome": "   ", "dataNascimento": null,
                             "sexo": "", "nomeMae": {"x": 1}},
            "DadosEconomicos": {"renda": "", "poderAquisitivo": null, "score": "n/a"},
            "emails": null,
            "telefones": "none",
            "enderecos": [{"logradouro": "", "cep": ""}, null, 3],
            "empresas": [{"cnpj": ""}, {"relacao": "SOCIO"}]
        }));
        assert_eq!(person.name, None);
        assert_eq!(person.birth_date, None);
        assert_eq!(person.sex, None);
        assert_eq!(person.mother_name, None);
        assert_eq!(person.income, None);
        assert_eq!(person.purchasing_power, None);
        assert_eq!(person.credit_score, None);
        assert!(person.emails.is_empty());
        assert!(person.phones.is_empty());
        assert!(person.addresses.is_empty());
        assert!(person.companies.is_empty());
    }

    #[test]
    fn numbers_are_accepted_where_strings_are_expected() {
        let person = found(json!({
            "DadosBasicos": {"cpf": "52601815906"},
            "DadosEconomicos": {"renda": 8500.5, "score": {"scoreCSBA": 688}},
            "emails": [{"email": "a@example.com", "prioridade": 1}],
            "telefones": [{"telefone": 11987654321_u64, "tipo": "CELULAR"}],
            "enderecos": [{"logradouroNumero": 120, "cep": 4077000}],
            "empresas": [{"cnpj": 11222333000181_u64}]
        }));
        assert_eq!(person.income.as_deref(), Some("8500.5"));
        assert_eq!(person.credit_score.as_deref(), Some("688"));
        assert_eq!(person.emails[0].priority.as_deref(), Some("1"));
        assert_eq!(person.phones[0].number, "11987654321");
        assert_eq!(person.addresses[0].number.as_deref(), Some("120"));
        assert_eq!(person.addresses[0].cep.as_deref(), Some("4077000"));
        assert_eq!(person.companies[0].cnpj, "11222333000181");
    }

    #[test]
    fn the_csb_score_is_the_fallback_for_the_csba_score() {
        let person = found(json!({
            "DadosBasicos": {"cpf": "52601815906"},
            "DadosEconomicos": {"score": {"scoreCSB": "712", "scoreCSBFaixaRisco": "MEDIO",
                                          "scoreCSBA": "", "scoreCSBAFaixaRisco": null}}
        }));
        assert_eq!(person.credit_score.as_deref(), Some("712"));
        assert_eq!(person.risk.as_deref(), Some("MEDIO"));
    }

    #[test]
    fn whatsapp_flags_read_as_yes_or_no() {
        let cases = [
            (json!("SIM"), true),
            (json!("sim"), true),
            (json!("S"), true),
            (json!(true), true),
            (json!("NAO"), false),
            (json!("N"), false),
            (json!(null), false),
            (json!(false), false),
            (json!(""), false),
        ];
        for (flag, expected) in cases {
            let person = found(json!({
                "DadosBasicos": {"cpf": "52601815906"},
                "telefones": [{"telefone": "11987654321", "whatsapp": flag}]
            }));
            assert_eq!(person.phones[0].whatsapp, expected, "flag: {flag}");
        }
    }

    #[test]
    fn sex_is_normalized_to_a_capitalized_word() {
        let cases = [
            ("F - FEMININO", Some("Feminino")),
            ("M - MASCULINO", Some("Masculino")),
            ("F", Some("Feminino")),
            ("m", Some("Masculino")),
            ("FEMININO", Some("Feminino")),
            (" - ", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_sex(raw).as_deref(), expected, "raw: {raw}");
        }
    }

    #[test]
    fn the_street_type_is_not_doubled() {
        let person = found(json!({
            "DadosBasicos": {"cpf": "52601815906"},
            "enderecos": [
                {"tipoLogradouro": "RUA", "logradouro": "RUA DAS FLORES"},
                {"tipoLogradouro": "AV", "logradouro": "AVENIDA PAULISTA"},
                {"logradouro": "DAS ROSAS"},
                {"tipoLogradouro": "RUA", "cidade": "SAO PAULO"}
            ]
        }));
        let streets: Vec<_> = person
            .addresses
            .iter()
            .map(|a| a.street.as_deref())
            .collect();
        assert_eq!(
            streets,
            [
                Some("RUA DAS FLORES"),
                Some("AV AVENIDA PAULISTA"),
                Some("DAS ROSAS"),
                None
            ]
        );
    }

    #[test]
    fn debug_of_an_answer_hides_personal_data() {
        let body: Value = serde_json::from_str(PERSON_FIXTURE).unwrap();
        let printed = format!("{:?}", parse(body).unwrap());
        assert_eq!(printed, r#"Found(Person { cpf: "***", .. })"#);
    }

    #[test]
    fn a_cpf_with_wrong_check_digits_or_all_the_same_digit_is_not_a_cpf() {
        for cpf in [
            json!("52601815900"),
            json!("111.111.111-11"),
            json!(1234567891),
        ] {
            let body = json!({"DadosBasicos": {"cpf": cpf, "nome": "MARIA"}});
            let err = parse(body).unwrap_err();
            assert_eq!(err, AnswerError::NotACpf, "{cpf}");
            assert!(!err.to_string().contains("526"), "{err}");
        }
    }

    #[test]
    fn error_messages_carry_no_personal_data() {
        let err =
            parse(json!({"DadosBasicos": {"cpf": "526018159061", "nome": "MARIA"}})).unwrap_err();
        let message = err.to_string();
        assert_eq!(
            message,
            "the Work API body has a CPF with 12 digits, expected 11"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_work_api_body_parses_or_fails_without_panicking_and_stays_bounded(
            body in crate::domain::text::any_json()
        ) {
            if let Ok(WorkApiAnswer::Found(p)) = WorkApiAnswer::parse(&body) {
                proptest::prop_assert_eq!(p.cpf.as_str().len(), CPF_LEN);
                proptest::prop_assert!(p.phones.len() <= MAX_LIST_ITEMS);
                proptest::prop_assert!(
                    p.name.iter().all(|n| n.chars().count() <= MAX_FIELD_CHARS)
                );
            }
        }
    }
}
