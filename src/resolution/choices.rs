//! Which candidate recent leads got, per contact: what `/cache/lookup` shows beside a
//! contact's candidate list, so an operator can see the choice a family phone led to.
//!
//! A bounded log in this instance's memory (the last [`KEPT`] choices, oldest dropped first),
//! never stored: the choice is the lead's and is made again whenever the lead is worked.
//! Erasure and cache drops remove what they name, like the memory tier's own entries.

use std::collections::VecDeque;
use std::sync::Mutex;

use time::OffsetDateTime;

use crate::domain::name::Match;
use crate::domain::{ContactKey, Cpf, LeadId};

/// Choices kept, across every contact.
pub const KEPT: usize = 1_000;

/// One lead's choice among a contact's candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentChoice {
    pub key: ContactKey,
    pub lead: LeadId,
    /// The candidate the lead got.
    pub cpf: Cpf,
    pub quality: Match,
    pub at: OffsetDateTime,
}

/// The log; every method takes the lock briefly and never across an await.
#[derive(Debug, Default)]
pub struct RecentChoices {
    log: Mutex<VecDeque<RecentChoice>>,
}

impl RecentChoices {
    fn log(&self) -> std::sync::MutexGuard<'_, VecDeque<RecentChoice>> {
        // Nothing is left half-written under the lock, so a poisoned one is still usable.
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes a choice; the oldest goes past [`KEPT`]. A lead worked again replaces its own
    /// earlier choice for the contact.
    pub fn note(&self, choice: RecentChoice) {
        let mut log = self.log();
        log.retain(|c| !(c.key == choice.key && c.lead == choice.lead));
        if log.len() >= KEPT {
            log.pop_front();
        }
        log.push_back(choice);
    }

    /// The choices made for leads with this contact, newest first.
    pub fn of(&self, key: &ContactKey) -> Vec<RecentChoice> {
        self.log()
            .iter()
            .rev()
            .filter(|c| &c.key == key)
            .cloned()
            .collect()
    }

    pub fn forget_contact(&self, key: &ContactKey) {
        self.log().retain(|c| &c.key != key);
    }

    pub fn forget_cpf(&self, cpf: &Cpf) {
        self.log().retain(|c| &c.cpf != cpf);
    }

    pub fn clear(&self) {
        self.log().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Phone;

    fn choice(lead: &str, cpf: &str) -> RecentChoice {
        RecentChoice {
            key: ContactKey::Phone(Phone::parse("11977770002").unwrap()),
            lead: LeadId::parse(lead).unwrap(),
            cpf: Cpf::parse(cpf).unwrap(),
            quality: Match::Confirmed,
            at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_log_is_bounded_newest_first_and_a_lead_keeps_its_latest_choice() {
        let log = RecentChoices::default();
        for i in 0..KEPT + 5 {
            log.note(choice(&format!("lead-{i}"), "52601815906"));
        }
        let key = choice("x", "52601815906").key;
        let held = log.of(&key);
        assert_eq!(held.len(), KEPT);
        assert_eq!(held[0].lead.as_str(), format!("lead-{}", KEPT + 4));
        log.note(choice("lead-7", "11144477735"));
        log.note(choice("lead-7", "52601815906"));
        assert_eq!(
            log.of(&key)
                .iter()
                .filter(|c| c.lead.as_str() == "lead-7")
                .count(),
            1
        );
        log.forget_cpf(&Cpf::parse("52601815906").unwrap());
        assert!(log.of(&key).is_empty());
    }
}
