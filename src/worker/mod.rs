//! Workers: take events from the inbox with bounded concurrency and carry each one through
//! normalize -> resolve -> store -> render -> deliver.
//!
//! The store's claim guarantees one event per lead at a time, in order, and that an event
//! abandoned by a stopped process comes back when its lease runs out; this module only has to
//! bound how many run here. While an event is worked its lease is renewed (a heartbeat every
//! third of the lease), so a live worker never loses a long provider call to another instance,
//! and a lease can stay short enough that a dead instance's events return within seconds. On
//! shutdown it stops claiming and lets in-flight events finish for up to `workers.drain_secs`.

mod create;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::delivery::{self, UNKNOWN_OUTCOME};
use crate::domain::name::{Choice, Match, choose};
use crate::domain::{Candidate, Candidates, ContactKey, Cpf, LeadId};
use crate::event::{Action, Destination, LeadEvent};
use crate::message::{Finding, ListedCompany, Via};
use crate::metrics::Stage;
use crate::retry::{after_error, after_failure};
use crate::state::AppState;
use crate::store::{ClaimedEvent, Finish, LeadLink, Lookup, Outcome, contact_set};

/// Runs until `shutdown` is cancelled, then drains.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let settings = &state.settings.workers;
    let slots = Arc::new(Semaphore::new(settings.concurrency));
    let lease = Duration::from_secs(settings.lease_secs);
    let poll = Duration::from_millis(settings.poll_interval_ms);
    let mut tasks = JoinSet::new();
    // Events whose task has not ended yet: what a drain that times out hands back.
    let in_hand: Arc<std::sync::Mutex<HashMap<i64, ClaimedEvent>>> = Arc::default();
    tracing::info!(concurrency = settings.concurrency, "workers started");

    // Claim only when there may be something to take: at start, after a wake (intake stored
    // an event) or a poll tick (retries come due, leases run out), after a claim that filled
    // every free slot (more may be waiting), and when an event ends whose lead has another
    // pending (it could not be claimed before). A slot freeing up alone is no reason:
    // claiming after every finished event doubled the claims on a busy inbox, each one a
    // locked transaction on the database.
    let mut want = true;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shutdown.is_cancelled() {
        while let Some(done) = tasks.try_join_next() {
            want |= matches!(done, Ok(true));
        }
        let free = slots.available_permits();
        if want && free > 0 {
            match state.store.claim_events(free as u32, lease).await {
                Ok(events) => {
                    want = events.len() == free;
                    for event in events {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            break;
                        };
                        let state = state.clone();
                        let in_hand = in_hand.clone();
                        lock(&in_hand).insert(event.id, event.clone());
                        tasks.spawn(async move {
                            let id = event.id;
                            let successor = process(&state, event, lease).await;
                            lock(&in_hand).remove(&id);
                            drop(permit);
                            successor
                        });
                    }
                }
                // Tried again at the next wake or tick, not in a loop against a failing
                // database.
                Err(e) => tracing::error!(error = %e, "claiming events failed"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = state.wake.notified() => want = true,
            _ = tick.tick() => want = true,
            // A freed slot: claims if a wake or a full claim left `want` set, or the event
            // that ended has a successor of its lead waiting (claims pass over an event while
            // an earlier one of its lead is in hand).
            Some(done) = tasks.join_next(), if !tasks.is_empty() => want |= matches!(done, Ok(true)),
        }
    }

    let drain = Duration::from_secs(settings.drain_secs);
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(in_flight, "draining in-flight events");
    }
    let drained =
        tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tasks.shutdown().await;
        let left: Vec<ClaimedEvent> = lock(&in_hand).drain().map(|(_, e)| e).collect();
        let mut handed_back = 0;
        for event in &left {
            match state.store.release(event).await {
                Ok(true) => handed_back += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(event = event.id, error = %e, "handing an event back failed")
                }
            }
        }
        tracing::warn!(
            left = left.len(),
            handed_back,
            "drain timed out; unfinished events handed back (one mid-POST returns when its lease expires)"
        );
    }
    tracing::info!("workers stopped");
}

/// The map of events in hand; a task that panicked while holding it leaves nothing half-done
/// in it, so a poisoned lock is still usable.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Time since `at` on the wall clock, zero if `at` is ahead (another instance's clock).
fn since(at: time::OffsetDateTime) -> Duration {
    (time::OffsetDateTime::now_utc() - at)
        .try_into()
        .unwrap_or_default()
}

