//! The lead's vocabulary: identifiers and personal data as types that own their invariants.
//!
//! Every value here is constructed only through `parse`, so anything downstream (resolution,
//! store, providers, message) can trust it without re-checking or re-normalizing. Types that
//! carry personal data print masked through `Debug` and `Display`; the clear value is only
//! reachable through an explicit accessor.

pub mod candidates;
pub mod cnpj;
pub mod contact_key;
pub mod cpf;
pub mod email;
pub mod error;
pub mod lead_id;
pub mod name;
pub mod person;
pub mod phone;
pub mod text;

pub use candidates::{Candidate, Candidates, CpfCandidate};
pub use cnpj::Cnpj;
pub use contact_key::ContactKey;
pub use cpf::Cpf;
pub use email::Email;
pub use error::DomainError;
pub use lead_id::LeadId;
pub use person::Person;
pub use phone::Phone;
