//! Resolution: contact -> CPF -> person, cheapest tier first, each purchase made once.
//!
//! Tiers for a contact key: memory (moka), then the database, then Diretrix; for a CPF:
//! memory, then the database, then the Work API. "Nobody" answers are remembered like found
//! ones, with the shorter TTL, in memory and in the database. Concurrent requests for one key
//! share one load (moka's `try_get_with` coalesces them), so a burst for one new contact costs
//! one call per provider. [`Resolver::load_contact`] and [`Resolver::load_person`] are the
//! single-flight points: a cross-instance lock wraps exactly those (on Postgres, an advisory
//! lock per key; the loser of a race waits, reads the winner's stored answer and pays nothing).
//! Whatever drops a key from memory here (erasure, operators, a refresh, a re-purchase after
//! `max_age`) is broadcast to the other instances, which drop it too ([`invalidation`]).
//! This module decides no delivery policy and renders nothing.

pub mod invalidation;
pub mod packed;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use time::OffsetDateTime;

use crate::domain::{ContactKey, Cpf, Person};
use crate::metrics::{LookupKind, LookupResult, Metrics, Provider};
use crate::providers::work_api::WorkApiAnswer;
use crate::providers::{CpfLookup, PersonData, ProviderError};
use crate::store::{DynStore, LockSpace, Lookup, StoreError};

use self::invalidation::{Invalidation, ListenerStatus};
use self::packed::{PackedPerson, UnpackError, entry_weight};

/// How long a paid answer's write keeps being retried while the database is unreachable.
/// Giving up means the event is retried and the provider paid again, so this covers a
/// database restart or failover (seconds); the event's lease is renewed by its heartbeat
/// meanwhile, so no other instance takes the event over while the answer waits here.
const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// Runs a write of a paid answer until it succeeds, fails for another reason than the
/// database being unreachable, or [`STORE_PATIENCE`] runs out. The answer stays in this
/// single-flight load meanwhile, so every waiter gets it once it is stored.
async fn keep_trying<F, Fut>(mut write: F) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let deadline = Instant::now() + STORE_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        match write().await {
            Err(StoreError::Unavailable(e)) if Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, "storing a paid answer failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

impl ResolveError {
    pub fn is_transient(&self) -> bool {
        match self {
            // The database coming back is worth waiting for; data it refuses is not.
            ResolveError::Store(e) => e.is_transient(),
            ResolveError::Provider(p) => p.is_transient(),
            // A defect, not an outage: the same bytes read back the same way every time.
            ResolveError::Unpack(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ResolveError::Provider(p) => p.retry_after(),
            ResolveError::Store(_) | ResolveError::Unpack(_) => None,
        }
    }
}

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Database,
    Provider,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Database => "database",
            Tier::Provider => "provider",
        }
    }
}

/// One memory cache for both kinds of key, so they share one byte budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Contact(ContactKey),
    Person(Cpf),
}

#[derive(Debug, Clone)]
enum Answer {
    Contact(Lookup<Cpf>),
    /// The person packed: see [`packed`] for why.
    Person(Lookup<PackedPerson>),
}

/// A cached answer with what moka needs to expire and weigh it, and where it came from.
#[derive(Debug, Clone)]
struct Cached {
    answer: Answer,
    ttl: Duration,
    weight: u32,
    source: Tier,
}

struct PerEntryTtl;

impl Expiry<CacheKey, Cached> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Cached,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Time-to-live settings of the tiers.
#[derive(Debug, Clone, Copy)]
pub struct Ttls {
    pub positive: Duration,
    pub negative: Duration,
    /// Person data older than this is bought again.
    pub max_age: Duration,
}

pub struct Resolver {
    /// Durable tier, shared with every instance.
    store: DynStore,
    cpf_lookup: Arc<dyn CpfLookup>,
    person_data: Arc<dyn PersonData>,
    /// Memory tier; also the single-flight point (concurrent misses share one load).
    cache: Cache<CacheKey, Cached>,
    ttls: Ttls,
    /// Lookup, provider and money counters.
    metrics: Arc<Metrics>,
    /// How long a purchase waits for another instance buying the same key.
    lock_wait: Duration,
    /// Names this instance in its broadcasts, so it skips its own.
    origin: String,
    /// Key of the hashes that name keys in broadcasts; empty where nothing is broadcast.
    secret: Vec<u8>,
    /// The state of this instance's invalidation listener, for `/ready`.
    listener: ListenerStatus,
    /// Bumped by every invalidation, here or from another instance, so that loads in flight
    /// across one know not to keep their answer.
    invalidations: AtomicU64,
}

