//! Running a backfill file: each usable row becomes a [`LeadEvent`] (source `backfill`, a
//! message on the row's CRM lead) put in the inbox, and the inbox's workers carry it through
//! the same tiers, single flight, store and delivery as a webhook's event.
//!
//! Why the inbox and not a table of its own: the inbox already is the durable record of
//! "this lead-version was handled", with a duplicate key `(source, lead_id, event_at)`. A row
//! gets a stable identity there: its `event_at` is derived from a hash of the row's lead id
//! and contact values ([`row_instant`]), so running the same file again inserts nothing new
//! (a duplicate), pays nothing and posts nothing; a row whose values changed is a new
//! lead-version and is enriched again, as a webhook with new contacts would be. The rows'
//! instants all fall in January 1970, before any real event of the lead, and show for what
//! they are in the operators' listing.
//!
//! At most `concurrency` rows are in the inbox unfinished at a time, so a stop (Ctrl-C) leaves
//! nothing but the rows in flight, which finish first. An event the workers leave for a later
//! retry is reported `failed` (the service or the next run finishes it).
//!
//! `--dry-run` touches neither inbox nor providers: it asks memory and the database what
//! each distinct contact and CPF would cost and prices the misses at the configured prices.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::csv::{BackfillRow, RowProblem, Rows};
use super::report::Outcome;
use crate::domain::{ContactKey, Cpf, Email, LeadId, Phone};
use crate::event::{Action, Customer, Destination, LeadEvent, Rejected, Source};
use crate::metrics::{LookupKind, Provider};
use crate::resolution::Tier;
use crate::state::AppState;
use crate::store::{EventState, InsertOutcome, Lookup, NewEvent};

/// How often an in-flight row's event is checked.
const POLL: Duration = Duration::from_millis(20);

/// The command's options.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Rows in flight at once (and the workers the command runs).
    pub concurrency: usize,
    /// Memory and database only: report what would be bought, call no provider.
    pub dry_run: bool,
    /// Enrich and store, post no message.
    pub no_message: bool,
    /// Rows of the file to take (usable or not), from the top.
    pub limit: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 4,
            dry_run: false,
            no_message: false,
            limit: None,
        }
    }
}

/// What became of one row, for the report and the progress.
#[derive(Debug, Clone)]
pub struct RowResult {
    pub line: u64,
    pub lead_id: Option<LeadId>,
    pub outcome: Outcome,
    pub tier: Option<Tier>,
    pub cpf: Option<Cpf>,
    /// A fixed reason, never a value.
    pub detail: Option<String>,
}

/// Totals so far (the progress) or at the end (the summary).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub rows: u64,
    /// Rows in the file (after `--limit`): what the progress counts towards.
    pub total: u64,
    pub found: u64,
    pub not_found: u64,
    pub invalid: u64,
    pub already_done: u64,
    pub would_buy: u64,
    pub failed: u64,
    /// Provider calls made by this run (dry run: calls that would be made).
    pub provider_calls: u64,
    /// Money spent by this run at the configured prices (dry run: would be spent).
    pub spend: f64,
    pub elapsed: Duration,
    /// Stopped before the end (Ctrl-C).
    pub interrupted: bool,
}

impl Summary {
    fn count(&mut self, outcome: Outcome) {
        self.rows += 1;
        match outcome {
            Outcome::Found => self.found += 1,
            Outcome::NotFound => self.not_found += 1,
            Outcome::Invalid => self.invalid += 1,
            Outcome::AlreadyDone => self.already_done += 1,
            Outcome::WouldBuy => self.would_buy += 1,
            Outcome::Failed => self.failed += 1,
        }
    }

    /// One plain line: what the non-terminal progress prints and the final summary.
    pub fn line(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.rows as f64 / secs
        } else {
            0.0
        };
        let eta = if rate > 0.0 && self.total > self.rows {
            format!(
                "{:.0}s",
                (self.total - self.rows) as f64 / rate.max(f64::MIN_POSITIVE)
            )
        } else {
            "-".into()
        };
        format!(
            "rows {}/{} found {} not_found {} invalid {} already_done {} would_buy {} failed {} \
             provider_calls {} spend {:.2} time {:.1}s rate {:.1}/s eta {}",
            self.rows,
            self.total,
            self.found,
            self.not_found,
            self.invalid,
            self.already_done,
            self.would_buy,
            self.failed,
            self.provider_calls,
            self.spend,
            secs,
            rate,
            eta
        )
    }
}