/// Once an hour: deletes old done events, so the inbox does not grow without bound, and
/// purges the raw payloads of done events past payload retention, so personal data in the
/// inbox is not kept longer than promised. The first round runs at start.
pub async fn prune(state: AppState, shutdown: CancellationToken) {
    let days = state.settings.workers.retention_days;
    let payload_days = state.settings.workers.payload_retention_days;
    if days == 0 && payload_days == 0 {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = time::OffsetDateTime::now_utc();
        if payload_days > 0 {
            let cutoff = now - Duration::from_secs(payload_days * 86_400);
            match state.store.purge_payloads(cutoff).await {
                Ok(0) => {}
                Ok(n) => {
                    state.metrics.payloads_purged(n);
                    tracing::info!(purged = n, days = payload_days, "old inbox payloads purged");
                }
                Err(e) => tracing::warn!(error = %e, "purging old inbox payloads failed"),
            }
        }
        if days > 0 {
            let cutoff = now - Duration::from_secs(days * 86_400);
            match state.store.prune_done(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, days, "old done events pruned"),
                Err(e) => tracing::warn!(error = %e, "pruning old events failed"),
            }
        }
    }
}

/// Carries one claimed event to its end state, renewing its lease while it works. Returns
/// whether another event of its lead is pending (see [`crate::store::Inbox::finish_and_look`]).
#[tracing::instrument(name = "event", skip_all, fields(event = event.id, lead = %event.lead_id, action = %event.action))]
pub async fn process(state: &AppState, event: ClaimedEvent, lease: Duration) -> bool {
    // How late a worker took it: from when it became due, so a retry's or a replay's own
    // wait is not counted.
    state.metrics.stage(Stage::Queued, since(event.due_at));
    // Nothing tried before: the way from due to delivered is the whole of this attempt.
    let first = event.attempts == 0 && !event.send_started && event.message.is_none();
    let work = handle(state, &event);
    // The claim has just set the lease, so the first renewal is one period away. Not
    // `interval` and a first `tick()`: that tick is "immediate" only on the timer's
    // millisecond clock, and awaiting it before the work put up to a millisecond or two
    // of timer wait on every event.
    let every = (lease / 3).max(Duration::from_millis(100));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The renewals run beside the work, never inside a `select!` arm: a renewal that waits
    // (a slow database, a row lock) must not stop the work from being polled.
    let renewals = async {
        loop {
            heartbeat.tick().await;
            match state.store.renew_lease(&event, lease).await {
                Ok(true) => {}
                // Writes name the claim, so whatever this worker does next is refused.
                Ok(false) => tracing::warn!("lease lost while working the event"),
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
            }
        }
    };
    let finish = tokio::select! {
        finish = work => finish,
        never = renewals => never,
    };
    match &finish {
        Finish::Done { outcome, .. } => {
            state.metrics.event_finished("done", outcome.as_str());
            tracing::info!(outcome = %outcome, "event done");
        }
        Finish::Retry { error, at } => {
            state.metrics.event_finished("retry", "retry");
            tracing::warn!(error = %error, retry_at = %at, "event will be retried");
        }
        Finish::Park { error, at } => {
            state.metrics.event_finished("retry", "parked");
            tracing::warn!(error = %error, retry_at = %at, "event parked until the provider's circuit closes");
        }
        Finish::Dead { reason } => {
            state.metrics.event_finished("dead", "dead");
            tracing::error!(reason = %reason, "event dead-lettered");
        }
    }
    if first
        && let Finish::Done {
            outcome: Outcome::Delivered,
            ..
        } = &finish
    {
        state.metrics.delivered_after(since(event.due_at));
    }
    let finishing = Instant::now();
    let looked = state.store.finish_and_look(&event, finish).await;
    state.metrics.stage(Stage::Finish, finishing.elapsed());
    match looked {
        Ok(Some(successor)) => successor,
        Ok(None) => {
            tracing::warn!("claim lost: another worker took this event over");
            false
        }
        // The lease will run out and the event comes back.
        Err(e) => {
            tracing::error!(error = %e, "recording the event's outcome failed");
            false
        }
    }
}