impl Resolver {
    pub fn new(
        store: DynStore,
        cpf_lookup: Arc<dyn CpfLookup>,
        person_data: Arc<dyn PersonData>,
        ttls: Ttls,
        max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Resolver {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &CacheKey, v: &Cached| v.weight)
            .expire_after(PerEntryTtl)
            .build();
        Resolver {
            store,
            cpf_lookup,
            person_data,
            cache,
            ttls,
            metrics,
            lock_wait: Duration::from_secs(20),
            origin: uuid::Uuid::new_v4().simple().to_string(),
            secret: Vec::new(),
            listener: ListenerStatus::default(),
            invalidations: AtomicU64::new(0),
        }
    }

    /// Sets how long a purchase waits for another instance, and the shared secret broadcasts
    /// hash keys with (`None` on a single-instance backend).
    pub fn with_coordination(mut self, lock_wait: Duration, secret: Option<Vec<u8>>) -> Resolver {
        self.lock_wait = lock_wait;
        self.secret = secret.unwrap_or_default();
        self
    }

    /// Who this contact is: a CPF, or nobody. Returns the tier that answered.
    #[tracing::instrument(name = "resolve.contact", skip_all, fields(key = %key))]
    pub async fn contact(&self, key: &ContactKey) -> Result<(Lookup<Cpf>, Tier), ResolveError> {
        let cache_key = CacheKey::Contact(key.clone());
        match self
            .through_tiers(cache_key, LookupKind::Contact, self.load_contact(key))
            .await?
        {
            (Answer::Contact(answer), tier) => Ok((answer, tier)),
            (Answer::Person(_), _) => unreachable!("contact keys hold contact answers"),
        }
    }

    /// What is known of this CPF: person data, or nobody. Returns the tier that answered.
    #[tracing::instrument(name = "resolve.person", skip_all, fields(cpf = %cpf))]
    pub async fn person(&self, cpf: &Cpf) -> Result<(Lookup<Arc<Person>>, Tier), ResolveError> {
        let cache_key = CacheKey::Person(cpf.clone());
        match self
            .through_tiers(cache_key, LookupKind::Cpf, self.load_person(cpf))
            .await?
        {
            (Answer::Person(answer), tier) => Ok((unpacked(&answer)?, tier)),
            (Answer::Contact(_), _) => unreachable!("person keys hold person answers"),
        }
    }

    /// Memory first; on a miss `load` runs once however many callers wait for the same key
    /// (the single-flight point). Counts the lookup by the tier that answered.
    async fn through_tiers(
        &self,
        key: CacheKey,
        kind: LookupKind,
        load: impl Future<Output = Result<Cached, ResolveError>>,
    ) -> Result<(Answer, Tier), ResolveError> {
        let invalidations_before = self.invalidations.load(Ordering::SeqCst);
        let entry = self
            .cache
            .entry(key.clone())
            .or_try_insert_with(load)
            .await
            .map_err(|e| (*e).clone())?;
        // A load that read the database before an invalidation (an erasure, a cache drop)
        // would otherwise put what was dropped back into memory after the drop. This caller
        // still gets the answer; memory does not keep it, and the next lookup reads again.
        if entry.is_fresh() && self.invalidations.load(Ordering::SeqCst) != invalidations_before {
            self.cache.invalidate(&key).await;
        }
        // Fresh means this call's load ran; a coalesced waiter or a plain hit is memory.
        let tier = if entry.is_fresh() {
            entry.value().source
        } else {
            Tier::Memory
        };
        let answer = entry.into_value().answer;
        let found = match &answer {
            Answer::Contact(a) => matches!(a, Lookup::Found(_)),
            Answer::Person(a) => matches!(a, Lookup::Found(_)),
        };
        self.count(kind, tier, found);
        tracing::debug!(
            kind = kind.as_str(),
            tier = tier.as_str(),
            found,
            "resolved"
        );
        Ok((answer, tier))
    }

