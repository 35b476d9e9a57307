//! Memory invalidations shared between instances: what a broadcast says, and the listener that
//! applies other instances' broadcasts to this one's memory.
//!
//! A broadcast names keys by a keyed hash (SHA-256 under a secret every instance on the
//! database shares, truncated to 64 bits), never by value: notifications can reach server
//! logs, and a plain hash of a CPF is reversed by trying the billion candidates. The receiver
//! finds its entries by hashing the keys it holds, one pass over memory per broadcast; that is
//! cheap next to the paid call or the operator action that caused the broadcast.
//!
//! When the listening connection is lost, notifications may have been missed, so the whole
//! memory tier is dropped (correctness over hit ratio) and the listener subscribes again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::Resolver;
use crate::metrics::Metrics;
use crate::store::{Coordination, Subscription};

/// Payload version: a future format is ignored by this one rather than misread.
const VERSION: &str = "v1";
/// Hashes per notification; Postgres caps a payload at 8000 bytes.
const HASHES_PER_MESSAGE: usize = 300;

/// What a broadcast asks every other instance to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// Every entry.
    All,
    /// The entries with these key hashes.
    Keys(Vec<String>),
}

impl Invalidation {
    /// Payloads for `pg_notify`: `v1 <origin> all`, or `v1 <origin> keys <hash>...` in chunks.
    pub fn encode(&self, origin: &str) -> Vec<String> {
        match self {
            Invalidation::All => vec![format!("{VERSION} {origin} all")],
            Invalidation::Keys(hashes) => hashes
                .chunks(HASHES_PER_MESSAGE)
                .map(|chunk| format!("{VERSION} {origin} keys {}", chunk.join(" ")))
                .collect(),
        }
    }

    /// The invalidation in a payload, unless it came from `me` or is not understood.
    pub fn decode(payload: &str, me: &str) -> Option<Invalidation> {
        let mut parts = payload.split(' ');
        if parts.next()? != VERSION {
            return None;
        }
        if parts.next()? == me {
            return None;
        }
        match parts.next()? {
            "all" => Some(Invalidation::All),
            "keys" => Some(Invalidation::Keys(parts.map(str::to_owned).collect())),
            _ => None,
        }
    }
}

/// The keyed hash of a cache key (`tag` says which kind), 16 hex digits.
pub fn key_hash(secret: &[u8], tag: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update((secret.len() as u64).to_be_bytes());
    h.update(secret);
    h.update(tag.as_bytes());
    h.update(b":");
    h.update(value.as_bytes());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where the listener stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerState {
    /// A single-instance backend: nothing to listen to.
    Off,
    /// Subscribed; invalidations arrive.
    Listening,
    /// Not subscribed right now; memory was dropped and a new subscription is being made.
    Reconnecting,
}

impl ListenerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerState::Off => "off",
            ListenerState::Listening => "listening",
            ListenerState::Reconnecting => "reconnecting",
        }
    }
}

/// The listener's state, shared with `/ready`.
#[derive(Debug, Default)]
pub struct ListenerStatus(AtomicU8);

impl ListenerStatus {
    pub fn get(&self) -> ListenerState {
        match self.0.load(Ordering::Relaxed) {
            1 => ListenerState::Listening,
            2 => ListenerState::Reconnecting,
            _ => ListenerState::Off,
        }
    }

    fn set(&self, state: ListenerState) {
        let v = match state {
            ListenerState::Off => 0,
            ListenerState::Listening => 1,
            ListenerState::Reconnecting => 2,
        };
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Subscribes for the first time, before memory is filled (warm-up), so nothing cached here
/// predates the subscription. `None` on a single-instance backend.
pub async fn subscribe(
    store: &dyn Coordination,
    resolver: &Resolver,
) -> Result<Option<Box<dyn Subscription>>, crate::store::StoreError> {
    let subscription = store.subscribe().await?;
    if subscription.is_some() {
        resolver.listener.set(ListenerState::Listening);
    }
    Ok(subscription)
}

/// Applies other instances' broadcasts until `shutdown`; on a lost connection drops all of
/// memory, counts a reconnect and subscribes again, with backoff while the database is away.
pub async fn listen(
    store: Arc<dyn Coordination>,
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
    first: Option<Box<dyn Subscription>>,
    shutdown: CancellationToken,
) {
    let Some(mut subscription) = first else {
        return;
    };
    loop {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = subscription.next() => next,
            };
            match next {
                Ok(Some(payload)) => resolver.apply(&payload).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "invalidation listener failed");
                    break;
                }
            }
        }
        drop(subscription);
        resolver.listener.set(ListenerState::Reconnecting);
        // Whatever was broadcast from now until the new subscription is lost to us.
        resolver.forget_all_here().await;
        tracing::warn!("invalidation listener lost its connection; memory dropped");
        let mut pause = Duration::from_millis(100);
        subscription = loop {
            match store.subscribe().await {
                Ok(Some(s)) => break s,
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "subscribing to invalidations failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        };
        // Entries cached while unsubscribed may have missed an invalidation too.
        resolver.forget_all_here().await;
        resolver.listener.set(ListenerState::Listening);
        metrics.listener_reconnected();
        tracing::info!("invalidation listener subscribed again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_reads_back_except_by_its_sender() {
        let keys = Invalidation::Keys(vec!["00ff".into(), "aa11".into()]);
        let payloads = keys.encode("me");
        assert_eq!(payloads, vec!["v1 me keys 00ff aa11".to_owned()]);
        assert_eq!(Invalidation::decode(&payloads[0], "other"), Some(keys));
        assert_eq!(Invalidation::decode(&payloads[0], "me"), None);
        assert_eq!(
            Invalidation::decode("v1 x all", "me"),
            Some(Invalidation::All)
        );
        assert_eq!(Invalidation::decode("v2 x all", "me"), None);
    }

    #[test]
    fn long_key_lists_are_split_below_the_payload_limit() {
        let hashes: Vec<String> = (0..700).map(|i| format!("{i:016x}")).collect();
        let payloads = Invalidation::Keys(hashes).encode("0123456789abcdef0123456789abcdef");
        assert_eq!(payloads.len(), 3);
        assert!(payloads.iter().all(|p| p.len() < 8000));
    }

    #[test]
    fn key_hashes_depend_on_the_secret_and_hide_the_value() {
        let a = key_hash(b"secret-a", "cpf", "09925419050");
        assert_eq!(a.len(), 16);
        assert_ne!(a, key_hash(b"secret-b", "cpf", "09925419050"));
        assert_ne!(a, key_hash(b"secret-a", "phone", "09925419050"));
        assert!(!a.contains("0992541"));
    }
}
