//! Reconciliation: finding the lead-versions whose webhook never arrived.
//!
//! The CRM is listed for leads updated in a window ([`window`]); every listed lead-version
//! (lead id and `updated_at`, the identity the inbox uses for duplicates) the service has not
//! seen goes into the inbox as a C2S event, exactly as if its webhook had come
//! ([`to_enqueue`]). The window starts at the stored watermark less an overlap (so a lead the
//! CRM stamped slightly in the past, or one that moved between pages while they were read, is
//! listed again and recognized as seen), or `lookback` before now when there is no watermark
//! yet; it ends now, which becomes the next watermark once every page was read.
//!
//! [`window`] and [`to_enqueue`] are pure; [`pass`] reads the CRM's pages and inserts the
//! unseen versions (the inbox's duplicate key `(source, lead_id, event_at)` is what "seen"
//! means, so an insert that comes back a duplicate is a version the webhook already brought);
//! [`run`] is the service's loop (`c2s.reconcile_secs`), [`once`] the CLI's single pass. Each
//! pass holds the reconciliation lock, so one instance lists the CRM at a time, and stores the
//! watermark only after every page of its window was read.

use std::collections::HashSet;
use std::time::Duration;

use time::OffsetDateTime;

use crate::domain::LeadId;
use crate::event::{Action, LeadEvent};
use crate::providers::{LeadQuery, ListedLead, MAX_PER_PAGE, ProviderError};
use crate::state::AppState;
use crate::store::{InsertOutcome, LockSpace, NewEvent, StoreError};

/// The stored watermark's name.
pub const WATERMARK: &str = "c2s";

/// Most pages one pass reads (50 leads each): a window beyond that is cut, and the watermark
/// is not advanced, so the next pass starts again from the same place.
const MAX_PAGES: u32 = 2_000;

/// Why a pass did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("listing the CRM's leads: {0}")]
    Crm(#[from] ProviderError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("another instance is reconciling")]
    Busy,
    #[error("more than {MAX_PAGES} pages in the window; the watermark was not advanced")]
    TooManyPages,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub pages: u32,
    pub listed: u64,
    /// Lead-versions the inbox did not have: now in it as C2S events.
    pub enqueued: u64,
    /// Listed leads that did not read as the webhook's lead resource: skipped.
    pub unreadable: u64,
}

/// A listed lead as the event its webhook would have stored: the same source and identity.
/// The list carries no action; an update is the safe reading (it posts when the contacts
/// changed since the lead's last event, or when there was none).
pub fn to_event(listed: &ListedLead) -> NewEvent {
    let mut event = LeadEvent::from(listed.lead.clone());
    if event.action == Action::Create {
        event.action = Action::Update;
    }
    NewEvent::new(event, listed.payload.clone())
}

/// Reads every page of `window` and puts the unseen lead-versions in the inbox. Takes the
/// reconciliation lock (waiting at most `lock_wait`) and, when every page was read, stores
/// `window.until` as the watermark.
pub async fn pass(
    state: &AppState,
    window: Window,
    lock_wait: Duration,
) -> Result<Pass, ReconcileError> {
    let lock = match state
        .store
        .lock_key(LockSpace::Reconcile, WATERMARK, lock_wait)
        .await
    {
        Ok(lock) => lock,
        Err(StoreError::Busy(_)) => return Err(ReconcileError::Busy),
        Err(e) => return Err(e.into()),
    };
    let mut done = Pass::default();
    let mut page = 1;
    loop {
        if page > MAX_PAGES {
            return Err(ReconcileError::TooManyPages);
        }
        let listed = state
            .crm
            .list_leads(&LeadQuery {
                updated_gte: Some(window.since),
                updated_lt: Some(window.until),
                page,
                perpage: MAX_PER_PAGE,
            })
            .await?;
        done.pages += 1;
        done.listed += listed.leads.len() as u64;
        done.unreadable += listed.unreadable.len() as u64;
        let events: Vec<NewEvent> = listed.leads.iter().map(to_event).collect();
        if !events.is_empty() {
            let inserted = state.store.insert_events(&events).await?;
            done.enqueued += inserted
                .iter()
                .filter(|o| matches!(o, InsertOutcome::Accepted(_)))
                .count() as u64;
        }
        let read = (listed.leads.len() + listed.unreadable.len()) as u64;
        let end = read < u64::from(listed.perpage.max(1))
            || listed
                .total
                .is_some_and(|t| u64::from(page) * u64::from(listed.perpage) >= t);
        if end {
            break;
        }
        page += 1;
    }
    if done.enqueued > 0 {
        state.wake_workers();
    }
    state.store.set_watermark(WATERMARK, window.until).await?;
    if let Some(lock) = lock {
        lock.release().await;
    }
    Ok(done)
}