async fn handle(state: &AppState, event: &ClaimedEvent) -> Finish {
    // An erasure redacted this event's payload: there is nobody left to enrich or write to,
    // and the event must not be dead-lettered as unreadable (an operator would replay it).
    if event.erased {
        return Finish::Done {
            outcome: Outcome::Erased,
            contact_set: None,
        };
    }
    // The worker reads the lead event each intake stored, never the raw payload.
    let parsed = match event.lead_event.as_ref().map(LeadEvent::from_stored) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            return Finish::Dead {
                reason: e.to_string(),
            };
        }
        None => {
            return Finish::Dead {
                reason: "no lead event stored (its payload did not convert at startup)".into(),
            };
        }
    };
    // A lead the CRM does not have yet: its own record of intent (per source lead, not per
    // event) rules what an interrupted call means, so the "sending" mark below is not used.
    if let Destination::CreateCrmLead(new) = &parsed.destination {
        return create::create_crm_lead(state, event, &parsed, new).await;
    }
    // Claimed with the "sending" mark still set: a process stopped mid-POST. Same rule as an
    // unanswered POST (see `delivery`): post again within the allowance, else dead-letter.
    let counted;
    let event = if event.send_started {
        if event.message.is_none() {
            return Finish::Dead {
                reason: UNKNOWN_OUTCOME.into(),
            };
        }
        if let Err(finish) = delivery::after_unknown_outcome(state, event).await {
            return finish;
        }
        counted = ClaimedEvent {
            unknown_outcomes: event.unknown_outcomes + 1,
            ..event.clone()
        };
        &counted
    } else {
        event
    };
    if let Some(message) = &event.message {
        // Rendered by an earlier attempt: post that same text.
        if parsed.destination == Destination::StoreOnly {
            return stored(&parsed);
        }
        return delivery::deliver(state, event, &parsed.lead, message).await;
    }
    let resolving = Instant::now();
    let prepared = prepare(state, event, &parsed).await;
    state.metrics.stage(Stage::Resolve, resolving.elapsed());
    let rendered = match prepared {
        Ok(Prepared::Send(r)) => r,
        Ok(Prepared::Skip { outcome, set }) => {
            return Finish::Done {
                outcome,
                contact_set: Some(set),
            };
        }
        Err(finish) => return finish,
    };
    let Rendered {
        message,
        set,
        links,
    } = &rendered;
    if parsed.destination == Destination::StoreOnly {
        return match state.store.save_rendered(event, set, message, links).await {
            Ok(_) => stored(&parsed),
            Err(e) => store_failed(state, event, &e),
        };
    }
    // The message, the lead's links and the "sending" mark in one commit: the first POST
    // waits for one commit, not two.
    let saving = Instant::now();
    let saved = state
        .store
        .save_and_mark_sending(event, set, message, links)
        .await;
    state.metrics.stage(Stage::Save, saving.elapsed());
    match saved {
        Ok(true) => delivery::post(state, event, &parsed.lead, message).await,
        Ok(false) => delivery::claim_lost(),
        Err(e) => store_failed(state, event, &e),
    }
}

fn stored(parsed: &LeadEvent) -> Finish {
    Finish::Done {
        outcome: Outcome::Stored,
        contact_set: Some(contact_set(&parsed.customer.keys())),
    }
}

fn store_failed(state: &AppState, event: &ClaimedEvent, e: &crate::store::StoreError) -> Finish {
    after_failure(
        &state.settings.delivery,
        event,
        e.is_transient(),
        None,
        format!("store: {e}"),
    )
}

enum Prepared {
    Send(Rendered),
    Skip { outcome: Outcome, set: String },
}

/// A message resolved and rendered, not yet saved: what it says, the event's contact set,
/// and the parties to link the lead to.
struct Rendered {
    message: String,
    set: String,
    links: Vec<LeadLink>,
}

/// Decides whether the event needs a message and, if so, resolves and renders it; the caller
/// saves it.
async fn prepare(
    state: &AppState,
    event: &ClaimedEvent,
    parsed: &LeadEvent,
) -> Result<Prepared, Finish> {
    let (keys, set) = contacts(parsed);
    let action = &parsed.action;
    match action {
        Action::Close => {
            return Ok(Prepared::Skip {
                outcome: Outcome::Closed,
                set,
            });
        }
        Action::Other { .. } => {
            return Ok(Prepared::Skip {
                outcome: Outcome::IgnoredAction,
                set,
            });
        }
        Action::Update => {
            let previous = state
                .store
                .previous_contact_set(event)
                .await
                .map_err(|e| transient(state, event, format!("store: {e}")))?;
            if previous.as_deref() == Some(set.as_str()) {
                return Ok(Prepared::Skip {
                    outcome: Outcome::Unchanged,
                    set,
                });
            }
        }
        Action::Create | Action::Refresh => {}
    }
    if keys.is_empty() {
        return Ok(Prepared::Skip {
            outcome: Outcome::NoContact,
            set,
        });
    }

    let bypass = *action == Action::Refresh;
    let lead_name = parsed.customer.name.as_deref();
    let (findings, links) = resolve(
        state,
        &parsed.lead,
        lead_name,
        &keys,
        parsed.cpf.as_ref(),
        bypass,
    )
    .await
    .map_err(|e| after_error(&state.settings.delivery, event, &e))?;
    let message = state
        .renderer
        .render(lead_name, &findings)
        .map_err(|e| Finish::Dead {
            reason: format!("message: {e}"),
        })?;
    Ok(Prepared::Send(Rendered {
        message,
        set,
        links,
    }))
}

