//! Per-provider protection around every call: a circuit breaker, a concurrency cap and a rate
//! limit, so an outage parks work instead of hammering the provider, and a burst never
//! exceeds the quota the provider sells.
//!
//! [`Guarded`] wraps an adapter and implements the same trait, so resolution and delivery
//! see one more error class ([`ProviderError::CircuitOpen`], transient with a retry-after)
//! and nothing else. Only transient failures (timeouts, 429, 5xx, connection failures, an
//! unanswered POST) count towards opening the breaker: a 4xx or an unreadable answer shows
//! the provider is up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{
    Candidates, CpfCandidate, CpfLookup, Crm, LeadPage, LeadQuery, NewCrmLead, PersonData,
    ProviderError,
};
use crate::domain::{ContactKey, Cpf, LeadId};
use crate::providers::work_api::WorkApiAnswer;

/// Limits of one provider.
#[derive(Debug, Clone, Copy)]
pub struct GuardSettings {
    /// Consecutive transient failures that open the breaker; 0 disables it.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through.
    pub breaker_open: Duration,
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// Calls started per second; 0 means no limit.
    pub max_calls_per_sec: f64,
}

/// The breaker's state, as `/ready` and the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; everyone else is turned away until it answers.
    HalfOpen,
}

/// The protection of one provider, shared by every caller.
#[derive(Debug)]
pub struct Guard {
    provider: &'static str,
    settings: GuardSettings,
    breaker: Mutex<Breaker>,
    slots: Semaphore,
    /// When the next call may start, for the rate limit.
    next_start: tokio::sync::Mutex<Instant>,
}

