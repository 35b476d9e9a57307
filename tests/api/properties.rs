//! Hostile input, kept covered: every parser of outside data (phone, e-mail, CPF, lead id,
//! contact keys, the webhook's dates, the C2S webhook body, the Diretrix and Work API answers)
//! fed arbitrary strings, arbitrary JSON and mutations of the real fixtures. None may panic;
//! where a value has a canonical form, formatting it and parsing it again gives the same value.
//! The `fuzz/` directory holds one `cargo fuzz` target per parser for longer runs.

use std::sync::OnceLock;
use std::time::Duration;

use enricher::domain::contact_key::ContactKind;
use enricher::domain::{Candidate, Cnpj, ContactKey, Cpf, Email, LeadId, Phone};
use enricher::event::LeadEvent;
use enricher::intake::c2s::{C2sEvent, parse_body, parse_updated_at};
use enricher::providers::diretrix::{DiretrixClient, parse_answer};
use enricher::providers::work_api::WorkApiAnswer;
use enricher::providers::work_api::WorkApiClient;
use enricher::providers::{CpfLookup, PersonData, ProviderError};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use wiremock::matchers;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::fixture;

/// Any JSON value: scalars (with hostile strings) nested up to four levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((hostile_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Strings a careless sender or an attacker sends: any Unicode, digits with punctuation,
/// control and bidi characters, very long runs, and look-alikes of the real formats.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9 ()+.\\-/]{0,40}",
        "[0-9]{0,30}",
        "[a-zA-Z0-9._%+\\-@\u{0}\u{1b}\u{202e}\u{fe0f}😀ção]{0,40}",
        "\\PC{0,16}@\\PC{0,16}\\.\\PC{0,6}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z| [+-][0-9]{4}|[+-][0-9]{2}:[0-9]{2})?",
        (1usize..5_000).prop_map(|n| "9".repeat(n)),
    ]
}