/// The event's contact keys and their contact set, after logging each contact the normalizer
/// dropped (its field and why, never its value).
fn contacts(parsed: &LeadEvent) -> (Vec<ContactKey>, String) {
    for rejected in &parsed.customer.rejected {
        tracing::info!(field = %rejected.field, reason = %rejected.reason, "contact dropped");
    }
    let keys = parsed.customer.keys();
    let set = contact_set(&keys);
    (keys, set)
}

fn transient(state: &AppState, event: &ClaimedEvent, error: String) -> Finish {
    after_failure(&state.settings.delivery, event, true, None, error)
}

/// Resolves every key concurrently: what each led to, and the parties to link the lead to.
/// Each contact answers its candidates; the lead's name chooses among them
/// ([`crate::domain::name::choose`]), and person data is bought for the chosen CPF only.
/// With `bypass`, every tier is skipped and the providers asked again. A CPF the source
/// gave (a form field, a backfill column) stands for every key's contact lookup: nothing is
/// bought to learn what the source already said, and the person is looked up once (the
/// resolver's single flight joins the keys' identical lookups).
async fn resolve(
    state: &AppState,
    lead: &LeadId,
    lead_name: Option<&str>,
    keys: &[ContactKey],
    given: Option<&Cpf>,
    bypass: bool,
) -> Result<(Vec<Finding>, Vec<LeadLink>), crate::resolution::ResolveError> {
    let resolver = &state.resolver;
    let results = join_all(keys.iter().map(|key| async move {
        let (candidates, chosen) = if let Some(cpf) = given {
            // The source said who it is: no lookup, and nothing to choose between.
            let choice = Choice {
                index: 0,
                quality: Match::Confirmed,
            };
            (Candidates::default(), Some((choice, cpf.clone())))
        } else {
            let contact = if bypass {
                resolver.refresh_contact(key).await?
            } else {
                resolver.candidates(key).await?.0
            };
            let candidates = match contact {
                Lookup::Found(c) => c,
                Lookup::NotFound => Candidates::default(),
            };
            let chosen = choose(lead_name, &candidates).and_then(|choice| {
                let person = candidates.as_slice()[choice.index].person()?;
                Some((choice, person.cpf.clone()))
            });
            (candidates, chosen)
        };
        let person = match &chosen {
            Some((_, cpf)) => {
                let person = if bypass {
                    resolver.refresh_person(cpf).await?
                } else {
                    resolver.person(cpf).await?.0
                };
                match person {
                    Lookup::Found(p) => Some(p),
                    Lookup::NotFound => None,
                }
            }
            None => None,
        };
        Ok::<_, crate::resolution::ResolveError>((key, candidates, chosen, person))
    }))
    .await;

    let mut findings = Vec::new();
    let mut links = Vec::new();
    for result in results {
        let (key, candidates, chosen, person) = result?;
        let quality = match &chosen {
            Some((choice, cpf)) => {
                state.metrics.name_match(choice.quality);
                resolver.note_choice(key, lead, cpf, choice.quality);
                tracing::debug!(
                    kind = key.kind().as_str(),
                    candidates = candidates.len(),
                    chosen = choice.index,
                    quality = choice.quality.as_str(),
                    "candidate chosen"
                );
                links.push(LeadLink {
                    cpf: cpf.clone(),
                    via: key.kind(),
                });
                choice.quality
            }
            None => Match::Confirmed,
        };
        let via = Via::from(key);
        let companies = candidates
            .iter()
            .filter_map(|c| match c {
                Candidate::Company { cnpj, name } => Some(ListedCompany {
                    cnpj: cnpj.clone(),
                    name: name.clone(),
                }),
                Candidate::Person(_) => None,
            })
            .collect();
        findings.push(Finding {
            via,
            person,
            quality,
            companies,
        });
    }
    Ok((findings, links))
}
