//! The Google Ads lead-form webhook: its wire shape, its key, and what one lead means.
//!
//! [`GoogleAdsBody`] is the body as Google sends it (unknown fields are accepted: Google adds
//! fields over time, and the raw payload keeps them). [`GoogleAdsLead::try_from`] turns it into
//! a plain parsed value: the lead and form identifiers, the contacts found among the form's
//! columns, a CPF when the form asked for one (as written: validating and padding it is
//! [`crate::domain::cpf`]'s job), and every other answer kept as a labelled field for the
//! description. A body that does not fit is a [`ShapeError`] naming the field, never echoing a
//! value. The body carries its own credential ([`GoogleAdsBody::google_key`]): check it with
//! [`key_matches`] before anything is kept, and store the payload only through
//! [`without_key`]. [`GoogleAdsLead::into_event`] makes the [`LeadEvent`] intake stores.
//! This module does no I/O.

use std::fmt;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::c2s::ShapeError;
use crate::domain::text::{MAX_FIELD_CHARS, MAX_LIST_ITEMS, clip};
use crate::domain::{Cpf, LeadId};
use crate::domain::{DomainError, Email, Phone};
use crate::event::{
    Action, Customer, Destination, FormAnswer, LeadEvent, NewCrmLead, Rejected, Source,
};

pub const SOURCE: &str = "google_ads";

/// Longest Google lead id kept; Google's are about 100 characters.
const MAX_LEAD_ID_CHARS: usize = 200;

/// The body as Google posts it. `deny_unknown_fields` is deliberately not set.
#[derive(Deserialize)]
pub struct GoogleAdsBody {
    pub lead_id: String,
    #[serde(default)]
    pub api_version: Option<String>,
    /// int64 at Google: kept as `u64`, never through a float (ids pass 2^53).
    #[serde(default)]
    pub form_id: Option<u64>,
    #[serde(default)]
    pub campaign_id: Option<u64>,
    #[serde(default)]
    pub gcl_id: Option<String>,
    /// The shared key configured in the Google Ads form; compared with [`key_matches`].
    pub google_key: SecretString,
    #[serde(default)]
    pub is_test: bool,
    #[serde(default)]
    pub user_column_data: Vec<ColumnData>,
}

/// One answer of the form.
#[derive(Deserialize)]
pub struct ColumnData {
    /// `FULL_NAME`, `PHONE_NUMBER`, … for standard questions; an opaque id for custom ones.
    #[serde(default)]
    pub column_id: Option<String>,
    /// The question as the form shows it ("User Phone", "Qual o seu CPF?").
    #[serde(default)]
    pub column_name: Option<String>,
    #[serde(default)]
    pub string_value: Option<String>,
}

// The body holds personal data and a credential: Debug shows neither.
impl fmt::Debug for GoogleAdsBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleAdsBody")
            .field("lead_id", &self.lead_id)
            .field("form_id", &self.form_id)
            .field("campaign_id", &self.campaign_id)
            .field("is_test", &self.is_test)
            .field("columns", &self.user_column_data.len())
            .finish_non_exhaustive()
    }
}

impl GoogleAdsBody {
    /// Reads a body already parsed as JSON. Errors name the field and what it should be; they
    /// never quote the value (serde's own messages do, and a value here is personal data).
    pub fn from_value(body: &Value) -> Result<GoogleAdsBody, ShapeError> {
        if let Some(at) = crate::domain::text::find_nul(body) {
            // Refused rather than stripped, as for C2S: a stored payload must be what was sent.
            return Err(shape(
                if at.is_empty() { "(body)".into() } else { at },
                "must not contain NUL characters",
            ));
        }
        GoogleAdsBody::deserialize(body).map_err(|_| diagnose(body))
    }
}

/// Whether the body's `google_key` is the configured key, in constant time. A body without a
/// readable key never matches.
pub fn key_matches(expected: &SecretString, body: &Value) -> bool {
    match body.get("google_key") {
        Some(Value::String(given)) => crate::http::auth::secret_matches(expected, given),
        _ => false,
    }
}