impl Guard {
    pub fn new(provider: &'static str, settings: GuardSettings) -> Guard {
        Guard {
            provider,
            settings,
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            slots: Semaphore::new(settings.max_concurrent.max(1)),
            next_start: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    pub fn provider(&self) -> &'static str {
        self.provider
    }

    pub fn state(&self) -> BreakerState {
        match &*self.lock() {
            Breaker::Closed { .. } => BreakerState::Closed,
            Breaker::Open { until } if Instant::now() >= *until => BreakerState::HalfOpen,
            Breaker::Open { .. } => BreakerState::Open,
            Breaker::HalfOpen => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // A panic while holding this lock leaves a valid state behind.
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `call` if the breaker lets it through, within the concurrency cap and the rate.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        self.admit()?;
        // The semaphore is never closed, so acquiring only waits.
        let _slot = self.slots.acquire().await;
        self.pace().await;
        let result = call.await;
        self.record(&result);
        result
    }

    fn admit(&self) -> Result<(), ProviderError> {
        if self.settings.breaker_failures == 0 {
            return Ok(());
        }
        let mut breaker = self.lock();
        match &*breaker {
            Breaker::Closed { .. } => Ok(()),
            Breaker::Open { until } => {
                let now = Instant::now();
                if now >= *until {
                    *breaker = Breaker::HalfOpen;
                    Ok(())
                } else {
                    Err(self.open_error(*until - now))
                }
            }
            Breaker::HalfOpen => Err(self.open_error(self.settings.breaker_open)),
        }
    }

    fn open_error(&self, retry_after: Duration) -> ProviderError {
        ProviderError::CircuitOpen {
            provider: self.provider,
            retry_after,
        }
    }

    fn record<T>(&self, result: &Result<T, ProviderError>) {
        if self.settings.breaker_failures == 0 {
            return;
        }
        let failed = result
            .as_ref()
            .err()
            .is_some_and(|e| e.is_transient() || matches!(e, ProviderError::Unanswered { .. }));
        let mut breaker = self.lock();
        let next = match (&*breaker, failed) {
            (_, false) => Breaker::Closed { failures: 0 },
            (Breaker::Closed { failures }, true)
                if failures + 1 < self.settings.breaker_failures =>
            {
                Breaker::Closed {
                    failures: failures + 1,
                }
            }
            (Breaker::Open { until }, true) => Breaker::Open { until: *until },
            (_, true) => {
                tracing::warn!(provider = self.provider, "circuit opened");
                Breaker::Open {
                    until: Instant::now() + self.settings.breaker_open,
                }
            }
        };
        *breaker = next;
    }

    /// Waits for this call's turn under the rate limit: starts are spaced evenly.
    async fn pace(&self) {
        if self.settings.max_calls_per_sec <= 0.0 {
            return;
        }
        let spacing = Duration::from_secs_f64(1.0 / self.settings.max_calls_per_sec);
        let start = {
            let mut next = self.next_start.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + spacing;
            start
        };
        // A start that is already due goes at once: a sleep until "now" still waits for the
        // timer's next millisecond.
        if start > Instant::now() {
            tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
        }
    }
}

/// An adapter behind its provider's [`Guard`].
pub struct Guarded<T> {
    pub inner: T,
    pub guard: std::sync::Arc<Guard>,
}

#[async_trait]
impl<T: CpfLookup> CpfLookup for Guarded<T> {
    async fn lookup(&self, key: &ContactKey) -> Result<Option<CpfCandidate>, ProviderError> {
        self.guard.call(self.inner.lookup(key)).await
    }

    async fn lookup_all(&self, key: &ContactKey) -> Result<Candidates, ProviderError> {
        self.guard.call(self.inner.lookup_all(key)).await
    }
}

#[async_trait]
impl<T: PersonData> PersonData for Guarded<T> {
    async fn fetch(&self, cpf: &Cpf) -> Result<(serde_json::Value, WorkApiAnswer), ProviderError> {
        self.guard.call(self.inner.fetch(cpf)).await
    }
}

#[async_trait]
impl<T: Crm> Crm for Guarded<T> {
    async fn post_message(&self, lead: &LeadId, body: &str) -> Result<(), ProviderError> {
        self.guard.call(self.inner.post_message(lead, body)).await
    }

    async fn create_lead(&self, lead: &NewCrmLead) -> Result<LeadId, ProviderError> {
        self.guard.call(self.inner.create_lead(lead)).await
    }

    async fn list_leads(&self, query: &LeadQuery) -> Result<LeadPage, ProviderError> {
        self.guard.call(self.inner.list_leads(query)).await
    }

    async fn subscribe(&self, url: &url::Url, events: &[&str]) -> Result<(), ProviderError> {
        self.guard.call(self.inner.subscribe(url, events)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(failures: u32, open_ms: u64) -> Guard {
        Guard::new(
            "test",
            GuardSettings {
                breaker_failures: failures,
                breaker_open: Duration::from_millis(open_ms),
                max_concurrent: 4,
                max_calls_per_sec: 0.0,
            },
        )
    }

    fn down() -> Result<(), ProviderError> {
        Err(ProviderError::Server {
            provider: "test",
            status: 503,
            retry_after: None,
        })
    }

    #[tokio::test]
    async fn consecutive_transient_failures_open_the_circuit_and_calls_fail_fast() {
        let g = guard(3, 60_000);
        for _ in 0..3 {
            assert!(g.call(async { down() }).await.is_err());
        }
        assert_eq!(g.state(), BreakerState::Open);
        let mut called = false;
        let err = g
            .call(async {
                called = true;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(!called, "an open circuit must not call the provider");
        assert_eq!(err.class(), "circuit_open");
        assert!(err.is_transient());
        assert!(
            err.retry_after()
                .is_some_and(|d| d > Duration::from_secs(50))
        );
    }

    #[tokio::test]
    async fn a_success_or_a_permanent_error_resets_the_count() {
        let g = guard(2, 60_000);
        assert!(g.call(async { down() }).await.is_err());
        let rejected = ProviderError::Client {
            provider: "test",
            status: 400,
        };
        assert!(g.call(async { Err::<(), _>(rejected) }).await.is_err());
        assert!(g.call(async { down() }).await.is_err());
        assert_eq!(g.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn after_the_open_period_one_probe_decides() {
        let g = guard(1, 1);
        assert!(g.call(async { down() }).await.is_err());
        assert_eq!(g.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(g.state(), BreakerState::HalfOpen);
        // A failed probe opens it again; a good one closes it.
        assert!(g.call(async { down() }).await.is_err());
        assert_eq!(g.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(5));
        assert!(g.call(async { Ok(()) }).await.is_ok());
        assert_eq!(g.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn calls_are_spaced_by_the_rate_limit() {
        let g = Guard::new(
            "test",
            GuardSettings {
                breaker_failures: 0,
                breaker_open: Duration::ZERO,
                max_concurrent: 10,
                max_calls_per_sec: 20.0,
            },
        );
        let started = Instant::now();
        let starts = std::sync::Mutex::new(Vec::new());
        futures::future::join_all((0..5).map(|_| {
            g.call(async {
                starts.lock().unwrap().push(started.elapsed());
                Ok::<_, ProviderError>(())
            })
        }))
        .await;
        let mut starts = starts.into_inner().unwrap();
        starts.sort();
        // Five starts at 20 per second span at least four gaps of 50 ms.
        assert!(
            starts[4] - starts[0] >= Duration::from_millis(195),
            "{starts:?}"
        );
    }

    #[tokio::test]
    async fn no_more_calls_than_the_cap_run_at_once() {
        let g = Guard::new(
            "test",
            GuardSettings {
                breaker_failures: 0,
                breaker_open: Duration::ZERO,
                max_concurrent: 2,
                max_calls_per_sec: 0.0,
            },
        );
        let running = std::sync::atomic::AtomicUsize::new(0);
        let peak = std::sync::atomic::AtomicUsize::new(0);
        futures::future::join_all((0..8).map(|_| {
            g.call(async {
                use std::sync::atomic::Ordering::SeqCst;
                let now = running.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, SeqCst);
                Ok::<_, ProviderError>(())
            })
        }))
        .await;
        assert_eq!(peak.into_inner(), 2);
    }
}
