//! Forced refresh of one lead: enrich it again bypassing every tier, and post.

use time::OffsetDateTime;

use super::AdminError;
use crate::domain::LeadId;
use crate::event::Source;
use crate::state::AppState;
use crate::store::{InsertOutcome, NewEvent};

/// Queues a refresh of `lead`: its latest stored lead event again, with the action
/// [`crate::event::Action::Refresh`] and now as its time. The workers then buy fresh answers,
/// store them and post a new message, with the same ordering, retry and once-per-event
/// guarantees as any other event. Returns the new inbox event's id.
///
/// The raw payload of the queued row records the operator's request, not a copy of a
/// webhook: nothing here pretends to be a sender.
pub async fn refresh(state: &AppState, source: Source, lead: &LeadId) -> Result<i64, AdminError> {
    let latest = state
        .store
        .latest_event(source, lead)
        .await?
        .ok_or(AdminError::NotFound)?;
    let at = OffsetDateTime::now_utc();
    let at = at.replace_microsecond(at.microsecond()).unwrap_or(at);
    let payload = serde_json::json!({
        "requested_by": "operator",
        "action": "refresh",
        "at": at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    });
    let new = NewEvent::new(latest.refresh(at), payload);
    match state.store.insert_events(&[new]).await?.first() {
        Some(InsertOutcome::Accepted(id)) => {
            tracing::info!(lead = %lead, event = id, "refresh queued by an operator");
            state.wake_workers();
            Ok(*id)
        }
        _ => Err(AdminError::Conflict(
            "a refresh for this lead was queued at this same instant".into(),
        )),
    }
}