/// `enricher reconcile --since DATE`: one pass from `since` to now.
pub async fn once(state: &AppState, since: OffsetDateTime) -> Result<Pass, ReconcileError> {
    let window = window_since(since, OffsetDateTime::now_utc());
    pass(state, window, Duration::from_secs(30)).await
}

/// The service's loop: a pass every `c2s.reconcile_secs` (the first at start) from the stored
/// watermark, until `shutdown`. Does nothing when the setting is 0.
pub async fn run(state: AppState, shutdown: tokio_util::sync::CancellationToken) {
    let every = state.settings.c2s.reconcile_secs;
    if every == 0 {
        return;
    }
    let lookback = state.settings.c2s.reconcile_lookback_hours;
    let mut tick = tokio::time::interval(Duration::from_secs(every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let watermark = match state.store.watermark(WATERMARK).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "reading the reconciliation watermark failed");
                continue;
            }
        };
        let window = window(watermark, OffsetDateTime::now_utc(), lookback);
        // Another instance holding the lock is reconciling now: skip rather than queue up.
        match pass(&state, window, Duration::from_secs(1)).await {
            Ok(p) => tracing::info!(
                pages = p.pages,
                listed = p.listed,
                enqueued = p.enqueued,
                unreadable = p.unreadable,
                "reconciliation pass done"
            ),
            Err(ReconcileError::Busy) => {
                tracing::debug!("another instance is reconciling")
            }
            Err(e) => tracing::warn!(error = %e, "reconciliation pass failed"),
        }
    }
}

/// How far before the watermark each pass starts again. Listing newest-first while leads are
/// updated shifts pages; the overlap lists such a lead again on the next pass.
pub const OVERLAP: Duration = Duration::from_secs(10 * 60);

/// Default look-back with no watermark (`ENRICHER__C2S__RECONCILE_LOOKBACK_HOURS`).
pub const DEFAULT_LOOKBACK_HOURS: u64 = 24;

/// The leads to list: updated in `[since, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: OffsetDateTime,
    /// Also the watermark to store once every page of the window was read.
    pub until: OffsetDateTime,
}

/// The window of one pass. `lookback_hours` applies only without a watermark; a watermark
/// in the future (a clock that jumped back) is treated as now.
pub fn window(
    watermark: Option<OffsetDateTime>,
    now: OffsetDateTime,
    lookback_hours: u64,
) -> Window {
    let since = match watermark {
        Some(mark) => mark.min(now) - OVERLAP,
        None => now - Duration::from_secs(lookback_hours.saturating_mul(3600)),
    };
    Window { since, until: now }
}

/// The window of `enricher reconcile --since DATE`: from the given instant to now.
pub fn window_since(since: OffsetDateTime, now: OffsetDateTime) -> Window {
    Window {
        since: since.min(now),
        until: now,
    }
}