/// The instant that, with the lead id, identifies a row in the inbox: a hash of the lead id
/// and the row's values (name, phone, e-mail, CPF as written), as microseconds into 1970.
pub fn row_instant(row: &BackfillRow) -> OffsetDateTime {
    let mut hash = Sha256::new();
    for part in [
        Some(row.lead_id.as_str()),
        row.name.as_deref(),
        row.phone.as_deref(),
        row.email.as_deref(),
        row.cpf.as_deref(),
    ] {
        // A separator that a value cannot produce keeps ("ab", "c") apart from ("a", "bc").
        hash.update(part.unwrap_or("\u{0}").as_bytes());
        hash.update([0xff]);
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 2^41 µs is about 25 days: every row lands in January 1970, apart from real events.
    let micros = u64::from_be_bytes(first) % (1 << 41);
    OffsetDateTime::UNIX_EPOCH + Duration::from_micros(micros)
}

/// The row as a lead event, or why it cannot be used. Unusable contacts are dropped with a
/// reason (no value), as the webhook intake does; a row left with none is invalid.
pub fn to_event(row: &BackfillRow, no_message: bool) -> Result<LeadEvent, &'static str> {
    let mut customer = Customer {
        name: row.name.clone(),
        ..Customer::default()
    };
    let mut reject = |field: &str, reason: String| {
        customer.rejected.push(Rejected {
            field: field.into(),
            reason,
        })
    };
    let phone = row.phone.as_deref().and_then(|p| {
        Phone::parse(p)
            .map_err(|e| reject("phone", e.to_string()))
            .ok()
    });
    let email = row.email.as_deref().and_then(|e| {
        Email::parse(e)
            .map_err(|e| reject("email", e.to_string()))
            .ok()
    });
    let cpf = row.cpf.as_deref().and_then(|c| {
        Cpf::parse_padded(c)
            .map_err(|e| reject("cpf", e.to_string()))
            .ok()
    });
    customer.phone = phone;
    customer.email = email;
    if customer.phone.is_none() && customer.email.is_none() {
        // The message is written about the lead's contacts: a CPF alone has none to show.
        return Err(if cpf.is_some() {
            "a CPF without a usable phone or e-mail"
        } else {
            "no usable phone, e-mail or CPF"
        });
    }
    Ok(LeadEvent {
        customer,
        cpf,
        destination: if no_message {
            Destination::StoreOnly
        } else {
            Destination::CrmLead
        },
        ..LeadEvent::new(
            Source::Backfill,
            row.lead_id.clone(),
            Action::Create,
            row_instant(row),
        )
    })
}

/// Provider calls and spend so far in this process.
fn paid(state: &AppState) -> (u64, f64) {
    let m = &state.metrics;
    let calls = m.tier_counts(LookupKind::Contact).provider_call
        + m.tier_counts(LookupKind::Cpf).provider_call;
    let spend = m.money(Provider::Diretrix).0 + m.money(Provider::WorkApi).0;
    (calls, spend)
}

/// Runs the rows; `on_row` sees each result with the totals so far. Stops taking rows when
/// `stop` is cancelled and returns once the rows in flight finished.
pub async fn run(
    state: &AppState,
    rows: Rows,
    options: Options,
    stop: CancellationToken,
    mut on_row: impl FnMut(&RowResult, &Summary),
) -> Summary {
    let started = Instant::now();
    let (calls_before, spend_before) = paid(state);
    let rows: Vec<_> = rows
        .into_iter()
        .take(options.limit.unwrap_or(usize::MAX))
        .collect();
    let mut summary = Summary {
        total: rows.len() as u64,
        ..Summary::default()
    };
    // A plain mutex held for no await: the loop below reads it while row futures are parked.
    let dry = Arc::new(Mutex::new(DryRun::default()));
    let concurrency = options.concurrency.max(1);
    let stop_feed = stop.clone();
    let mut results = futures::stream::iter(rows)
        .take_while(move |_| std::future::ready(!stop_feed.is_cancelled()))
        .map(|row| {
            let dry = dry.clone();
            async move {
                match row {
                    Err(problem) => invalid(&problem),
                    Ok(row) if options.dry_run => price(state, &row, &dry).await,
                    Ok(row) => one(state, &row, options.no_message).await,
                }
            }
        })
        .buffer_unordered(concurrency);
    while let Some(result) = results.next().await {
        summary.count(result.outcome);
        summary.elapsed = started.elapsed();
        if options.dry_run {
            let d = lock(&dry);
            summary.provider_calls = d.calls;
            summary.spend = d.spend;
        } else {
            let (calls, spend) = paid(state);
            summary.provider_calls = calls - calls_before;
            summary.spend = spend - spend_before;
        }
        on_row(&result, &summary);
    }
    summary.elapsed = started.elapsed();
    summary.interrupted = stop.is_cancelled() && summary.rows < summary.total;
    summary
}

