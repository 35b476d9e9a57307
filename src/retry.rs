//! The retry policy: what a failed attempt at an event turns into (retry later, park, or
//! dead letter) and how long it waits. It governs every failure an event meets on its way,
//! provider lookups, store writes and the CRM POST alike, so it lives apart from any one of
//! them; its settings are `delivery.max_attempts`, `delivery.base_delay_ms` and
//! `delivery.max_delay_secs` (the names operators already set).
//!
//! Delays are exponential with full jitter: retry `n` waits a uniform random time in
//! `[0, min(cap, base * 2^(n-1))]`. Full jitter spreads a burst of events that failed
//! together (a provider outage) across the whole window, so they do not return in lockstep
//! and hammer the provider at the same instants; a provider's `Retry-After` is kept as a
//! floor. Pure decisions: no I/O.

use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;

use crate::config::DeliverySettings;
use crate::store::{ClaimedEvent, Finish};

/// The ceiling of the wait before retry number `attempt` (1 = the first retry):
/// `base_delay_ms * 2^(attempt-1)`, capped at `max_delay_secs`.
pub fn ceiling(policy: &DeliverySettings, attempt: u32) -> Duration {
    let cap = Duration::from_secs(policy.max_delay_secs);
    let exp = 2u64.saturating_pow(attempt.saturating_sub(1).min(32));
    Duration::from_millis(policy.base_delay_ms.saturating_mul(exp)).min(cap)
}

/// Delay before retry number `attempt`: full jitter under [`ceiling`], never shorter than
/// the provider's `Retry-After`.
pub fn backoff(policy: &DeliverySettings, attempt: u32, retry_after: Option<Duration>) -> Duration {
    backoff_with(policy, attempt, retry_after, |max| {
        rand::rng().random_range(0..=max)
    })
}

/// [`backoff`] with the random source given: `draw(max)` returns a number of milliseconds in
/// `0..=max`. Tests pass fixed draws to check the bounds exactly.
pub fn backoff_with(
    policy: &DeliverySettings,
    attempt: u32,
    retry_after: Option<Duration>,
    draw: impl FnOnce(u64) -> u64,
) -> Duration {
    let max = u64::try_from(ceiling(policy, attempt).as_millis()).unwrap_or(u64::MAX);
    let delay = Duration::from_millis(draw(max).min(max));
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
    fn the_ceiling_doubles_from_the_base_and_stops_at_the_cap() {
        let p = policy();
        for (attempt, ms) in [
            (0u32, 1000u64),
            (1, 1000),
            (2, 2000),
            (3, 4000),
            (6, 32_000),
            (7, 60_000),
            (40, 60_000),
            (u32::MAX, 60_000),
        ] {
            assert_eq!(
                ceiling(&p, attempt),
                Duration::from_millis(ms),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn full_jitter_spans_from_zero_to_the_ceiling() {
        let p = policy();
        for attempt in [1u32, 2, 3, 7, 40] {
            let top = ceiling(&p, attempt);
            assert_eq!(backoff_with(&p, attempt, None, |_| 0), Duration::ZERO);
            assert_eq!(backoff_with(&p, attempt, None, |max| max), top);
            assert_eq!(backoff_with(&p, attempt, None, |max| max / 2), top / 2);
            // A source that overshoots is held to the ceiling.
            assert_eq!(backoff_with(&p, attempt, None, |_| u64::MAX), top);
        }
    }

    #[test]
    fn the_random_source_is_asked_for_the_ceiling_in_milliseconds() {
        let mut asked = None;
        backoff_with(&policy(), 3, None, |max| {
            asked = Some(max);
            0
        });
        assert_eq!(asked, Some(4000));
    }

    #[test]
    fn the_real_source_stays_within_the_bounds_and_is_not_constant() {
        let p = policy();
        let draws: Vec<Duration> = (0..200).map(|_| backoff(&p, 3, None)).collect();
        assert!(
            draws.iter().all(|d| *d <= Duration::from_secs(4)),
            "{draws:?}"
        );
        // Full jitter has no floor: some draws fall in the lower half of the window.
        assert!(
            draws.iter().any(|d| *d < Duration::from_secs(2)),
            "{draws:?}"
        );
        assert!(draws.iter().any(|d| *d != draws[0]), "{draws:?}");
    }

    #[test]
    fn retry_after_is_a_floor_under_the_jitter() {
        let p = policy();
        let ra = Some(Duration::from_secs(30));
        assert_eq!(backoff_with(&p, 1, ra, |_| 0), Duration::from_secs(30));
        assert_eq!(backoff_with(&p, 1, ra, |max| max), Duration::from_secs(30));
        // Above the jitter's window, Retry-After decides; below it, the draw does.
        let short = Some(Duration::from_millis(100));
        assert_eq!(
            backoff_with(&p, 7, short, |max| max),
            Duration::from_secs(60)
        );
        assert_eq!(
            backoff_with(&p, 7, short, |_| 0),
            Duration::from_millis(100)
        );
    }

    fn event(attempts: i32) -> ClaimedEvent {
        ClaimedEvent {
            id: 1,
            claim: uuid::Uuid::nil(),
            source: "c2s".into(),
            lead_id: "L".into(),
            event_at: OffsetDateTime::UNIX_EPOCH,
            action: "on_create_lead".into(),
            erased: false,
            lead_event: None,
            attempts,
            contact_set: None,
            message: None,
            send_started: false,
            unknown_outcomes: 0,
            due_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_retry_is_due_within_the_ceiling_from_now() {
        let p = policy();
        let before = OffsetDateTime::now_utc();
        match after_failure(&p, &event(2), true, None, "5xx".into()) {
            Finish::Retry { at, .. } => {
                let after = OffsetDateTime::now_utc();
                assert!(at >= before && at <= after + Duration::from_secs(4), "{at}");
            }
            other => panic!("expected a retry, got {other:?}"),
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