    /// Database, then Diretrix. The answer bought is stored before it is returned. Between
    /// instances, the purchase runs under the key's lock, and the database is read again
    /// once the lock is ours: whoever waited finds the winner's answer there.
    async fn load_contact(&self, key: &ContactKey) -> Result<Cached, ResolveError> {
        if let Some(known) = self.known_contact(key).await? {
            return Ok(known);
        }
        let name = format!("{}:{}", key.kind().as_str(), key.value());
        let lock = self
            .store
            .lock_key(LockSpace::Contact, &name, self.lock_wait)
            .await?;
        let loaded = match lock {
            Some(_) => match self.known_contact(key).await {
                Ok(Some(known)) => Ok(known),
                Ok(None) => self.buy_contact(key).await,
                Err(e) => Err(e),
            },
            None => self.buy_contact(key).await,
        };
        // Freed after the answer is committed, so the next holder reads it.
        if let Some(lock) = lock {
            lock.release().await;
        }
        loaded
    }

    async fn known_contact(&self, key: &ContactKey) -> Result<Option<Cached>, ResolveError> {
        Ok(self.store.find_contact(key).await?.map(|known| {
            let weight = entry_weight(key.value().len());
            self.cached_contact(known, weight, Tier::Database)
        }))
    }

    /// Database (fresh enough), then the Work API. Stored before it is returned; locked
    /// between instances like [`Resolver::load_contact`].
    async fn load_person(&self, cpf: &Cpf) -> Result<Cached, ResolveError> {
        if let Some(known) = self.known_person(cpf).await? {
            return Ok(known);
        }
        let lock = self
            .store
            .lock_key(LockSpace::Cpf, cpf.as_str(), self.lock_wait)
            .await?;
        let loaded = match lock {
            Some(_) => match self.known_person(cpf).await {
                Ok(Some(known)) => Ok(known),
                Ok(None) => self.buy_person(cpf).await,
                Err(e) => Err(e),
            },
            None => self.buy_person(cpf).await,
        };
        if let Some(lock) = lock {
            lock.release().await;
        }
        loaded
    }

    async fn known_person(&self, cpf: &Cpf) -> Result<Option<Cached>, ResolveError> {
        let fresh_since = OffsetDateTime::now_utc() - self.ttls.max_age;
        Ok(self
            .store
            .find_person(cpf, fresh_since)
            .await?
            .map(|known| {
                let answer = match known {
                    Lookup::Found(stored) => Lookup::Found(PackedPerson::pack(&stored.person)),
                    Lookup::NotFound => Lookup::NotFound,
                };
                self.cached_person(answer, Tier::Database)
            }))
    }

    /// Calls Diretrix and stores the answer before returning it.
    async fn buy_contact(&self, key: &ContactKey) -> Result<Cached, ResolveError> {
        let started = std::time::Instant::now();
        let result = self.cpf_lookup.lookup(key).await;
        self.count_call(Provider::Diretrix, &result, started.elapsed());
        let answer = match result? {
            Some(c) => Lookup::Found((c.cpf, c.name)),
            None => Lookup::NotFound,
        };
        let until = self.negative_until();
        keep_trying(|| self.store.record_contact(key, &answer, until)).await?;
        let answer = match answer {
            Lookup::Found((cpf, _)) => Lookup::Found(cpf),
            Lookup::NotFound => Lookup::NotFound,
        };
        Ok(self.cached_contact(answer, entry_weight(key.value().len()), Tier::Provider))
    }

    /// Calls the Work API and stores the answer before returning it.
    async fn buy_person(&self, cpf: &Cpf) -> Result<Cached, ResolveError> {
        let started = std::time::Instant::now();
        let result = self.person_data.fetch(cpf).await;
        self.count_call(Provider::WorkApi, &result, started.elapsed());
        let (raw, answer) = result?;
        let answer = match answer {
            WorkApiAnswer::Found(person) => Lookup::Found((raw, person)),
            WorkApiAnswer::NotFound => Lookup::NotFound,
        };
        let until = self.negative_until();
        keep_trying(|| {
            self.store
                .record_person(cpf, &answer, Provider::WorkApi, until)
        })
        .await?;
        // Another instance may still hold an older answer in memory (data past `max_age`,
        // or the answer a refresh replaces): it drops it and reads this one.
        self.broadcast(Invalidation::Keys(vec![
            self.hashed(&CacheKey::Person(cpf.clone())),
        ]))
        .await;
        let answer = match answer {
            Lookup::Found((_, person)) => Lookup::Found(PackedPerson::pack(&person)),
            Lookup::NotFound => Lookup::NotFound,
        };
        Ok(self.cached_person(answer, Tier::Provider))
    }