/// The payload as it may be stored: the same body without `google_key`, a credential that
/// has no business in the inbox (or in a database dump).
pub fn without_key(mut body: Value) -> Value {
    if let Some(fields) = body.as_object_mut() {
        fields.remove("google_key");
    }
    body
}

/// Google's lead id: opaque, not personal data, so it prints in clear.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GoogleLeadId(String);

impl GoogleLeadId {
    pub fn parse(raw: &str) -> Result<GoogleLeadId, DomainError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(DomainError::Empty);
        }
        if s.chars().count() > MAX_LEAD_ID_CHARS {
            return Err(DomainError::InvalidLeadId("longer than 200 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(DomainError::InvalidLeadId("contains control characters"));
        }
        Ok(GoogleLeadId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GoogleLeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A CPF as the person typed it into the form; personal data, so it prints masked. Whether it
/// is a CPF at all is decided later, by [`crate::domain::Cpf`].
#[derive(Clone, PartialEq, Eq)]
pub struct RawCpf(String);

impl RawCpf {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RawCpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawCpf(***)")
    }
}

/// One answer of the form that is not a contact, for the description.
#[derive(Clone, PartialEq, Eq)]
pub struct FormField {
    /// The question (`column_name`, else `column_id`), at most [`MAX_FIELD_CHARS`].
    pub label: String,
    /// The answer, at most [`MAX_FIELD_CHARS`].
    pub value: String,
}

impl fmt::Debug for FormField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FormField")
            .field("label", &self.label)
            .field("value", &"***")
            .finish()
    }
}

/// One Google Ads lead, read from its body.
#[derive(Clone)]
pub struct GoogleAdsLead {
    pub lead_id: GoogleLeadId,
    pub form_id: Option<u64>,
    pub campaign_id: Option<u64>,
    pub gcl_id: Option<String>,
    /// Sent by the "send test data" button in Google Ads: processed like any lead, marked.
    pub is_test: bool,
    /// `FULL_NAME`, else `NAME`, else `FIRST_NAME` + `LAST_NAME`.
    pub name: Option<String>,
    pub phone: Option<Phone>,
    pub email: Option<Email>,
    /// From `CPF`/`DOCUMENT` or any column whose name contains "cpf", as typed.
    pub cpf: Option<RawCpf>,
    /// Every other answer, in the form's order, at most [`MAX_LIST_ITEMS`].
    pub fields: Vec<FormField>,
    /// Contacts that were present but unusable, with the reason (no values).
    pub rejected: Vec<(&'static str, DomainError)>,
}

impl fmt::Debug for GoogleAdsLead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleAdsLead")
            .field("lead_id", &self.lead_id)
            .field("form_id", &self.form_id)
            .field("campaign_id", &self.campaign_id)
            .field("is_test", &self.is_test)
            .field("name", &self.name.as_ref().map(|_| "***"))
            .field("phone", &self.phone)
            .field("email", &self.email)
            .field("cpf", &self.cpf)
            .field("fields", &self.fields.len())
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

/// What a column of the form is, by its id (and, for the CPF, its name too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    FullName,
    Name,
    FirstName,
    LastName,
    Phone,
    Email,
    Cpf,
    Other,
}

fn role(column: &ColumnData) -> Role {
    let id = column.column_id.as_deref().unwrap_or("").trim();
    let is = |name: &str| id.eq_ignore_ascii_case(name);
    if is("FULL_NAME") {
        Role::FullName
    } else if is("NAME") {
        Role::Name
    } else if is("FIRST_NAME") {
        Role::FirstName
    } else if is("LAST_NAME") {
        Role::LastName
    } else if is("PHONE_NUMBER") || is("PHONE") {
        Role::Phone
    } else if is("EMAIL") {
        Role::Email
    } else if is("CPF")
        || is("DOCUMENT")
        || column
            .column_name
            .as_deref()
            .is_some_and(|n| n.to_lowercase().contains("cpf"))
        || id.to_lowercase().contains("cpf")
    {
        Role::Cpf
    } else {
        Role::Other
    }
}

