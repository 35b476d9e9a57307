//! The tiers as operators see and steer them: which tier answers a key right now (never a
//! provider call), and warming memory from the database.

use super::AdminError;
use crate::domain::{ContactKey, Cpf, Person};
use crate::state::AppState;
use crate::store::{Lookup, StoreError};

/// The tier that would answer a lookup now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Database,
    /// Nothing held: the next lookup calls the provider.
    None,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Database => "database",
            Tier::None => "none",
        }
    }
}

/// What memory, else the database, holds for a contact; never calls a provider.
pub async fn inspect_contact(
    state: &AppState,
    key: &ContactKey,
) -> Result<(Tier, Option<Lookup<Cpf>>), AdminError> {
    if let Some(answer) = state.resolver.peek_contact(key).await {
        return Ok((Tier::Memory, Some(answer)));
    }
    Ok(match state.store.find_contact(key).await? {
        Some(answer) => (Tier::Database, Some(answer)),
        None => (Tier::None, None),
    })
}

/// What memory, else the database (within the maximum age), holds for a CPF; never calls a
/// provider.
pub async fn inspect_person(
    state: &AppState,
    cpf: &Cpf,
) -> Result<(Tier, Option<Lookup<Person>>), AdminError> {
    match state.resolver.peek_person(cpf).await {
        Some(Lookup::Found(p)) => return Ok((Tier::Memory, Some(Lookup::Found((*p).clone())))),
        Some(Lookup::NotFound) => return Ok((Tier::Memory, Some(Lookup::NotFound))),
        None => {}
    }
    let since = time::OffsetDateTime::now_utc() - state.resolver.ttls().max_age;
    Ok(match state.store.find_person(cpf, since).await? {
        Some(Lookup::Found(p)) => (Tier::Database, Some(Lookup::Found(p.person))),
        Some(Lookup::NotFound) => (Tier::Database, Some(Lookup::NotFound)),
        None => (Tier::None, None),
    })
}

/// People read from the database per page while warming: what warming holds beyond the
/// memory tier itself is one page of rows (a few MiB at 1 000 people), whatever the limit.
pub const WARM_PAGE: u32 = 1_000;

/// Loads up to `limit` recently enriched people into memory, newest first, one page at a
/// time; used by the route and at start.
pub async fn warm(state: &AppState, limit: u32) -> Result<usize, StoreError> {
    warm_in_pages(state, limit, WARM_PAGE).await
}

/// [`warm`] with the page size given.
pub async fn warm_in_pages(state: &AppState, limit: u32, page: u32) -> Result<usize, StoreError> {
    let page = page.max(1);
    let mut loaded = 0usize;
    let mut after = None;
    while loaded < limit as usize {
        let want = page.min(limit - loaded as u32);
        let people = state.store.recent_people(after, want).await?;
        let last_page = people.len() < want as usize;
        after = people.last().map(|p| p.position);
        loaded += state
            .resolver
            .warm(people.into_iter().map(|p| (p.cpf, p.person, p.lookup_keys)))
            .await;
        if last_page {
            break;
        }
    }
    Ok(loaded)
}
