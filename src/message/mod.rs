//! The enrichment message: turns what each contact of a lead led to into the Portuguese plain
//! text that is posted on the lead in C2S.
//!
//! This module owns the grouping (one block per person, first-seen order: `grouping.rs`), the
//! display formatting of CEPs, CNPJs, money, addresses and lists (`format.rs`; CPFs and phones
//! are shown with the domain types' own formatting), and the rendering through a minijinja
//! template that operators can replace without rebuilding (`render.rs`). Here: what a lead's
//! contacts led to ([`Finding`], [`Via`]). It must not fetch, store or log anything: the
//! input is personal data and only the finished text leaves this module.
//!
//! # Template context
//!
//! Every value is already formatted and every list already truncated, so templates only lay
//! things out:
//!
//! - `lead_name`: the lead's name, or none.
//! - `searched`, `not_found`: lists of contacts (`kind` "phone"/"email", `value` formatted,
//!   `label` like "telefone (11) 98765-4321"); `searched_text` ("o telefone … e o e-mail …")
//!   and `not_found_text` ("pelo e-mail …") are the same lists as Portuguese phrases.
//! - `blocks`: one per person found, each with `heading`, `same_person` (found through both a
//!   phone and an email), `contacts`, `person`, and `match_quality`: how sure the choice of
//!   this person among the candidates a contact lookup listed is: `confirmed` (the registry
//!   name agrees with the lead's; the default template says nothing), `unconfirmed` (the lead
//!   has a name and no candidate's agrees: the first person is shown, and the default
//!   template warns "⚠️ Nome diferente do lead: …") or `no_lead_name` (nothing to compare);
//!   `unconfirmed` is true for the second case only.
//! - `listed_companies`: companies (CNPJ) the contact lookups listed, never taken for a person:
//!   `cnpj` formatted, `name`, and `via` (the contact's label).
//! - `person`: `cpf`, `name`, `birth_date`, `sex`, `mother_name`, `has_financial`, `income`,
//!   `purchasing_power`, `income_band`, `credit_score`, `risk`, `emails[]` (`address`,
//!   `priority`), `phones[]` (`number`, `kind`, `whatsapp`), `addresses[]` (`line` and its
//!   parts `street`, `number`, `complement`, `district`, `city`, `uf`, `cep`), `companies[]`
//!   (`cnpj`, `relation`). Missing values are none.

pub mod description;
mod format;
mod grouping;
mod render;
#[cfg(test)]
mod test_support;

use std::fmt;
use std::sync::Arc;

use minijinja::context;
use minijinja::value::Value;

use crate::domain::name::Match;
use crate::domain::{Cnpj, ContactKey, Email, Person, Phone};

pub use render::{DEFAULT_TEMPLATE, MAX_MESSAGE_BYTES, MessageError, MessageRenderer};

/// What one contact of the lead led to. The lead has at most one phone and one email today, but handle any number.
#[derive(Clone, PartialEq)]
pub struct Finding {
    /// The contact that was looked up.
    pub via: Via,
    /// The person it resolved to; None = looked up, nobody found.
    pub person: Option<Arc<Person>>,
    /// How sure the choice of `person` among the contact's candidates is; `Confirmed` for
    /// a finding without a person (nothing to warn about).
    pub quality: Match,
    /// Companies the contact's lookup listed, in its order: shown, never bought.
    pub companies: Vec<ListedCompany>,
}

/// A company a contact lookup listed.
#[derive(Clone, PartialEq)]
pub struct ListedCompany {
    pub cnpj: Cnpj,
    pub name: Option<String>,
}

impl Finding {
    /// A contact that led to `person`, chosen with `quality`, and listed no company.
    pub fn found(via: Via, person: Arc<Person>, quality: Match) -> Finding {
        Finding {
            via,
            person: Some(person),
            quality,
            companies: Vec::new(),
        }
    }

    /// A contact that led to nobody.
    pub fn missed(via: Via) -> Finding {
        Finding {
            via,
            person: None,
            quality: Match::Confirmed,
            companies: Vec::new(),
        }
    }
}

/// A contact of the lead.
#[derive(Clone, PartialEq, Eq)]
pub enum Via {
    /// Shown as "(11) 98765-4321".
    Phone(Phone),
    /// Shown as the canonical address.
    Email(Email),
}

// Contacts and persons are personal data: Debug never prints them.
impl fmt::Debug for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Phone(_) => f.write_str("Phone(***)"),
            Via::Email(_) => f.write_str("Email(***)"),
        }
    }
}

impl fmt::Debug for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finding")
            .field("via", &self.via)
            .field("found", &self.person.is_some())
            .field("quality", &self.quality)
            .field("companies", &self.companies.len())
            .finish()
    }
}

impl From<&ContactKey> for Via {
    fn from(key: &ContactKey) -> Via {
        match key {
            ContactKey::Phone(p) => Via::Phone(p.clone()),
            ContactKey::Email(e) => Via::Email(e.clone()),
        }
    }
}

impl Via {
    pub(super) fn is_phone(&self) -> bool {
        matches!(self, Via::Phone(_))
    }

    /// Machine-readable kind for templates.
    fn kind(&self) -> &'static str {
        match self {
            Via::Phone(_) => "phone",
            Via::Email(_) => "email",
        }
    }

    /// The contact as a reader would write it.
    fn display_value(&self) -> String {
        match self {
            Via::Phone(phone) => phone.formatted(),
            Via::Email(email) => email.as_str().to_owned(),
        }
    }

    /// "telefone (11) 98765-4321" / "e-mail maria@example.com".
    pub(super) fn label(&self) -> String {
        let noun = match self {
            Via::Phone(_) => "telefone",
            Via::Email(_) => "e-mail",
        };
        format!("{noun} {}", self.display_value())
    }

    pub(super) fn context(&self) -> Value {
        context! {
            kind => self.kind(),
            value => self.display_value(),
            label => self.label(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{email, found, maria, phone};

    #[test]
    fn debug_output_hides_contacts() {
        let finding = found(phone(), &maria());
        let printed = format!("{finding:?} {:?}", email());
        assert_eq!(
            printed,
            r#"Finding { via: Phone(***), found: true, quality: Confirmed, companies: 0 } Email(***)"#
        );
    }
}