/// A fixture with one spot changed: a key removed, or a value (at any depth) replaced by
/// any JSON, or a string value truncated or padded.
fn mutated(fixture: Value) -> impl Strategy<Value = Value> {
    (
        any::<prop::sample::Index>(),
        0u8..3,
        any_json(),
        hostile_string(),
    )
        .prop_map(move |(at, how, replacement, text)| {
            let mut doc = fixture.clone();
            let mut paths = Vec::new();
            collect_paths(&doc, String::new(), &mut paths);
            let path = at.get(&paths).clone();
            if let Some(slot) = doc.pointer_mut(&path) {
                match how {
                    0 => *slot = replacement,
                    1 => *slot = Value::String(text),
                    _ => {
                        if let Value::String(s) = slot {
                            let cut: String = s.chars().take(s.chars().count() / 2).collect();
                            *s = cut + &text;
                        } else {
                            *slot = Value::Null;
                        }
                    }
                }
            }
            // Removing a key: replace its parent object without it.
            if how == 0 && path.matches('/').count() > 1 {
                let (parent, key) = path.rsplit_once('/').unwrap();
                if let Some(Value::Object(map)) = doc.pointer_mut(parent) {
                    map.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
            }
            doc
        })
}

/// JSON pointers of every value in a document, the root included.
fn collect_paths(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                collect_paths(v, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_paths(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_phone_never_panics_and_its_every_printed_form_parses_back_to_itself(raw in hostile_string()) {
        if let Ok(phone) = Phone::parse(&raw) {
            prop_assert_eq!(&Phone::parse(phone.e164()).unwrap(), &phone);
            prop_assert_eq!(&Phone::parse(&phone.formatted()).unwrap(), &phone);
            prop_assert_eq!(&Phone::parse(&phone.national()).unwrap(), &phone);
            prop_assert!(!phone.masked().contains(phone.e164()));
        }
    }

    #[test]
    fn an_email_never_panics_and_its_canonical_form_parses_back_to_itself(raw in hostile_string()) {
        if let Ok(email) = Email::parse(&raw) {
            prop_assert_eq!(&Email::parse(email.as_str()).unwrap(), &email);
            prop_assert!(!email.as_str().chars().any(char::is_control));
        }
    }

    #[test]
    fn a_cpf_never_panics_and_both_printed_forms_parse_back_to_itself(raw in hostile_string()) {
        if let Ok(cpf) = Cpf::parse(&raw) {
            prop_assert_eq!(&Cpf::parse(cpf.as_str()).unwrap(), &cpf);
            prop_assert_eq!(&Cpf::parse(&cpf.formatted()).unwrap(), &cpf);
            prop_assert_eq!(cpf.as_str().len(), 11);
        }
    }

    #[test]
    fn a_lead_id_never_panics_and_parses_back_to_itself(raw in hostile_string()) {
        if let Ok(id) = LeadId::parse(&raw) {
            prop_assert_eq!(&LeadId::parse(id.as_str()).unwrap(), &id);
            prop_assert!(!id.as_str().chars().any(char::is_control));
        }
    }

    #[test]
    fn a_contact_key_never_panics_and_its_stored_value_gives_the_same_key(
        raw in hostile_string(),
        phone in any::<bool>(),
    ) {
        let kind = if phone { ContactKind::Phone } else { ContactKind::Email };
        if let Ok(key) = ContactKey::from_parts(kind, &raw) {
            prop_assert_eq!(&ContactKey::from_parts(key.kind(), key.value()).unwrap(), &key);
        }
    }

    #[test]
    fn a_webhook_date_never_panics_and_rfc3339_of_the_instant_parses_back_to_it(raw in hostile_string()) {
        if let Some(at) = parse_updated_at(&raw) {
            let printed = at.format(&time::format_description::well_known::Rfc3339).unwrap();
            prop_assert_eq!(parse_updated_at(&printed), Some(at));
            prop_assert_eq!(at.offset(), time::UtcOffset::UTC);
        }
    }

    #[test]
    fn any_instant_printed_in_each_webhook_format_parses_back_to_the_same_microsecond(
        secs in 0i64..4_102_444_800,
        nanos in 0u32..1_000_000_000,
        offset_minutes in -(14 * 60i32)..=(14 * 60),
    ) {
        let at = OffsetDateTime::from_unix_timestamp(secs).unwrap()
            .replace_nanosecond(nanos / 1_000 * 1_000).unwrap();
        let offset = time::UtcOffset::from_whole_seconds(offset_minutes * 60).unwrap();
        let local = at.to_offset(offset);
        let frac = format!("{:06}", local.microsecond());
        let (h, m) = (offset_minutes.abs() / 60, offset_minutes.abs() % 60);
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let date = local.date();
        let clock = format!("{:02}:{:02}:{:02}.{frac}", local.hour(), local.minute(), local.second());
        let utc = at.to_offset(time::UtcOffset::UTC);
        let utc_clock = format!("{:02}:{:02}:{:02}.{:06}", utc.hour(), utc.minute(), utc.second(), utc.microsecond());
        for printed in [
            format!("{date}T{clock}{sign}{h:02}:{m:02}"),
            format!("{date} {clock} {sign}{h:02}{m:02}"),
            format!("{}T{utc_clock}", utc.date()),
            format!("{} {utc_clock}", utc.date()),
        ] {
            prop_assert_eq!(parse_updated_at(&printed), Some(at), "{}", printed);
        }
    }

    #[test]
    fn any_json_body_is_answered_without_panicking(body in any_json()) {
        let _ = parse_body(&body);
        let _ = C2sEvent::from_payload(&body, "");
    }

    #[test]
    fn a_mutated_c2s_webhook_never_panics_and_what_it_accepts_parses_again_the_same(
        body in prop_oneof![
            mutated(fixture("c2s_webhook_create.json")),
            mutated(fixture("c2s_webhook_batch.json")),
        ]
    ) {
        if let Ok(events) = parse_body(&body) {
            for event in events {
                // The worker reads the stored lead event: it must read back as what intake
                // built, and mean what the raw payload kept beside it says.
                let stored = LeadEvent::from_stored(&event.event.to_stored()).unwrap();
                prop_assert_eq!(&stored, &event.event);
                let again = LeadEvent::from(C2sEvent::from_payload(&event.payload, "").unwrap());
                prop_assert_eq!(&again, &event.event);
            }
        }
    }

    #[test]
    fn a_generated_valid_webhook_is_accepted_with_its_identity(
        id in "[a-zA-Z0-9_-]{1,40}",
        secs in 0i64..4_102_444_800,
        phone in hostile_string(),
        email in hostile_string(),
        name in any::<String>(),
    ) {
        // A NUL anywhere is refused whole (422, `hostile.rs`); this property is about the rest.
        let (phone, email, name) = (phone.replace('\0', ""), email.replace('\0', ""), name.replace('\0', ""));
        let at = OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let printed = at.format(&time::format_description::well_known::Rfc3339).unwrap();
        let body = json!({
            "id": id,
            "hook_action": "on_create_lead",
            "attributes": {
                "updated_at": printed,
                "customer": {"name": name, "phone": phone, "email": email},
            }
        });
        let events = parse_body(&body).unwrap();
        prop_assert_eq!(events.len(), 1);
        prop_assert_eq!(events[0].event.lead.as_str(), id.as_str());
        prop_assert_eq!(events[0].event.at, at);
        let event = C2sEvent::from_payload(&events[0].payload, "").unwrap();
        // A contact the parser kept is the one its own parser gives for the raw text.
        prop_assert_eq!(event.customer.phone.clone(), Phone::parse(phone.trim()).ok().filter(|_| !phone.trim().is_empty()));
        prop_assert_eq!(event.customer.email.clone(), Email::parse(email.trim()).ok().filter(|_| !email.trim().is_empty()));
    }

    #[test]
    fn any_work_api_answer_is_read_without_panicking(body in any_json()) {
        let _ = WorkApiAnswer::parse(&body);
    }

    #[test]
    fn a_mutated_work_api_answer_is_read_without_panicking(
        body in mutated(fixture("work_api_person.json")),
    ) {
        // Whether the person's CPF must match the one asked for is the client's rule
        // (checked with the request in hand), not the reader's.
        let _ = WorkApiAnswer::parse(&body);
    }
}

/// Diretrix entries as they come: CPFs and CNPJs as strings (plain, formatted, broken) and as
/// numbers that lost their leading zeros, any name, hostile extras.
fn diretrix_entry() -> impl Strategy<Value = Value> {
    let document = prop_oneof![
        proptest::array::uniform9(0u8..10).prop_map(|b| json!(Cpf::from_base(b).as_str())),
        proptest::array::uniform9(0u8..10).prop_map(|b| json!(Cpf::from_base(b).formatted())),
        "[0-9]{14}".prop_map(|s| json!(s)),
        "[0-9./-]{0,20}".prop_map(|s| json!(s)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        hostile_string().prop_map(|s| json!(s)),
        Just(Value::Null),
    ];
    (document, prop::option::of(hostile_string()), any::<bool>()).prop_map(|(doc, name, cnpj)| {
        let mut entry = Map::new();
        entry.insert((if cnpj { "cnpj" } else { "cpf" }).into(), doc);
        if let Some(name) = name {
            entry.insert("nome".into(), json!(name));
        }
        Value::Object(entry)
    })
}

proptest! {
    #[test]
    fn a_diretrix_answer_reads_as_valid_people_and_companies_in_order_never_a_panic(
        entries in prop::collection::vec(diretrix_entry(), 0..8),
        junk in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = parse_answer(&junk);
        let body = Value::Array(entries.clone()).to_string();
        let candidates = parse_answer(body.as_bytes()).expect("a list of objects is readable");
        prop_assert!(candidates.len() <= entries.len());
        for candidate in &candidates {
            match candidate {
                // What was read parses again to itself: valid, canonical, never a cut CNPJ.
                Candidate::Person(p) => {
                    prop_assert_eq!(&Cpf::parse(p.cpf.as_str()).unwrap(), &p.cpf);
                }
                Candidate::Company { cnpj, .. } => {
                    prop_assert_eq!(&Cnpj::parse(cnpj.as_str()).unwrap(), cnpj);
                }
            }
            if let Some(name) = candidate.name() {
                prop_assert!(!name.is_empty() && !name.contains('\0'));
            }
        }
        // Every 14-digit string entry with valid check digits is a company, never a person.
        for entry in &entries {
            if let Some(Value::String(s)) = entry.get("cpf").or_else(|| entry.get("cnpj"))
                && let Ok(cnpj) = Cnpj::parse(s)
                && s.len() == 14
            {
                let as_company = candidates
                    .iter()
                    .any(|c| matches!(c, Candidate::Company { cnpj: found, .. } if *found == cnpj));
                let as_person = candidates.iter().any(|c| {
                    matches!(c, Candidate::Person(p) if cnpj.as_str().starts_with(p.cpf.as_str()))
                });
                prop_assert!(as_company && !as_person, "a valid CNPJ was not read as a company");
            }
        }
    }
}

#[test]
fn the_unmutated_fixtures_read_as_found() {
    assert!(matches!(
        WorkApiAnswer::parse(&fixture("work_api_person.json")),
        Ok(WorkApiAnswer::Found(_))
    ));
    assert_eq!(
        parse_body(&fixture("c2s_webhook_batch.json"))
            .unwrap()
            .len(),
        2
    );
}

/// One mock server answering whatever the current case sets, for the provider clients.
struct ProviderHarness {
    runtime: tokio::runtime::Runtime,
    server: MockServer,
}

/// One harness per provider test, so the two (run in parallel) never reset each other's mock.
#[derive(Clone, Copy)]
enum Provider {
    Diretrix = 0,
    WorkApi = 1,
}

fn harness(provider: Provider) -> &'static ProviderHarness {
    static HARNESSES: [OnceLock<ProviderHarness>; 2] = [OnceLock::new(), OnceLock::new()];
    HARNESSES[provider as usize].get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(MockServer::start());
        ProviderHarness { runtime, server }
    })
}

/// Sets the body every request gets (status 200, JSON content type), for one case.
fn answer_with(provider: Provider, body: Vec<u8>) -> &'static ProviderHarness {
    let h = harness(provider);
    h.runtime.block_on(async {
        h.server.reset().await;
        Mock::given(matchers::any())
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
            .mount(&h.server)
            .await;
    });
    h
}