fn invalid(problem: &RowProblem) -> RowResult {
    RowResult {
        line: problem.line,
        lead_id: problem.lead_id.clone(),
        outcome: Outcome::Invalid,
        tier: None,
        cpf: None,
        detail: Some(problem.problem.to_string()),
    }
}

/// One row through the inbox and the workers.
async fn one(state: &AppState, row: &BackfillRow, no_message: bool) -> RowResult {
    let mut result = RowResult {
        line: row.line,
        lead_id: Some(row.lead_id.clone()),
        outcome: Outcome::Invalid,
        tier: None,
        cpf: None,
        detail: None,
    };
    let event = match to_event(row, no_message) {
        Ok(e) => e,
        Err(why) => {
            result.detail = Some(why.into());
            return result;
        }
    };
    result.cpf = event.cpf.clone();
    let keys = event.customer.keys();
    // The payload kept for audit and erasure: the row's values as the file had them.
    let payload = serde_json::json!({
        "line": row.line,
        "lead_id": row.lead_id.as_str(),
        "name": row.name,
        "phone": row.phone,
        "email": row.email,
        "cpf": row.cpf,
    });
    let inserted = state
        .store
        .insert_events(&[NewEvent::new(event.clone(), payload)])
        .await;
    let id = match inserted.as_deref() {
        Ok([InsertOutcome::Accepted(id)]) => *id,
        Ok([InsertOutcome::Duplicate]) => {
            result.outcome = Outcome::AlreadyDone;
            result.detail = Some("recorded by an earlier run".into());
            return result;
        }
        Ok(_) | Err(_) => {
            if let Err(e) = &inserted {
                tracing::warn!(line = row.line, error = %e, "storing a backfill row failed");
            }
            result.outcome = Outcome::Failed;
            result.detail = Some("the database refused the row".into());
            return result;
        }
    };
    state.wake_workers();
    // Wait for the workers to leave the event: done, dead, or due again later.
    let record = loop {
        match state.store.event(id).await {
            Ok(Some(r))
                if matches!(r.state, EventState::Done | EventState::Dead) || r.attempts > 0 =>
            {
                break r;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(event = id, error = %e, "reading a backfill row's event"),
        }
        tokio::time::sleep(POLL).await;
    };
    if record.state != EventState::Done {
        result.outcome = Outcome::Failed;
        result.detail = Some(if record.state == EventState::Dead {
            "given up (see the dead events)".into()
        } else {
            "will be retried by the service".into()
        });
        return result;
    }
    // Found when any contact (or the given CPF) led to a person: memory holds every answer
    // the event's resolution just used.
    let mut found = false;
    if let Some(cpf) = &event.cpf {
        found = matches!(state.resolver.person(cpf).await, Ok((Lookup::Found(_), _)));
    } else {
        for key in &keys {
            if let Ok((Lookup::Found(cpf), tier)) = state.resolver.contact(key).await {
                result.cpf = Some(cpf.clone());
                result.tier = Some(tier);
                found = matches!(state.resolver.person(&cpf).await, Ok((Lookup::Found(_), _)));
                if found {
                    break;
                }
            }
        }
    }
    result.outcome = if found {
        Outcome::Found
    } else {
        Outcome::NotFound
    };
    result.detail = record.outcome.map(|o| o.as_str().to_owned());
    result
}

/// What a dry run would buy: each distinct contact and CPF priced once.
#[derive(Default)]
struct DryRun {
    contacts: HashSet<ContactKey>,
    cpfs: HashSet<Cpf>,
    calls: u64,
    spend: f64,
}

fn lock(dry: &Mutex<DryRun>) -> MutexGuard<'_, DryRun> {
    // Counters only: a panic elsewhere leaves them usable.
    dry.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One row of a dry run: what memory and the database know, and what the rest would cost.
async fn price(state: &AppState, row: &BackfillRow, dry: &Mutex<DryRun>) -> RowResult {
    let mut result = RowResult {
        line: row.line,
        lead_id: Some(row.lead_id.clone()),
        outcome: Outcome::Invalid,
        tier: None,
        cpf: None,
        detail: None,
    };
    let event = match to_event(row, true) {
        Ok(e) => e,
        Err(why) => {
            result.detail = Some(why.into());
            return result;
        }
    };
    let (diretrix, work) = (
        state.settings.diretrix.price_per_call,
        state.settings.work_api.price_per_call,
    );
    let mut buys = false;
    let mut found = false;
    let mut cpfs: Vec<Cpf> = event.cpf.iter().cloned().collect();
    if event.cpf.is_none() {
        for key in event.customer.keys() {
            match known_contact(state, &key).await {
                Some((Lookup::Found(cpf), tier)) => {
                    result.tier = Some(tier);
                    cpfs.push(cpf);
                }
                Some((Lookup::NotFound, tier)) => result.tier = Some(tier),
                None => {
                    buys = true;
                    let mut d = lock(dry);
                    if d.contacts.insert(key) {
                        d.calls += 1;
                        d.spend += diretrix;
                    }
                }
            }
        }
    }
    for cpf in cpfs {
        result.cpf = Some(cpf.clone());
        match known_person(state, &cpf).await {
            Some(Lookup::Found(())) => found = true,
            Some(Lookup::NotFound) => {}
            None => {
                buys = true;
                let mut d = lock(dry);
                if d.cpfs.insert(cpf) {
                    d.calls += 1;
                    d.spend += work;
                }
            }
        }
    }
    result.outcome = match (buys, found) {
        (true, _) => Outcome::WouldBuy,
        (false, true) => Outcome::Found,
        (false, false) => Outcome::NotFound,
    };
    result
}

/// A contact's answer from memory or the database, never a provider.
async fn known_contact(state: &AppState, key: &ContactKey) -> Option<(Lookup<Cpf>, Tier)> {
    if let Some(answer) = state.resolver.peek_contact(key).await {
        return Some((answer, Tier::Memory));
    }
    match state.store.find_contact(key).await {
        Ok(Some(answer)) => Some((answer, Tier::Database)),
        _ => None,
    }
}

/// A CPF's answer from memory or the database, never a provider.
async fn known_person(state: &AppState, cpf: &Cpf) -> Option<Lookup<()>> {
    if let Some(answer) = state.resolver.peek_person(cpf).await {
        return Some(match answer {
            Lookup::Found(_) => Lookup::Found(()),
            Lookup::NotFound => Lookup::NotFound,
        });
    }
    let fresh_since = OffsetDateTime::now_utc() - state.resolver.ttls().max_age;
    match state.store.find_person(cpf, fresh_since).await {
        Ok(Some(Lookup::Found(_))) => Some(Lookup::Found(())),
        Ok(Some(Lookup::NotFound)) => Some(Lookup::NotFound),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(phone: Option<&str>, cpf: Option<&str>) -> BackfillRow {
        BackfillRow {
            line: 2,
            lead_id: LeadId::parse("L1").unwrap(),
            name: Some("Ana".into()),
            phone: phone.map(Into::into),
            email: None,
            cpf: cpf.map(Into::into),
        }
    }

    #[test]
    fn a_row_has_a_stable_instant_that_changes_with_its_values() {
        let a = row(Some("11912345678"), None);
        assert_eq!(row_instant(&a), row_instant(&a.clone()));
        assert_ne!(
            row_instant(&a),
            row_instant(&row(Some("11912345679"), None))
        );
        assert_eq!(row_instant(&a).year(), 1970);
    }

    #[test]
    fn a_cpf_that_lost_its_leading_zero_is_padded() {
        // 045.678.901-23 without its zero, as a spreadsheet keeps it.
        let digits = "04567890123";
        if Cpf::parse(digits).is_err() {
            return;
        }
        let event = to_event(&row(Some("11912345678"), Some(&digits[1..])), false).unwrap();
        assert_eq!(event.cpf.unwrap().as_str(), digits);
    }

    #[test]
    fn unusable_rows_and_store_only() {
        assert!(to_event(&row(None, Some("52998224725")), false).is_err());
        assert!(to_event(&row(Some("12"), None), false).is_err());
        let event = to_event(&row(Some("11912345678"), None), true).unwrap();
        assert_eq!(event.destination, Destination::StoreOnly);
        assert_eq!(event.source, Source::Backfill);
    }
}
