//! The C2S lead webhook: its shape, its three timestamp formats, and what one event means.
//!
//! Intake uses [`parse_body`] to validate a request and turn each event into a
//! [`LeadEvent`] before anything is stored; the worker reads only that event. The raw
//! payload is stored beside it for audit and erasure, unknown fields kept, never dropped;
//! [`C2sEvent::from_payload`] also converts rows stored before events were (see
//! [`super::convert_stored_events`]).

use serde_json::Value;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::domain::{Email, LeadId, Phone};
use crate::event::{Action, Customer, Destination, LeadEvent, Rejected, Source};
use crate::store::NewEvent;

pub const SOURCE: &str = Source::C2s.as_str();

/// A request body that is JSON but not the contract's shape. `field` names the problem as a
/// path (`[1].attributes.updated_at`); no value is echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ShapeError {
    pub field: String,
    pub problem: &'static str,
}

/// What the sender asked for. Older senders prefix `hook_`; no action at all means create.
pub fn parse_action(raw: Option<&str>) -> Action {
    let raw = raw.map(str::trim).unwrap_or("");
    let name = raw.strip_prefix("hook_").unwrap_or(raw);
    match name {
        "" | "on_create_lead" => Action::Create,
        "on_update_lead" => Action::Update,
        "on_close_lead" => Action::Close,
        other => Action::Other {
            name: other.chars().take(64).collect(),
        },
    }
}

/// One webhook event, read from its payload.
#[derive(Debug, Clone)]
pub struct C2sEvent {
    pub lead_id: LeadId,
    pub action: Action,
    pub updated_at: OffsetDateTime,
    pub customer: Customer,
}

fn shape(field: impl Into<String>, problem: &'static str) -> ShapeError {
    ShapeError {
        field: field.into(),
        problem,
    }
}

impl C2sEvent {
    /// Reads one event. `at` prefixes field names (`[2].` inside an array).
    pub fn from_payload(payload: &Value, at: &str) -> Result<C2sEvent, ShapeError> {
        let obj = payload
            .as_object()
            .ok_or_else(|| shape(format!("{at}(event)"), "must be an object"))?;
        let id = match obj.get("id") {
            None | Some(Value::Null) => return Err(shape(format!("{at}id"), "is required")),
            Some(Value::String(s)) => s.clone(),
            // Some senders serialize ids as numbers; only an exact integer is unambiguous
            // (99999999999999999999999 would read as the float 1e+23 and collide).
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Some(Value::Number(_)) => {
                return Err(shape(
                    format!("{at}id"),
                    "must be a string or an integer of at most 19 digits",
                ));
            }
            Some(_) => return Err(shape(format!("{at}id"), "must be a string")),
        };
        let lead_id = LeadId::parse(&id).map_err(|_| {
            shape(
                format!("{at}id"),
                "must be a non-empty id without control characters, other than . and ..",
            )
        })?;
        let action = match obj.get("hook_action") {
            None | Some(Value::Null) => Action::Create,
            Some(Value::String(s)) => parse_action(Some(s)),
            Some(_) => return Err(shape(format!("{at}hook_action"), "must be a string")),
        };
        let attributes = match obj.get("attributes") {
            None | Some(Value::Null) => {
                return Err(shape(format!("{at}attributes"), "is required"));
            }
            Some(Value::Object(a)) => a,
            Some(_) => return Err(shape(format!("{at}attributes"), "must be an object")),
        };
        let updated_at = match attributes.get("updated_at") {
            None | Some(Value::Null) => {
                return Err(shape(format!("{at}attributes.updated_at"), "is required"));
            }
            Some(Value::String(s)) => parse_updated_at(s).ok_or_else(|| {
                shape(
                    format!("{at}attributes.updated_at"),
                    "must be RFC 3339, 'YYYY-MM-DD HH:MM:SS[.fff] +zzzz' or a naive UTC time",
                )
            })?,
            Some(_) => {
                return Err(shape(
                    format!("{at}attributes.updated_at"),
                    "must be a string",
                ));
            }
        };
        let customer = match attributes.get("customer") {
            None | Some(Value::Null) => Customer::default(),
            Some(Value::Object(c)) => read_customer(c),
            Some(_) => {
                return Err(shape(
                    format!("{at}attributes.customer"),
                    "must be an object",
                ));
            }
        };
        Ok(C2sEvent {
            lead_id,
            action,
            updated_at,
            customer,
        })
    }
}

/// A C2S webhook is always about a lead the CRM already has: the message goes on it.
impl From<C2sEvent> for LeadEvent {
    fn from(event: C2sEvent) -> LeadEvent {
        LeadEvent {
            source: Source::C2s,
            lead: event.lead_id,
            action: event.action,
            at: event.updated_at,
            customer: event.customer,
            cpf: None,
            destination: Destination::CrmLead,
        }
    }
}