    fn count_call<T>(&self, provider: Provider, result: &Result<T, ProviderError>, took: Duration) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.class(),
        };
        self.metrics.provider_call(provider, outcome, took);
    }

    fn count(&self, kind: LookupKind, tier: Tier, found: bool) {
        let result = match (tier, found) {
            (Tier::Provider, _) => LookupResult::ProviderCall,
            (_, false) => LookupResult::NegativeHit,
            (Tier::Memory, true) => LookupResult::MemoryHit,
            (Tier::Database, true) => LookupResult::DatabaseHit,
        };
        self.metrics.lookup(kind, result);
    }

    fn negative_until(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.ttls.negative
    }

    fn cached_contact(&self, answer: Lookup<Cpf>, weight: u32, source: Tier) -> Cached {
        let ttl = match answer {
            Lookup::Found(_) => self.ttls.positive,
            Lookup::NotFound => self.ttls.negative,
        };
        Cached {
            answer: Answer::Contact(answer),
            ttl,
            weight,
            source,
        }
    }

    fn cached_person(&self, answer: Lookup<PackedPerson>, source: Tier) -> Cached {
        // The CPF key is inline in the entry; the packed person is its payload.
        let (ttl, weight) = match &answer {
            Lookup::Found(p) => (self.ttls.positive, entry_weight(p.len())),
            Lookup::NotFound => (self.ttls.negative, entry_weight(0)),
        };
        Cached {
            answer: Answer::Person(answer),
            ttl,
            weight,
            source,
        }
    }

    /// Buys a contact's answer again, bypassing every tier, and keeps it in memory.
    pub async fn refresh_contact(&self, key: &ContactKey) -> Result<Lookup<Cpf>, ResolveError> {
        let cached = self.buy_contact(key).await?;
        self.metrics
            .lookup(LookupKind::Contact, LookupResult::ProviderCall);
        let answer = match &cached.answer {
            Answer::Contact(a) => a.clone(),
            Answer::Person(_) => unreachable!("contact answers only"),
        };
        self.cache
            .insert(CacheKey::Contact(key.clone()), cached)
            .await;
        self.broadcast(Invalidation::Keys(vec![
            self.hashed(&CacheKey::Contact(key.clone())),
        ]))
        .await;
        Ok(answer)
    }

    /// Buys a CPF's person data again, bypassing every tier, and keeps it in memory.
    pub async fn refresh_person(&self, cpf: &Cpf) -> Result<Lookup<Arc<Person>>, ResolveError> {
        let cached = self.buy_person(cpf).await?;
        self.metrics
            .lookup(LookupKind::Cpf, LookupResult::ProviderCall);
        let answer = match &cached.answer {
            Answer::Person(a) => unpacked(a)?,
            Answer::Contact(_) => unreachable!("person answers only"),
        };
        self.cache
            .insert(CacheKey::Person(cpf.clone()), cached)
            .await;
        Ok(answer)
    }

    /// What memory holds for a contact right now; never loads.
    pub async fn peek_contact(&self, key: &ContactKey) -> Option<Lookup<Cpf>> {
        match self
            .cache
            .get(&CacheKey::Contact(key.clone()))
            .await?
            .answer
        {
            Answer::Contact(a) => Some(a),
            Answer::Person(_) => None,
        }
    }

    /// What memory holds for a CPF right now; never loads.
    pub async fn peek_person(&self, cpf: &Cpf) -> Option<Lookup<Arc<Person>>> {
        match self.cache.get(&CacheKey::Person(cpf.clone())).await?.answer {
            // Unreadable is reported as not held: the next lookup loads it from the database.
            Answer::Person(a) => unpacked(&a).ok(),
            Answer::Contact(_) => None,
        }
    }

    /// Drops a contact from memory, here and on every other instance.
    pub async fn forget_contact(&self, key: &ContactKey) {
        let key = CacheKey::Contact(key.clone());
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate(&key).await;
        self.broadcast(Invalidation::Keys(vec![self.hashed(&key)]))
            .await;
    }

    /// Drops a CPF from memory, here and on every other instance.
    pub async fn forget_person(&self, cpf: &Cpf) {
        let key = CacheKey::Person(cpf.clone());
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate(&key).await;
        self.broadcast(Invalidation::Keys(vec![self.hashed(&key)]))
            .await;
    }

    /// Drops everything from memory, here and on every other instance.
    pub async fn forget_all(&self) {
        self.forget_all_here().await;
        self.broadcast(Invalidation::All).await;
    }

    /// Drops everything from this instance's memory only.
    pub(crate) async fn forget_all_here(&self) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
        // moka removes invalidated entries in batches, at most about 100 ms of work per
        // maintenance run, and until removed they keep their memory: run maintenance until a
        // run removes nothing more (entries inserted meanwhile may stay).
        let mut left = u64::MAX;
        loop {
            self.cache.run_pending_tasks().await;
            let now = self.cache.entry_count();
            if now == 0 || now >= left {
                break;
            }
            left = now;
        }
    }

    /// Drops the entries whose keyed hash is listed; returns how many went.
    pub(crate) async fn forget_hashed(&self, hashes: &HashSet<String>) -> usize {
        // A load in flight is not in memory yet, so it cannot be matched by hash: every
        // broadcast counts as an invalidation for it.
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        let doomed: Vec<CacheKey> = self
            .cache
            .iter()
            .filter(|(key, _)| hashes.contains(&self.hashed(key)))
            .map(|(key, _)| key.as_ref().clone())
            .collect();
        for key in &doomed {
            self.cache.invalidate(key).await;
        }
        doomed.len()
    }

    /// Applies a broadcast from any instance; this instance's own are skipped.
    pub(crate) async fn apply(&self, payload: &str) {
        match Invalidation::decode(payload, &self.origin) {
            Some(Invalidation::All) => {
                self.forget_all_here().await;
                tracing::debug!("memory dropped: another instance dropped all");
            }
            Some(Invalidation::Keys(hashes)) => {
                let hashes: HashSet<String> = hashes.into_iter().collect();
                let dropped = self.forget_hashed(&hashes).await;
                tracing::debug!(dropped, "memory entries dropped for another instance");
            }
            None => {}
        }
    }

    /// The keyed hash that names a key in broadcasts: no phone, e-mail or CPF in clear.
    fn hashed(&self, key: &CacheKey) -> String {
        let (tag, value) = match key {
            CacheKey::Contact(k) => (k.kind().as_str(), k.value()),
            CacheKey::Person(cpf) => ("cpf", cpf.as_str()),
        };
        invalidation::key_hash(&self.secret, tag, value)
    }

    async fn broadcast(&self, what: Invalidation) {
        if self.secret.is_empty() {
            return;
        }
        for payload in what.encode(&self.origin) {
            if let Err(e) = self.store.broadcast(&payload).await {
                // Other instances keep the entry until its TTL; say so loudly.
                tracing::error!(error = %e, "broadcasting a memory invalidation failed");
            }
        }
    }

    /// Where this instance's invalidation listener stands.
    pub fn listener(&self) -> &ListenerStatus {
        &self.listener
    }

    /// Loads people the database already holds into memory: each person under its CPF, and
    /// each contact whose lookup found it. Returns how many people were loaded.
    pub async fn warm(
        &self,
        people: impl IntoIterator<Item = (Cpf, Person, Vec<ContactKey>)>,
    ) -> usize {
        let mut loaded = 0;
        for (cpf, person, keys) in people {
            let cached =
                self.cached_person(Lookup::Found(PackedPerson::pack(&person)), Tier::Database);
            self.cache
                .insert(CacheKey::Person(cpf.clone()), cached)
                .await;
            for key in keys {
                let weight = entry_weight(key.value().len());
                let cached =
                    self.cached_contact(Lookup::Found(cpf.clone()), weight, Tier::Database);
                self.cache.insert(CacheKey::Contact(key), cached).await;
            }
            loaded += 1;
        }
        loaded
    }

    pub fn ttls(&self) -> Ttls {
        self.ttls
    }

    /// Entries and weighted size (bytes, approximate) of the memory tier.
    pub async fn cache_usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks().await;
        (self.cache.entry_count(), self.cache.weighted_size())
    }
}

/// The person a packed answer holds, decoded for the caller.
fn unpacked(answer: &Lookup<PackedPerson>) -> Result<Lookup<Arc<Person>>, UnpackError> {
    Ok(match answer {
        Lookup::Found(packed) => Lookup::Found(Arc::new(packed.unpack()?)),
        Lookup::NotFound => Lookup::NotFound,
    })
}
