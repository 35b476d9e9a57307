//! Dead events back in the queue. A replayed event keeps its stored lead event and its
//! rendered message: nothing is rebuilt from a payload, nothing is bought again.

use super::AdminError;
use crate::state::AppState;
use crate::store::Replay;

/// Puts one dead event back in the queue.
pub async fn replay(state: &AppState, id: i64) -> Result<(), AdminError> {
    match state.store.replay_event(id).await? {
        Replay::Replayed => {
            tracing::info!(event = id, "event replayed by an operator");
            state.wake_workers();
            Ok(())
        }
        Replay::NotFound => Err(AdminError::NotFound),
        Replay::NotReplayable { state } => Err(AdminError::Conflict(format!(
            "only dead events can be replayed; this one is {state}"
        ))),
    }
}

/// Puts every dead event back in the queue; returns how many.
pub async fn replay_dead(state: &AppState) -> Result<u64, AdminError> {
    let replayed = state.store.replay_dead().await?;
    tracing::info!(replayed, "dead events replayed by an operator");
    state.wake_workers();
    Ok(replayed)
}