/// Text of an optional customer field; null, empty and non-strings count as absent.
fn text(c: &serde_json::Map<String, Value>, field: &str) -> Option<String> {
    match c.get(field)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn read_customer(c: &serde_json::Map<String, Value>) -> Customer {
    let mut customer = Customer {
        name: text(c, "name"),
        ..Customer::default()
    };
    if let Some(raw) = text(c, "phone") {
        match Phone::parse(&raw) {
            Ok(p) => customer.phone = Some(p),
            Err(e) => customer.rejected.push(Rejected {
                field: "phone".into(),
                reason: e.to_string(),
            }),
        }
    }
    if let Some(raw) = text(c, "email") {
        match Email::parse(&raw) {
            Ok(e) => customer.email = Some(e),
            Err(e) => customer.rejected.push(Rejected {
                field: "email".into(),
                reason: e.to_string(),
            }),
        }
    }
    customer
}

const SPACE_OFFSET: &[BorrowedFormatItem<'static>] = format_description!(
    "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]] [offset_hour sign:mandatory][offset_minute]"
);
const NAIVE_SPACE: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]");
const NAIVE_T: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]");

/// The three `updated_at` forms C2S sends; all become one UTC instant, truncated to
/// microseconds so both databases store the identity exactly.
pub fn parse_updated_at(raw: &str) -> Option<OffsetDateTime> {
    let raw = raw.trim();
    let parsed = OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .or_else(|_| OffsetDateTime::parse(raw, SPACE_OFFSET))
        .or_else(|_| PrimitiveDateTime::parse(raw, NAIVE_SPACE).map(|t| t.assume_utc()))
        .or_else(|_| PrimitiveDateTime::parse(raw, NAIVE_T).map(|t| t.assume_utc()))
        .ok()?
        .to_offset(UtcOffset::UTC);
    let micros = parsed.microsecond();
    parsed.replace_microsecond(micros).ok()
}