/// A column's answer trimmed and capped; blank counts as absent.
fn answer(column: &ColumnData) -> Option<String> {
    let value = column.string_value.as_deref()?.trim();
    (!value.is_empty()).then(|| clip(value, MAX_FIELD_CHARS).trim_end().to_owned())
}

impl TryFrom<GoogleAdsBody> for GoogleAdsLead {
    type Error = ShapeError;

    fn try_from(body: GoogleAdsBody) -> Result<GoogleAdsLead, ShapeError> {
        let lead_id = GoogleLeadId::parse(&body.lead_id).map_err(|_| {
            shape(
                "lead_id",
                "must be a non-empty id of at most 200 characters without control characters",
            )
        })?;
        let text = |s: Option<String>| {
            s.map(|s| clip(s.trim(), MAX_FIELD_CHARS).trim_end().to_owned())
                .filter(|s| !s.is_empty())
        };
        let mut lead = GoogleAdsLead {
            lead_id,
            form_id: body.form_id,
            campaign_id: body.campaign_id,
            gcl_id: text(body.gcl_id),
            is_test: body.is_test,
            name: None,
            phone: None,
            email: None,
            cpf: None,
            fields: Vec::new(),
            rejected: Vec::new(),
        };
        let (mut full, mut name, mut first, mut last) = (None, None, None, None);
        for column in &body.user_column_data {
            let Some(value) = answer(column) else {
                continue;
            };
            // The first answer of a role wins; a form asking twice is the form's problem.
            match role(column) {
                Role::FullName => {
                    full.get_or_insert(value);
                }
                Role::Name => {
                    name.get_or_insert(value);
                }
                Role::FirstName => {
                    first.get_or_insert(value);
                }
                Role::LastName => {
                    last.get_or_insert(value);
                }
                Role::Phone if lead.phone.is_none() => match Phone::parse(&value) {
                    Ok(p) => lead.phone = Some(p),
                    Err(e) => lead.rejected.push(("phone", e)),
                },
                Role::Email if lead.email.is_none() => match Email::parse(&value) {
                    Ok(e) => lead.email = Some(e),
                    Err(e) => lead.rejected.push(("email", e)),
                },
                Role::Cpf => {
                    lead.cpf.get_or_insert(RawCpf(value));
                }
                Role::Phone | Role::Email | Role::Other => {
                    if lead.fields.len() < MAX_LIST_ITEMS {
                        let label = column
                            .column_name
                            .as_deref()
                            .or(column.column_id.as_deref())
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .unwrap_or("?");
                        lead.fields.push(FormField {
                            label: clip(label, MAX_FIELD_CHARS).to_owned(),
                            value,
                        });
                    }
                }
            }
        }
        lead.name = full.or(name).or_else(|| match (first, last) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (f, l) => f.or(l),
        });
        Ok(lead)
    }
}

impl GoogleAdsLead {
    /// Reads and validates a body in one step.
    pub fn from_value(body: &Value) -> Result<GoogleAdsLead, ShapeError> {
        GoogleAdsLead::try_from(GoogleAdsBody::from_value(body)?)
    }

    /// The lead event the worker reads: a lead for the CRM to create, keyed by the Google
    /// lead id. The form's CPF is validated here (padded when it lost its leading zeros); an
    /// unusable one is dropped with its reason, never its value, like a bad phone.
    pub fn into_event(self) -> Result<LeadEvent, ShapeError> {
        let lead = LeadId::parse(self.lead_id.as_str()).map_err(|_| {
            shape(
                "lead_id",
                "must be a non-empty id of at most 200 characters without control characters",
            )
        })?;
        let mut rejected: Vec<Rejected> = self
            .rejected
            .iter()
            .map(|(field, e)| Rejected {
                field: (*field).to_owned(),
                reason: e.to_string(),
            })
            .collect();
        let cpf = self
            .cpf
            .as_ref()
            .and_then(|raw| match Cpf::parse_padded(raw.as_str()) {
                Ok(cpf) => Some(cpf),
                Err(e) => {
                    rejected.push(Rejected {
                        field: "cpf".into(),
                        reason: e.to_string(),
                    });
                    None
                }
            });
        Ok(LeadEvent {
            source: Source::GoogleAds,
            lead,
            action: Action::Create,
            at: DELIVERY_INSTANT,
            customer: Customer {
                name: self.name,
                phone: self.phone,
                email: self.email,
                rejected,
            },
            cpf,
            destination: Destination::CreateCrmLead(NewCrmLead {
                origin: ORIGIN.into(),
                description: None,
                // A lead form has no product question in the contract; a campaign-to-product
                // mapping would fill this.
                product: None,
                seller_id: None,
                is_test: self.is_test,
                campaign_id: self.campaign_id,
                form_id: self.form_id,
                fields: self
                    .fields
                    .into_iter()
                    .map(|f| FormAnswer {
                        label: f.label,
                        value: f.value,
                    })
                    .collect(),
            }),
        })
    }
}