/// Raw answer bodies: any JSON, mutated fixtures, or arbitrary bytes.
fn answer_body(fixture_name: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any_json().prop_map(|v| v.to_string().into_bytes()),
        mutated(fixture(fixture_name)).prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn maria_phone() -> ContactKey {
    ContactKey::Phone(Phone::parse("11987654321").unwrap())
}

proptest! {
    // Each case is an HTTP round trip to a local mock: fewer cases, same reach.
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn any_diretrix_answer_is_a_candidate_nobody_or_a_decode_error_never_a_panic(
        body in answer_body("diretrix_found.json"),
    ) {
        let h = answer_with(Provider::Diretrix, body);
        let client = DiretrixClient::new(
            h.server.uri().parse().unwrap(),
            "user".to_owned().into(),
            "password".to_owned().into(),
            Duration::from_secs(5),
            1024 * 1024,
        );
        match h.runtime.block_on(client.lookup(&maria_phone())) {
            Ok(Some(candidate)) => {
                prop_assert_eq!(&Cpf::parse(candidate.cpf.as_str()).unwrap(), &candidate.cpf);
            }
            Ok(None) | Err(ProviderError::Decode { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error class {}", other.class()),
        }
    }

    #[test]
    fn any_work_api_body_is_a_person_nobody_or_a_decode_error_never_a_panic(
        body in answer_body("work_api_person.json"),
    ) {
        let h = answer_with(Provider::WorkApi, body);
        let client = WorkApiClient::new(
            h.server.uri().parse().unwrap(),
            "token".to_owned().into(),
            Duration::from_secs(5),
            1024 * 1024,
        );
        let cpf = Cpf::parse("52601815906").unwrap();
        match h.runtime.block_on(client.fetch(&cpf)) {
            Ok(_) | Err(ProviderError::Decode { .. }) => {}
            // A mutated answer may name another CPF, or one with bad check digits.
            Err(other) if other.class() == "mismatch" => {}
            Err(other) => prop_assert!(false, "unexpected error class {}", other.class()),
        }
    }
}