/// The listed leads to put in the inbox, in page order: those whose lead-version `seen` does
/// not know, each once even when the page lists it twice.
pub fn to_enqueue(
    page: &[ListedLead],
    mut seen: impl FnMut(&LeadId, OffsetDateTime) -> bool,
) -> Vec<&ListedLead> {
    let mut taken: HashSet<(&LeadId, OffsetDateTime)> = HashSet::new();
    page.iter()
        .filter(|l| {
            let version = (&l.lead.lead_id, l.lead.updated_at);
            !taken.contains(&version) && !seen(version.0, version.1) && taken.insert(version)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::c2s::C2sEvent;
    use time::macros::datetime;

    fn listed(id: &str, updated_at: &str) -> ListedLead {
        let payload = serde_json::json!({
            "id": id,
            "attributes": {"updated_at": updated_at, "customer": {"phone": "11912345678"}}
        });
        ListedLead {
            lead: C2sEvent::from_payload(&payload, "").unwrap(),
            payload,
        }
    }

    #[test]
    fn without_a_watermark_the_window_looks_back_the_configured_hours() {
        let now = datetime!(2026-11-22 12:00 UTC);
        let w = window(None, now, DEFAULT_LOOKBACK_HOURS);
        assert_eq!(w.since, datetime!(2026-11-21 12:00 UTC));
        assert_eq!(w.until, now);
        assert_eq!(window(None, now, 1).since, datetime!(2026-11-22 11:00 UTC));
    }

    #[test]
    fn with_a_watermark_the_window_starts_there_less_the_overlap() {
        let now = datetime!(2026-11-22 12:00 UTC);
        let w = window(Some(datetime!(2026-11-22 11:55 UTC)), now, 24);
        assert_eq!(w.since, datetime!(2026-11-22 11:45 UTC));
        // A week-old watermark (the service was down) is caught up from, not cut to 24 h.
        let w = window(Some(datetime!(2026-11-15 12:00 UTC)), now, 24);
        assert_eq!(w.since, datetime!(2026-11-15 11:50 UTC));
        // A watermark in the future cannot make the window empty.
        let w = window(Some(datetime!(2026-11-23 00:00 UTC)), now, 24);
        assert_eq!(w.since, datetime!(2026-11-22 11:50 UTC));
    }

    #[test]
    fn the_cli_window_runs_from_the_given_date_to_now() {
        let now = datetime!(2026-11-22 12:00 UTC);
        let w = window_since(datetime!(2026-11-01 00:00 UTC), now);
        assert_eq!((w.since, w.until), (datetime!(2026-11-01 00:00 UTC), now));
    }

    #[test]
    fn only_unseen_lead_versions_are_enqueued_each_once() {
        let page = vec![
            listed("brought-by-webhook", "2026-11-22T10:00:00Z"),
            listed("lost", "2026-11-22T10:05:00Z"),
            // A newer version of a lead whose older version was seen: a new event.
            listed("updated", "2026-11-22T10:10:00Z"),
            // Listed twice (pages shifted while read).
            listed("lost", "2026-11-22T10:05:00Z"),
        ];
        let seen_versions = [
            ("brought-by-webhook", datetime!(2026-11-22 10:00 UTC)),
            ("updated", datetime!(2026-11-22 09:00 UTC)),
        ];
        let mut asked = 0;
        let out = to_enqueue(&page, |id, at| {
            asked += 1;
            seen_versions.contains(&(id.as_str(), at))
        });
        let ids: Vec<(&str, OffsetDateTime)> = out
            .iter()
            .map(|l| (l.lead.lead_id.as_str(), l.lead.updated_at))
            .collect();
        assert_eq!(
            ids,
            [
                ("lost", datetime!(2026-11-22 10:05 UTC)),
                ("updated", datetime!(2026-11-22 10:10 UTC)),
            ]
        );
        // The duplicate in the page is not asked about again.
        assert_eq!(asked, 3);
        assert!(to_enqueue(&page, |_, _| true).is_empty());
    }

    #[test]
    fn the_same_instant_in_another_format_is_the_same_version() {
        // The webhook said `2026-11-22 07:00:00 -0300`; the list says UTC.
        let page = vec![listed("l", "2026-11-22T10:00:00Z")];
        let webhook = C2sEvent::from_payload(
            &serde_json::json!({"id": "l", "attributes": {"updated_at": "2026-11-22 07:00:00 -0300"}}),
            "",
        )
        .unwrap();
        let out = to_enqueue(&page, |id, at| {
            *id == webhook.lead_id && at == webhook.updated_at
        });
        assert!(out.is_empty());
    }
}
