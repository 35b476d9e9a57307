//! The right to erasure: remove a person everywhere, and keep an audit row that can answer
//! "was this CPF erased?" without holding the CPF.

use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};

use super::AdminError;
use crate::domain::Cpf;
use crate::state::AppState;

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erased {
    /// Whether a party existed for this CPF.
    pub found: bool,
    pub contacts: u64,
    pub enrichments: u64,
    pub lead_links: u64,
    pub negatives: u64,
    /// Inbox events redacted.
    pub events: u64,
    /// Memory entries dropped (the CPF and each of its contacts).
    pub memory_entries: u64,
    /// The hash recorded in the audit row.
    pub cpf_hash: String,
}

/// HMAC-SHA256 of the CPF under the erasure key, hex. Keyed by a secret of its own, not the
/// admin token: rotating the token must not make past erasures unanswerable, and the key
/// makes the hash useless to anyone enumerating the (small) space of CPFs.
pub fn cpf_hash(key: &SecretString, cpf: &Cpf) -> String {
    // HMAC takes a key of any length.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.expose_secret().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(cpf.as_str().as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Erases a person by CPF (see [`crate::store::Store::erase_party`]), then drops every memory
/// entry for the CPF and the contacts the erasure reached. `action` names who asked, for the
/// audit row.
pub async fn erase(state: &AppState, cpf: &Cpf, action: &str) -> Result<Erased, AdminError> {
    let hash = cpf_hash(&state.settings.admin.erasure_key(), cpf);
    let erasure = state.store.erase_party(cpf, action, &hash).await?;
    // Memory goes after the database: a lookup racing the erasure cannot re-fill memory
    // from rows that are already gone.
    let mut memory_entries = 0;
    if state.resolver.peek_person(cpf).await.is_some() {
        memory_entries += 1;
    }
    state.resolver.forget_person(cpf).await;
    for key in &erasure.contact_keys {
        if state.resolver.peek_contact(key).await.is_some() {
            memory_entries += 1;
        }
        state.resolver.forget_contact(key).await;
    }
    tracing::info!(
        cpf = %cpf,
        found = erasure.found,
        contacts = erasure.contacts,
        "party erased by an operator"
    );
    Ok(Erased {
        found: erasure.found,
        contacts: erasure.contacts,
        enrichments: erasure.enrichments,
        lead_links: erasure.lead_links,
        negatives: erasure.negatives,
        events: erasure.events,
        memory_entries,
        cpf_hash: hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_an_hmac_under_the_erasure_key() {
        let cpf = Cpf::parse("52998224725").unwrap();
        let key = SecretString::from("key-one");
        let hash = cpf_hash(&key, &cpf);
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, cpf_hash(&SecretString::from("key-one"), &cpf));
        assert_ne!(hash, cpf_hash(&SecretString::from("key-two"), &cpf));
        assert!(!hash.contains("52998224725"));
    }
}
