//! Delivery: posting the rendered message on the lead, and the retry policy for a failed
//! attempt.
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

use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;

use crate::config::DeliverySettings;
use crate::domain::LeadId;
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

/// Delay before retry number `attempt` (1 = the first retry): exponential from
/// `base_delay_ms`, capped at `max_delay_secs`, with "equal jitter" (half fixed, half random)
/// so a burst of failures does not retry in lockstep; never shorter than the provider's
/// `Retry-After`.
pub fn backoff(policy: &DeliverySettings, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let cap = Duration::from_secs(policy.max_delay_secs);
    let exp = 2u64.saturating_pow(attempt.saturating_sub(1).min(32));
    let full = Duration::from_millis(policy.base_delay_ms.saturating_mul(exp)).min(cap);
    let half = full / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    let delay = half + Duration::from_millis(jitter);
    match retry_after {
        Some(ra) => delay.max(ra),
        None => delay,
    }
}

/// A failure that knows whether it is worth retrying.
pub trait Failure: std::fmt::Display {
    fn is_transient(&self) -> bool;
    fn retry_after(&self) -> Option<Duration>;
    /// The call was not made because the provider's circuit is open: the event waits for the
    /// provider instead of spending its attempts on an outage.
    fn is_parked(&self) -> bool {
        false
    }
}

impl Failure for crate::providers::ProviderError {
    fn is_transient(&self) -> bool {
        crate::providers::ProviderError::is_transient(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        crate::providers::ProviderError::retry_after(self)
    }
    fn is_parked(&self) -> bool {
        matches!(self, crate::providers::ProviderError::CircuitOpen { .. })
    }
}

impl Failure for crate::resolution::ResolveError {
    fn is_transient(&self) -> bool {
        crate::resolution::ResolveError::is_transient(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        crate::resolution::ResolveError::retry_after(self)
    }
    fn is_parked(&self) -> bool {
        matches!(self, crate::resolution::ResolveError::Provider(p) if p.is_parked())
    }
}

/// An unanswered POST that the repost allowance lets us send again: retried like any
/// transient failure.
struct Reposted(crate::providers::ProviderError);

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

/// [`after_failure`] for a failure that classifies itself.
pub fn after_error(
    policy: &DeliverySettings,
    event: &ClaimedEvent,
    error: &impl Failure,
) -> Finish {
    if error.is_parked() {
        // Not an attempt at the provider: not counted, and the event comes back
        // when the circuit lets a probe through (plus a little spread, so parked events do
        // not all return in the same instant).
        let spread = Duration::from_millis(rand::rng().random_range(0..=250));
        return Finish::Park {
            at: OffsetDateTime::now_utc() + error.retry_after().unwrap_or_default() + spread,
            error: error.to_string(),
        };
    }
    after_failure(
        policy,
        event,
        error.is_transient(),
        error.retry_after(),
        error.to_string(),
    )
}

/// What to do after a failed attempt: retry later, or give up when the attempts are spent
/// or the failure is permanent.
pub fn after_failure(
    policy: &DeliverySettings,
    event: &ClaimedEvent,
    transient: bool,
    retry_after: Option<Duration>,
    error: String,
) -> Finish {
    let attempt = u32::try_from(event.attempts).unwrap_or(0) + 1;
    if !transient {
        return Finish::Dead {
            reason: format!("permanent failure: {error}"),
        };
    }
    if attempt >= policy.max_attempts {
        return Finish::Dead {
            reason: format!("gave up after {attempt} attempts: {error}"),
        };
    }
    Finish::Retry {
        at: OffsetDateTime::now_utc() + backoff(policy, attempt, retry_after),
        error,
    }
}

/// Posts `message` on the event's lead and says how the event ends.
#[tracing::instrument(name = "deliver", skip_all, fields(event = event.id, lead = %lead))]
pub async fn deliver(
    state: &AppState,
    event: &ClaimedEvent,
    lead: &LeadId,
    message: &str,
) -> Finish {
    match state.store.mark_sending(event).await {
        Ok(true) => {}
        Ok(false) => {
            // Another worker owns the event now; whatever we return cannot be written.
            return Finish::Retry {
                at: OffsetDateTime::now_utc(),
                error: "claim lost before sending".into(),
            };
        }
        Err(e) => {
            return after_failure(
                &state.settings.delivery,
                event,
                true,
                None,
                format!("store: {e}"),
            );
        }
    }
    match state.crm.post_message(lead, message).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DeliverySettings {
        DeliverySettings {
            max_attempts: 5,
            base_delay_ms: 1000,
            max_delay_secs: 60,
            unknown_outcome_reposts: 0,
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_stops_at_the_cap() {
        let p = policy();
        for (attempt, full_ms) in [
            (1u32, 1000u64),
            (2, 2000),
            (3, 4000),
            (7, 60_000),
            (40, 60_000),
        ] {
            for _ in 0..50 {
                let d = backoff(&p, attempt, None).as_millis() as u64;
                assert!(d >= full_ms / 2 && d <= full_ms, "attempt {attempt}: {d}ms");
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_when_longer_than_the_backoff() {
        let d = backoff(&policy(), 1, Some(Duration::from_secs(30)));
        assert!(d >= Duration::from_secs(30));
    }

    fn event(attempts: i32) -> ClaimedEvent {
        ClaimedEvent {
            id: 1,
            claim: uuid::Uuid::nil(),
            source: "c2s".into(),
            lead_id: "L".into(),
            event_at: OffsetDateTime::UNIX_EPOCH,
            action: "on_create_lead".into(),
            payload: serde_json::Value::Null,
            attempts,
            contact_set: None,
            message: None,
            send_started: false,
            unknown_outcomes: 0,
        }
    }

    #[test]
    fn transient_failures_retry_until_the_attempts_are_spent() {
        let p = policy();
        assert!(matches!(
            after_failure(&p, &event(0), true, None, "5xx".into()),
            Finish::Retry { .. }
        ));
        assert!(matches!(
            after_failure(&p, &event(3), true, None, "5xx".into()),
            Finish::Retry { .. }
        ));
        match after_failure(&p, &event(4), true, None, "5xx".into()) {
            Finish::Dead { reason } => assert!(reason.contains("after 5 attempts"), "{reason}"),
            other => panic!("expected dead, got {other:?}"),
        }
    }

    #[test]
    fn permanent_failures_are_dead_at_once() {
        match after_failure(
            &policy(),
            &event(0),
            false,
            None,
            "c2s: rejected with 404".into(),
        ) {
            Finish::Dead { reason } => assert!(reason.contains("404")),
            other => panic!("expected dead, got {other:?}"),
        }
    }
}
