//! Delivery: posting the rendered message on the lead, and the rule for a POST whose outcome
//! is unknown. How long a failed attempt waits is [`crate::retry`]'s business.
//!
//! A message is posted once per event. The rendered text is kept on the event before the
//! first attempt, so retries post the same text without resolving again; a "sending" mark is
//! written before each POST and cleared with its outcome.
//!
//! One rule for a POST whose outcome is unknown (sent, no answer), whether the answer timed
//! out or the process stopped mid-POST (found at claim time by the mark still set): it is
//! posted again at most `delivery.unknown_outcome_reposts` times (default 0), then
//! dead-lettered with [`UNKNOWN_OUTCOME`] for an operator to check the lead and replay. A
//! failure where nothing was sent (connection refused, connect timeout) retries normally.
//! So a CRM that accepts slowly gets at most `1 + unknown_outcome_reposts` copies.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::domain::LeadId;
use crate::metrics::Stage;
use crate::retry::{Failure, after_error, after_failure};
use crate::state::AppState;
use crate::store::{ClaimedEvent, Finish, Outcome};

/// Why an event whose POST went unanswered ends in the dead letters.
pub const UNKNOWN_OUTCOME: &str = "delivery outcome unknown: the message was sent and no answer \
     came (a timeout, or the process stopped mid-POST); check the lead in the CRM, then replay \
     to post it";

/// What to do with a POST of `event` whose outcome is unknown, given how many of its POSTs
/// went unanswered before this one: post again (after counting this one), or give up.
/// `Ok(())` means "post again"; the count is recorded first, so a crash right after cannot
/// grant an extra copy.
pub async fn after_unknown_outcome(state: &AppState, event: &ClaimedEvent) -> Result<(), Finish> {
    let before = u32::try_from(event.unknown_outcomes).unwrap_or(0);
    if before >= state.settings.delivery.unknown_outcome_reposts {
        return Err(Finish::Dead {
            reason: UNKNOWN_OUTCOME.into(),
        });
    }
    match state.store.note_unknown_outcome(event).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Finish::Retry {
            at: OffsetDateTime::now_utc(),
            error: "claim lost before sending".into(),
        }),
        Err(e) => Err(after_failure(
            &state.settings.delivery,
            event,
            true,
            None,
            format!("store: {e}"),
        )),
    }
}

/// An unanswered POST that the repost allowance lets us send again: retried like any
/// transient failure.
pub(crate) struct Reposted(pub(crate) crate::providers::ProviderError);

impl std::fmt::Display for Reposted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Failure for Reposted {
    fn is_transient(&self) -> bool {
        true
    }
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Marks the event as sending, then posts `message` on its lead; says how the event ends.
pub async fn deliver(
    state: &AppState,
    event: &ClaimedEvent,
    lead: &LeadId,
    message: &str,
) -> Finish {
    match state.store.mark_sending(event).await {
        Ok(true) => post(state, event, lead, message).await,
        Ok(false) => claim_lost(),
        Err(e) => after_failure(
            &state.settings.delivery,
            event,
            true,
            None,
            format!("store: {e}"),
        ),
    }
}

/// What an event whose claim another worker took over ends with here. Nothing of it can be
/// written any more (every write names the claim); the other worker carries it on.
pub fn claim_lost() -> Finish {
    Finish::Retry {
        at: OffsetDateTime::now_utc(),
        error: "claim lost before sending".into(),
    }
}

/// Posts `message` on the event's lead, the "sending" mark already committed, and says how
/// the event ends.
#[tracing::instrument(name = "deliver", skip_all, fields(event = event.id, lead = %lead))]
pub async fn post(state: &AppState, event: &ClaimedEvent, lead: &LeadId, message: &str) -> Finish {
    let posting = Instant::now();
    let answer = state.crm.post_message(lead, message).await;
    state.metrics.stage(Stage::Post, posting.elapsed());
    match answer {
        Ok(()) => {
            state.metrics.delivery("ok");
            tracing::info!("message delivered");
            Finish::Done {
                outcome: Outcome::Delivered,
                contact_set: None,
            }
        }
        Err(e @ crate::providers::ProviderError::Unanswered { .. }) => {
            state.metrics.delivery(e.class());
            tracing::warn!(error = %e, attempt = event.attempts + 1, "delivery outcome unknown");
            match after_unknown_outcome(state, event).await {
                Ok(()) => after_error(&state.settings.delivery, event, &Reposted(e)),
                Err(finish) => finish,
            }
        }
        Err(e) => {
            state.metrics.delivery(e.class());
            tracing::warn!(error = %e, class = e.class(), attempt = event.attempts + 1, "delivery failed");
            after_error(&state.settings.delivery, event, &e)
        }
    }
}