/// Validates a whole request body (one event or an array) and turns it into inbox rows.
/// All or nothing: one bad event rejects the request, so the sender's retry is whole.
///
/// A NUL character anywhere is refused (422) rather than stripped: Postgres cannot store it,
/// and silently changing what the sender sent would make the stored payload lie.
pub fn parse_body(body: &Value) -> Result<Vec<NewEvent>, ShapeError> {
    if let Some(at) = crate::domain::text::find_nul(body) {
        let field = if at.is_empty() {
            "(body)".to_owned()
        } else {
            at
        };
        return Err(shape(field, "must not contain NUL characters"));
    }
    let items: Vec<(&Value, String)> = match body {
        Value::Array(items) if items.is_empty() => {
            return Err(shape("(body)", "must hold at least one event"));
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (v, format!("[{i}].")))
            .collect(),
        other => vec![(other, String::new())],
    };
    items
        .into_iter()
        .map(|(payload, at)| {
            let event = LeadEvent::from(C2sEvent::from_payload(payload, &at)?);
            Ok(NewEvent::new(event, payload.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn the_three_updated_at_formats_parse_to_one_utc_instant() {
        let cases = [
            (
                "2026-11-20T14:03:11-03:00",
                datetime!(2026-11-20 17:03:11 UTC),
            ),
            ("2026-11-20T17:03:11Z", datetime!(2026-11-20 17:03:11 UTC)),
            (
                "2026-11-20 14:03:11 -0300",
                datetime!(2026-11-20 17:03:11 UTC),
            ),
            (
                "2026-11-20 14:05:00.123 -0300",
                datetime!(2026-11-20 17:05:00.123 UTC),
            ),
            ("2026-11-20 17:03:11", datetime!(2026-11-20 17:03:11 UTC)),
            (
                "2026-11-20T17:03:11.5",
                datetime!(2026-11-20 17:03:11.5 UTC),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_updated_at(raw), Some(want), "{raw}");
        }
    }

    #[test]
    fn nonsense_timestamps_are_rejected() {
        for raw in ["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-20"] {
            assert_eq!(parse_updated_at(raw), None, "{raw}");
        }
    }

    #[test]
    fn actions_accept_the_old_hook_prefix_and_default_to_create() {
        assert_eq!(parse_action(None), Action::Create);
        assert_eq!(parse_action(Some("hook_on_update_lead")), Action::Update);
        assert_eq!(parse_action(Some("on_close_lead")), Action::Close);
        assert_eq!(
            parse_action(Some("on_merge_lead")),
            Action::Other {
                name: "on_merge_lead".into()
            }
        );
    }

    #[test]
    fn shape_errors_name_the_field_and_its_position() {
        let cases = [
            (json!({"attributes": {}}), "id"),
            (json!({"id": "1"}), "attributes"),
            (json!({"id": "1", "attributes": []}), "attributes"),
            (
                json!({"id": "1", "attributes": {}}),
                "attributes.updated_at",
            ),
            (
                json!({"id": 15, "attributes": {"updated_at": "x"}}),
                "attributes.updated_at",
            ),
            (json!({"id": true, "attributes": {}}), "id"),
            (json!([]), "(body)"),
            (json!("text"), "(event)"),
            (
                json!([{"id": "1", "attributes": {"updated_at": "2026-11-20T17:03:11Z"}}, {"id": "2"}]),
                "[1].attributes",
            ),
        ];
        for (body, field) in cases {
            let err = parse_body(&body).expect_err(&body.to_string());
            assert_eq!(err.field, field, "{body}");
        }
    }

    #[test]
    fn numeric_ids_are_kept_only_when_they_are_exact_integers() {
        let event =
            |id: Value| json!({"id": id, "attributes": {"updated_at": "2026-11-20T17:03:11Z"}});
        let ok = parse_body(&event(json!(12345))).unwrap();
        assert_eq!(ok[0].event.lead.as_str(), "12345");
        for raw in ["99999999999999999999999", "1e23", "1.0", "-0.5"] {
            let body: Value =
                serde_json::from_str(&format!(r#"{{"id": {raw}, "attributes": {{}}}}"#)).unwrap();
            let err = parse_body(&body).expect_err(raw);
            assert_eq!(err.field, "id", "{raw}");
        }
    }

    #[test]
    fn a_nul_anywhere_is_refused_with_its_place() {
        let body = json!([
            {"id": "1", "attributes": {"updated_at": "2026-11-20T17:03:11Z"}},
            {"id": "2", "attributes": {"updated_at": "2026-11-20T17:03:11Z", "customer": {"name": "A\u{0}"}}}
        ]);
        let err = parse_body(&body).unwrap_err();
        assert_eq!(err.field, "[1].attributes.customer.name");
    }

    #[test]
    fn unusable_contacts_are_dropped_with_a_reason_and_the_rest_kept() {
        let body = json!({"id": "L1", "attributes": {
            "updated_at": "2026-11-20T17:03:11Z",
            "customer": {"name": " Ana ", "phone": "(11) 99999-9999", "email": " Ana@Example.com "}}});
        let event = C2sEvent::from_payload(&body, "").unwrap();
        assert_eq!(event.customer.name.as_deref(), Some("Ana"));
        assert!(event.customer.phone.is_none());
        assert_eq!(
            event.customer.email.as_ref().unwrap().as_str(),
            "ana@example.com"
        );
        assert_eq!(event.customer.rejected.len(), 1);
        assert_eq!(event.customer.rejected[0].field, "phone");
    }

    #[test]
    fn missing_null_and_empty_customer_fields_mean_no_contact() {
        let body = json!({"id": "L1", "attributes": {
            "updated_at": "2026-11-20T17:03:11Z",
            "customer": {"name": null, "phone": "", "email": null}}});
        let event = C2sEvent::from_payload(&body, "").unwrap();
        assert!(event.customer.keys().is_empty());
        assert!(event.customer.rejected.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_json_body_is_accepted_or_refused_without_panicking(
            body in crate::domain::text::any_json()
        ) {
            if let Ok(events) = parse_body(&body) {
                for event in events {
                    proptest::prop_assert!(
                        crate::domain::text::find_nul(&event.payload).is_none()
                    );
                    proptest::prop_assert!(C2sEvent::from_payload(&event.payload, "").is_ok());
                }
            }
        }

        #[test]
        fn every_updated_at_form_of_one_instant_parses_to_that_instant(
            secs in 946_684_800i64..4_102_444_800i64,
            millis in 0u32..1000,
            offset_minutes in -720i32..=840,
        ) {
            let instant = OffsetDateTime::from_unix_timestamp(secs).unwrap()
                .replace_millisecond(millis as u16).unwrap();
            let offset = UtcOffset::from_whole_seconds(offset_minutes / 15 * 15 * 60).unwrap();
            let local = instant.to_offset(offset);
            let rfc3339 = local.format(&time::format_description::well_known::Rfc3339).unwrap();
            let spaced = local.format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3] [offset_hour sign:mandatory][offset_minute]"
            )).unwrap();
            let naive_utc = instant.format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
            )).unwrap();
            for raw in [rfc3339, spaced, naive_utc] {
                proptest::prop_assert_eq!(parse_updated_at(&raw), Some(instant), "{}", raw);
            }
        }
    }
}
