//! The lead event: what the worker knows about one thing that happened to a lead, whatever
//! brought it in.
//!
//! Every way in (the C2S webhook, and next the Google Ads form, CSV backfill and
//! reconciliation, the operators' refresh) turns its own wire format into a [`LeadEvent`] at
//! its edge; the inbox stores that event as tagged JSON beside the raw payload (kept for audit
//! and erasure only), and the worker reads nothing else. A new source therefore costs a
//! parser and a [`Source`] variant, never a change to the worker's reading of payloads.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{ContactKey, Cpf, Email, LeadId, Phone};

/// Where an event came from. The stored strings ([`Source::as_str`]) are the inbox's
/// `source` column and must never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The C2S lead webhook.
    C2s,
    /// A Google Ads lead form.
    GoogleAds,
    /// A CSV file of past leads, loaded by an operator.
    Backfill,
    /// Leads found by comparing the CRM's list with the inbox.
    Reconcile,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::C2s,
        Source::GoogleAds,
        Source::Backfill,
        Source::Reconcile,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Source::C2s => "c2s",
            Source::GoogleAds => "google_ads",
            Source::Backfill => "backfill",
            Source::Reconcile => "reconcile",
        }
    }

    /// The source a stored string names; `None` for a string this version does not know.
    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|source| source.as_str() == s)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the event asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Close,
    /// Queued by an operator: enrich again bypassing every tier, and post.
    Refresh,
    /// An action this version does not know: recorded, nothing sent.
    Other {
        name: String,
    },
}

/// The inbox's `action` column for an operators' refresh.
pub const REFRESH_ACTION: &str = "refresh";

impl Action {
    /// The inbox's `action` column: what operators list. Only a label: the worker reads the
    /// action from the stored event, so a sender naming its action "refresh" stays
    /// [`Action::Other`].
    pub fn as_str(&self) -> &str {
        match self {
            Action::Create => "on_create_lead",
            Action::Update => "on_update_lead",
            Action::Close => "on_close_lead",
            Action::Refresh => REFRESH_ACTION,
            Action::Other { name } => name,
        }
    }
}

/// A contact that was present but unusable, and why (no value: it is personal data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub field: String,
    pub reason: String,
}

/// The customer as the source sent them: contacts that parsed, and why the others did not.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub name: Option<String>,
    pub phone: Option<Phone>,
    pub email: Option<Email>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejected>,
}

impl std::fmt::Debug for Customer {
    // The name is personal data and has no masked type of its own.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Customer")
            .field("name", &self.name.as_ref().map(|_| "***"))
            .field("phone", &self.phone)
            .field("email", &self.email)
            .field("rejected", &self.rejected)
            .finish()
    }
}

impl Customer {
    /// The canonical keys to look up, phone first.
    pub fn keys(&self) -> Vec<ContactKey> {
        let mut keys = Vec::new();
        if let Some(p) = &self.phone {
            keys.push(ContactKey::Phone(p.clone()));
        }
        if let Some(e) = &self.email {
            keys.push(ContactKey::Email(e.clone()));
        }
        keys
    }
}

/// Where the message goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Destination {
    /// A message on a lead the CRM already has (the event's lead).
    CrmLead,
    /// A lead the CRM does not have yet: create it (with the event's customer) and then
    /// write the message on it. What creation needs beyond the customer travels here.
    CreateCrmLead(NewCrmLead),
    /// Enrich and store only, post nothing: a backfill run with `--no-message`. The lead is
    /// linked to its party and the message rendered and kept, but never sent.
    StoreOnly,
}

/// What creating a CRM lead needs besides the customer's name and contacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCrmLead {
    /// The lead's origin as the CRM shows it ("Google Ads").
    pub origin: String,
    pub description: Option<String>,
    pub product: Option<String>,
    pub seller_id: Option<String>,
    /// Sent as a test by the source (Google's "send test data"): processed like any lead,
    /// marked as a test in the description and the metrics.
    #[serde(default)]
    pub is_test: bool,
    /// The source's campaign and form, for the description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_id: Option<u64>,
    /// The form's other answers, in order, for the description.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FormAnswer>,
}

/// One answer of a lead form that is not a contact. The value is personal data: `Debug`
/// shows the question only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormAnswer {
    pub label: String,
    pub value: String,
}