/// The lead's origin as the CRM shows it.
pub const ORIGIN: &str = "Google Ads";

/// Google sends no time of its own. Every delivery of one lead carries this same instant, so
/// the inbox's delivery key (source, lead, instant) is the Google lead id alone and a
/// redelivery, on any instance, is recognised as a duplicate by the inbox's unique key.
pub const DELIVERY_INSTANT: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

fn shape(field: impl Into<String>, problem: &'static str) -> ShapeError {
    ShapeError {
        field: field.into(),
        problem,
    }
}

/// Names the first field that kept the body from deserializing, without quoting it.
fn diagnose(body: &Value) -> ShapeError {
    let Some(obj) = body.as_object() else {
        return shape("(body)", "must be a JSON object");
    };
    let string = |v: Option<&Value>| matches!(v, Some(Value::String(_)));
    let optional = |v: Option<&Value>, ok: fn(&Value) -> bool| match v {
        None | Some(Value::Null) => true,
        Some(v) => ok(v),
    };
    if !string(obj.get("lead_id")) {
        return shape("lead_id", "is required and must be a string");
    }
    if !string(obj.get("google_key")) {
        return shape("google_key", "is required and must be a string");
    }
    for field in ["form_id", "campaign_id"] {
        if !optional(obj.get(field), |v| v.is_u64()) {
            return shape(
                field,
                "must be a non-negative integer of at most 20 digits (not a float, not a string)",
            );
        }
    }
    for field in ["api_version", "gcl_id"] {
        if !optional(obj.get(field), Value::is_string) {
            return shape(field, "must be a string");
        }
    }
    if !optional(obj.get("is_test"), Value::is_boolean) {
        return shape("is_test", "must be true or false");
    }
    match obj.get("user_column_data") {
        None | Some(Value::Null) => {}
        Some(Value::Array(columns)) => {
            for (i, column) in columns.iter().enumerate() {
                let Some(column) = column.as_object() else {
                    return shape(format!("user_column_data[{i}]"), "must be an object");
                };
                for field in ["column_id", "column_name", "string_value"] {
                    if !optional(column.get(field), Value::is_string) {
                        return shape(format!("user_column_data[{i}].{field}"), "must be a string");
                    }
                }
            }
        }
        Some(_) => return shape("user_column_data", "must be an array"),
    }
    shape("(body)", "is not a Google Ads lead-form body")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIXTURE: &str = include_str!("../../tests/fixtures/google_ads_lead.json");

    fn body(columns: Value) -> Value {
        json!({
            "lead_id": "lead-1",
            "api_version": "1.0",
            "form_id": 40000000001u64,
            "campaign_id": 20000000001u64,
            "google_key": "k",
            "is_test": false,
            "user_column_data": columns,
        })
    }

    fn col(id: &str, name: &str, value: &str) -> Value {
        json!({"column_id": id, "column_name": name, "string_value": value})
    }

    fn lead(columns: Value) -> GoogleAdsLead {
        GoogleAdsLead::from_value(&body(columns)).unwrap()
    }

    #[test]
    fn the_shared_fixture_reads_with_every_part() {
        let value: Value = serde_json::from_str(FIXTURE).unwrap();
        let lead = GoogleAdsLead::from_value(&value).unwrap();
        assert!(lead.lead_id.as_str().starts_with("TeSter-123-"));
        assert_eq!(lead.form_id, Some(40_000_000_001));
        assert_eq!(lead.campaign_id, Some(20_000_000_001));
        assert_eq!(lead.gcl_id.as_deref(), Some("TeSter-123-gclid"));
        assert!(lead.is_test);
        assert_eq!(lead.name.as_deref(), Some("Carlos Eduardo Pereira"));
        assert_eq!(lead.phone.unwrap().e164(), "+5511912345678");
        assert_eq!(lead.email.unwrap().as_str(), "carlos.pereira@example.net");
        assert!(lead.cpf.is_none());
        assert!(lead.fields.is_empty());
        assert!(lead.rejected.is_empty());
    }

    #[test]
    fn ids_beyond_float_precision_are_kept_exactly() {
        // 2^53 + 1 has no exact f64; a float on the way would make it 2^53.
        let mut b = body(json!([]));
        b["form_id"] = json!(9_007_199_254_740_993u64);
        b["campaign_id"] = json!(u64::MAX);
        let lead = GoogleAdsLead::from_value(&b).unwrap();
        assert_eq!(lead.form_id, Some(9_007_199_254_740_993));
        assert_eq!(lead.campaign_id, Some(u64::MAX));
    }

    #[test]
    fn an_id_that_is_a_float_or_negative_is_refused_by_name() {
        for bad in [json!(4.0e10), json!(-1), json!("40000000001"), json!(1.5)] {
            let mut b = body(json!([]));
            b["form_id"] = bad.clone();
            let err = GoogleAdsLead::from_value(&b).unwrap_err();
            assert_eq!(err.field, "form_id", "{bad}");
        }
    }

    #[test]
    fn the_name_comes_from_full_name_then_name_then_first_and_last() {
        let l = lead(json!([
            col("FIRST_NAME", "First", "Ana"),
            col("LAST_NAME", "Last", "Lima"),
        ]));
        assert_eq!(l.name.as_deref(), Some("Ana Lima"));
        let l = lead(json!([
            col("FIRST_NAME", "First", "Ana"),
            col("NAME", "Name", "Ana Maria"),
        ]));
        assert_eq!(l.name.as_deref(), Some("Ana Maria"));
        let l = lead(json!([
            col("NAME", "Name", "Ana Maria"),
            col("FULL_NAME", "Full", "Ana Maria Lima"),
        ]));
        assert_eq!(l.name.as_deref(), Some("Ana Maria Lima"));
        let l = lead(json!([col("LAST_NAME", "Last", "Lima")]));
        assert_eq!(l.name.as_deref(), Some("Lima"));
        assert_eq!(lead(json!([])).name, None);
    }

    #[test]
    fn phone_comes_from_phone_number_or_phone() {
        let l = lead(json!([col("PHONE", "Tel", "(11) 91234-5678")]));
        assert_eq!(l.phone.unwrap().e164(), "+5511912345678");
    }

    #[test]
    fn a_cpf_comes_from_cpf_document_or_any_column_named_cpf_as_typed() {
        for c in [
            col("CPF", "x", "529.982.247-25"),
            col("DOCUMENT", "Documento", "529.982.247-25"),
            col("custom_123", "Qual o seu CPF?", "529.982.247-25"),
            col("custom_cpf_1", "Documento", "529.982.247-25"),
        ] {
            let l = lead(json!([c]));
            assert_eq!(l.cpf.as_ref().unwrap().as_str(), "529.982.247-25");
            assert!(l.fields.is_empty());
        }
        // Raw: a CPF that lost its leading zero stays as typed, for the domain to pad.
        let l = lead(json!([col("CPF", "CPF", "1234567890")]));
        assert_eq!(l.cpf.unwrap().as_str(), "1234567890");
    }

    #[test]
    fn other_answers_are_kept_as_labelled_fields_in_order() {
        let l = lead(json!([
            col("custom_1", "Qual o imóvel?", "Apartamento 2 quartos"),
            col("FULL_NAME", "Nome", "Ana"),
            {"column_id": "CITY", "string_value": "Campinas"},
            col("custom_2", "Vazio", "   "),
        ]));
        let fields: Vec<(&str, &str)> = l
            .fields
            .iter()
            .map(|f| (f.label.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("Qual o imóvel?", "Apartamento 2 quartos"),
                ("CITY", "Campinas")
            ]
        );
    }

    #[test]
    fn unusable_contacts_are_rejected_with_a_reason_and_no_value() {
        let l = lead(json!([
            col("PHONE_NUMBER", "Tel", "123"),
            col("EMAIL", "Mail", "not-an-email"),
        ]));
        assert!(l.phone.is_none() && l.email.is_none());
        let fields: Vec<&str> = l.rejected.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["phone", "email"]);
        let shown = format!("{l:?}");
        assert!(!shown.contains("123") && !shown.contains("not-an-email"));
    }

    #[test]
    fn values_and_lists_are_capped() {
        let long = "x".repeat(5000);
        let columns: Vec<Value> = (0..100)
            .map(|i| col(&format!("c{i}"), &long, &long))
            .collect();
        let l = lead(Value::Array(columns));
        assert_eq!(l.fields.len(), MAX_LIST_ITEMS);
        assert!(
            l.fields
                .iter()
                .all(|f| f.value.chars().count() == MAX_FIELD_CHARS
                    && f.label.chars().count() == MAX_FIELD_CHARS)
        );
    }

    #[test]
    fn unknown_fields_are_accepted() {
        let mut b = body(json!([]));
        b["adgroup_id"] = json!(123);
        b["something_new"] = json!({"a": [1, 2]});
        assert!(GoogleAdsLead::from_value(&b).is_ok());
    }

    #[test]
    fn bad_shapes_name_the_field_and_never_quote_the_value() {
        let secret_looking = "+5511912345678";
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "(body)"),
            (json!({"google_key": "k"}), "lead_id"),
            (json!({"lead_id": "l"}), "google_key"),
            (json!({"lead_id": 5, "google_key": "k"}), "lead_id"),
            (
                json!({"lead_id": "l", "google_key": "k", "is_test": "yes"}),
                "is_test",
            ),
            (
                json!({"lead_id": "l", "google_key": "k", "user_column_data": secret_looking}),
                "user_column_data",
            ),
            (
                json!({"lead_id": "l", "google_key": "k",
                       "user_column_data": [{"column_id": "PHONE", "string_value": 5511912345678u64}]}),
                "user_column_data[0].string_value",
            ),
            (json!({"lead_id": "  ", "google_key": "k"}), "lead_id"),
            (json!({"lead_id": "a\u{0}b", "google_key": "k"}), "lead_id"),
        ];
        for (value, field) in cases {
            let err = GoogleAdsLead::from_value(&value).unwrap_err();
            assert_eq!(err.field, field, "{value}");
            let text = err.to_string();
            assert!(!text.contains(secret_looking) && !text.contains("5511912345678"));
        }
    }

    #[test]
    fn the_key_is_checked_in_constant_time_and_never_stored() {
        let expected = SecretString::from("the-key");
        let mut b = body(json!([]));
        assert!(!key_matches(&expected, &b));
        b["google_key"] = json!("the-key");
        assert!(key_matches(&expected, &b));
        b["google_key"] = json!(["the-key"]);
        assert!(!key_matches(&expected, &b));
        assert!(!key_matches(
            &SecretString::from(""),
            &json!({"google_key": ""})
        ));

        b["google_key"] = json!("the-key");
        let stored = without_key(b);
        assert!(stored.get("google_key").is_none());
        assert_eq!(stored["lead_id"], "lead-1");
        assert!(!stored.to_string().contains("the-key"));
    }

    #[test]
    fn debug_shows_no_personal_data_and_no_key() {
        let value: Value = serde_json::from_str(FIXTURE).unwrap();
        let body = GoogleAdsBody::from_value(&value).unwrap();
        let shown = format!("{body:?}");
        assert!(!shown.contains("replace-with-configured-key"));
        assert!(!shown.contains("Carlos"));
        let lead = GoogleAdsLead::try_from(body).unwrap();
        let shown = format!("{lead:?}");
        for value in ["Carlos", "carlos.pereira", "912345678"] {
            assert!(!shown.contains(value), "{shown}");
        }
    }
}
