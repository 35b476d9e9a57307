//! Why a personal identifier or lead id was refused.
//!
//! Inputs here are personal data (phones, e-mails, CPFs), and these errors end up in logs and
//! API responses, so no variant ever carries or prints the rejected value: only a fixed reason.

/// A value that could not become one of the domain types. Messages never include the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("value is empty")]
    Empty,
    /// Syntactically plausible but obviously filler (`11111111111`, `teste@teste.com`).
    #[error("value is a placeholder: {0}")]
    Placeholder(&'static str),
    #[error("invalid phone number: {0}")]
    InvalidPhone(&'static str),
    #[error("phone number is not Brazilian")]
    NotBrazilian,
    #[error("invalid e-mail address: {0}")]
    InvalidEmail(&'static str),
    #[error("invalid CPF: {0}")]
    InvalidCpf(&'static str),
    #[error("invalid CNPJ: {0}")]
    InvalidCnpj(&'static str),
    #[error("invalid lead id: {0}")]
    InvalidLeadId(&'static str),
}
