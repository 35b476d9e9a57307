//! What operators can do, as plain async functions over [`AppState`]: the admin HTTP
//! handlers (`crate::operators`), the command line and tests call these same functions, so
//! an operation means one thing whichever way it is asked for.
//!
//! Each function owns its orchestration (store, resolver, broadcasts, metrics) and answers
//! with a typed result; turning that into a status code is the handler's business.

pub mod cache;
pub mod erasure;
pub mod events;
pub mod leads;

use crate::store::StoreError;

/// Why an operator's action could not be done.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Nothing known by that name.
    #[error("not found")]
    NotFound,
    /// The request contradicts the current state; the text says why.
    #[error("{0}")]
    Conflict(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}
