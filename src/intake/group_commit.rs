//! Group commit: the inbox inserts of concurrent webhook requests share one transaction.
//!
//! A commit costs the database far more than the rows it carries (a WAL flush, a round trip
//! per statement), so one transaction per request caps intake well below what the database
//! can take. Requests are handed to one task through a channel; it gathers them while the
//! previous batch commits (and for at most `wait` more once it could commit, or until
//! `max_events`), stores the batch in one transaction and answers each request only after
//! that transaction committed. The contract of intake does not change:
//!
//! - every request gets the outcome of each of its events, `accepted` or `duplicate`, as if it
//!   had been stored alone: a duplicate inside one batch is a duplicate for the later request;
//! - when the batch fails because of what one request carried (the database refused a value),
//!   the batch is stored again one request per transaction, so only that request fails;
//! - when the database cannot take the write, every request of the batch gets the error
//!   (a 503): nothing is acknowledged that was not committed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::store::{Inbox, InsertOutcome, NewEvent, StoreError};

/// Batches committing at once unless configured (`server.group_commit_in_flight`). Two: one
/// commits while the next forms, and the requests that arrive meanwhile ride along, so batches
/// grow with the load and each costs the database far less per event. Measured with 64
/// senders (BENCHMARKS.md, "Ingest"), 2 slots ack about a quarter more per second than 8,
/// whose batches held two or three events.
pub const DEFAULT_IN_FLIGHT: usize = 2;

/// Requests queued for the batching task before senders wait for room.
const QUEUE_DEPTH: usize = 4096;

/// What a request gets back: its events (so the caller can answer about them) and their
/// outcomes in order, or why none of them was stored.
pub type Stored = (Vec<NewEvent>, Result<Vec<InsertOutcome>, StoreError>);

struct Pending {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Stored>,
}

/// The way intake stores events: grouped with other requests', or alone when turned off.
#[derive(Clone)]
pub struct GroupCommit {
    store: Arc<dyn Inbox>,
    queue: Option<mpsc::Sender<Pending>>,
}

impl GroupCommit {
    /// Starts the batching task (on the current runtime) unless `max_events` is 0, with
    /// [`DEFAULT_IN_FLIGHT`] batches committing at once. The task ends when the last handle is
    /// dropped.
    pub fn start(store: Arc<dyn Inbox>, max_events: usize, wait: Duration) -> GroupCommit {
        GroupCommit::start_with(store, max_events, wait, DEFAULT_IN_FLIGHT)
    }

    /// As [`GroupCommit::start`], with at most `in_flight` batches committing at once (at
    /// least one).
    pub fn start_with(
        store: Arc<dyn Inbox>,
        max_events: usize,
        wait: Duration,
        in_flight: usize,
    ) -> GroupCommit {
        if max_events == 0 {
            return GroupCommit { store, queue: None };
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(store.clone(), rx, max_events, wait, in_flight.max(1)));
        GroupCommit {
            store,
            queue: Some(tx),
        }
    }

    /// Stores `events` durably; returns only after the transaction holding them committed.
    pub async fn insert(&self, events: Vec<NewEvent>) -> Stored {
        let Some(queue) = &self.queue else {
            let result = self.store.insert_events(&events).await;
            return (events, result);
        };
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(pending)) = queue.send(Pending { events, reply }).await {
            return (pending.events, Err(gone()));
        }
        match answer.await {
            Ok(stored) => stored,
            // The task ended (runtime shutting down) without answering: nothing is known to
            // be stored, so nothing is acknowledged. The events went with the task; an empty
            // list is never answered 2xx since the result is an error.
            Err(_) => (Vec::new(), Err(gone())),
        }
    }
}

fn gone() -> StoreError {
    StoreError::Unavailable("intake is shutting down".into())
}

async fn run(
    store: Arc<dyn Inbox>,
    mut rx: mpsc::Receiver<Pending>,
    max_events: usize,
    wait: Duration,
    in_flight: usize,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(first) = rx.recv().await {
        let mut events = first.events.len();
        let mut batch = vec![first];
        // While every slot is busy, requests that arrive ride along with this batch.
        let permit = loop {
            if events >= max_events {
                break slots.clone().acquire_owned().await;
            }
            tokio::select! {
                biased;
                permit = slots.clone().acquire_owned() => break permit,
                next = rx.recv() => match next {
                    Some(p) => {
                        events += p.events.len();
                        batch.push(p);
                    }
                    None => break slots.clone().acquire_owned().await,
                },
            }
        };
        let Ok(permit) = permit else { return };
        // A slot is free: take what is already queued, and wait a bounded time for more.
        let deadline = Instant::now() + wait;
        while events < max_events {
            let next = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(mpsc::error::TryRecvError::Empty) if !wait.is_zero() => {
                    tokio::time::timeout_at(deadline, rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
                Err(_) => None,
            };
            let Some(p) = next else { break };
            events += p.events.len();
            batch.push(p);
        }
        let store = store.clone();
        tokio::spawn(async move {
            commit(store.as_ref(), batch).await;
            drop(permit);
        });
    }
}

/// Stores one batch and answers each of its requests.
async fn commit(store: &dyn Inbox, batch: Vec<Pending>) {
    if batch.len() == 1 {
        let Pending { events, reply } = batch.into_iter().next().expect("one request");
        let result = store.insert_events(&events).await;
        let _ = reply.send((events, result));
        return;
    }
    let mut lens = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    let mut all = Vec::with_capacity(batch.iter().map(|p| p.events.len()).sum());
    for p in batch {
        lens.push(p.events.len());
        replies.push(p.reply);
        all.extend(p.events);
    }
    let results: Vec<Result<Vec<InsertOutcome>, StoreError>> = match store.insert_events(&all).await
    {
        Ok(outcomes) if outcomes.len() == all.len() => {
            let mut outcomes = outcomes.into_iter();
            lens.iter()
                .map(|&n| Ok(outcomes.by_ref().take(n).collect()))
                .collect()
        }
        Ok(_) => {
            let e = StoreError::Database("the inbox answered for another number of events".into());
            lens.iter().map(|_| Err(e.clone())).collect()
        }
        // The database cannot take writes: storing the requests one by one would only make
        // each of them wait for the same failure.
        Err(e @ StoreError::Unavailable(_)) => lens.iter().map(|_| Err(e.clone())).collect(),
        Err(e) => {
            // Something in the batch was refused; find out whose, one request per transaction.
            tracing::warn!(error = %e, requests = lens.len(), "a grouped inbox insert failed; storing its requests one by one");
            let mut results = Vec::with_capacity(lens.len());
            let mut start = 0;
            for &n in &lens {
                results.push(store.insert_events(&all[start..start + n]).await);
                start += n;
            }
            results
        }
    };
    let mut all = all.into_iter();
    for ((n, reply), result) in lens.into_iter().zip(replies).zip(results) {
        let events: Vec<NewEvent> = all.by_ref().take(n).collect();
        let _ = reply.send((events, result));
    }
}