impl std::fmt::Debug for FormAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormAnswer")
            .field("label", &self.label)
            .field("value", &"***")
            .finish()
    }
}

/// One thing that happened to a lead, in the source-neutral form the worker reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadEvent {
    pub source: Source,
    /// The lead as its source names it; with `at`, the identity of one delivery.
    pub lead: LeadId,
    pub action: Action,
    /// When it happened at the source (microseconds, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub customer: Customer,
    /// A CPF the source itself gave (a form field), when it parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpf: Option<Cpf>,
    pub destination: Destination,
}

/// A stored event this version cannot read.
#[derive(Debug, thiserror::Error)]
#[error("stored lead event unreadable: {0}")]
pub struct Unreadable(String);

impl LeadEvent {
    /// An event with no customer data, for a message on an existing CRM lead.
    pub fn new(source: Source, lead: LeadId, action: Action, at: OffsetDateTime) -> LeadEvent {
        LeadEvent {
            source,
            lead,
            action,
            at,
            customer: Customer::default(),
            cpf: None,
            destination: Destination::CrmLead,
        }
    }

    /// The JSON the inbox stores.
    pub fn to_stored(&self) -> serde_json::Value {
        // Every field is a plain string, enum or option: serializing cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads the inbox's JSON. The error names the problem, never a value.
    pub fn from_stored(value: &serde_json::Value) -> Result<LeadEvent, Unreadable> {
        LeadEvent::deserialize(value).map_err(|e| {
            // serde_json's message can quote the offending value; keep only its category.
            Unreadable(format!("{:?} at line {}", e.classify(), e.line()))
        })
    }

    /// The same lead again, as an operator's refresh queued at `at`.
    pub fn refresh(&self, at: OffsetDateTime) -> LeadEvent {
        LeadEvent {
            action: Action::Refresh,
            at,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample() -> LeadEvent {
        LeadEvent {
            customer: Customer {
                name: Some("Ana".into()),
                phone: Some(Phone::parse("+55 11 98765-4321").unwrap()),
                email: Some(Email::parse("ana@example.com").unwrap()),
                rejected: vec![Rejected {
                    field: "phone".into(),
                    reason: "too short".into(),
                }],
            },
            cpf: Some(Cpf::parse("529.982.247-25").unwrap()),
            ..LeadEvent::new(
                Source::GoogleAds,
                LeadId::parse("L-1").unwrap(),
                Action::Other {
                    name: "refresh".into(),
                },
                datetime!(2026-11-20 17:03:11.5 UTC),
            )
        }
    }

    #[test]
    fn a_stored_event_reads_back_the_same() {
        for event in [
            sample(),
            LeadEvent {
                destination: Destination::CreateCrmLead(NewCrmLead {
                    origin: "Google Ads".into(),
                    description: None,
                    product: Some("Apto".into()),
                    seller_id: None,
                    is_test: true,
                    campaign_id: Some(20000000001),
                    form_id: None,
                    fields: vec![FormAnswer {
                        label: "Qual o imóvel?".into(),
                        value: "Apto".into(),
                    }],
                }),
                ..sample().refresh(datetime!(2026-11-21 00:00 UTC))
            },
        ] {
            let stored = event.to_stored();
            assert_eq!(LeadEvent::from_stored(&stored).unwrap(), event);
        }
    }

    #[test]
    fn stored_strings_are_stable() {
        let stored = sample().to_stored();
        assert_eq!(stored["source"], "google_ads");
        assert_eq!(stored["destination"]["type"], "crm_lead");
        // A sender's action named "refresh" stays a foreign action, never an operator's.
        assert_eq!(stored["action"]["type"], "other");
        for source in Source::ALL {
            assert_eq!(Source::parse(source.as_str()), Some(source));
        }
        assert_eq!(Source::C2s.as_str(), "c2s");
    }

    #[test]
    fn an_unreadable_event_is_refused_without_echoing_values() {
        let mut stored = sample().to_stored();
        stored["cpf"] = serde_json::json!("111.444.777-00");
        let err = LeadEvent::from_stored(&stored).unwrap_err().to_string();
        assert!(!err.contains("111"), "{err}");
    }

    #[test]
    fn the_customer_name_is_masked_in_debug() {
        let printed = format!("{:?}", sample());
        assert!(!printed.contains("Ana"), "{printed}");
    }
}
