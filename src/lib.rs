//! Enricher turns a bare CRM lead (name, phone, email) into a known person and writes what it
//! learned back onto the lead, paying each data provider at most once per person.
//!
//! The modules follow a lead through the system:
//!
//! - [`intake`]: webhooks in; authenticate, validate, store in the inbox, answer.
//! - [`worker`]: takes inbox events with bounded concurrency and drives each to its end.
//! - [`domain`]: phones, emails, CPFs, lead ids, persons, as types that own their rules.
//! - [`resolution`]: contact -> CPF -> person through memory, database, provider, once.
//! - [`providers`]: one adapter per outside API, plus the in-process [`providers::sandbox`].
//! - [`store`]: one interface over Postgres and SQLite; inbox and person data.
//! - [`message`]: the message rendered from the operators' template.
//! - [`delivery`]: posting the message, and a POST whose outcome is unknown.
//! - [`retry`]: what a failed attempt turns into (retry with full-jitter backoff, park, dead
//!   letter), for provider, store and CRM failures alike.
//! - [`backfill`]: reading the files operators export, and the per-row report.
//! - [`reconcile`]: which listed CRM leads to put in the inbox, and from when to list.
//!
//! Beside them: [`http`] (router, errors, auth), [`config`], [`telemetry`], [`startup`],
//! [`state`] and [`cli`]. See ARCHITECTURE.md for the invariants that hold across them.

pub mod admin;
pub mod backfill;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod event;
pub mod http;
pub mod intake;
pub mod message;
pub mod metrics;
pub mod operators;
pub mod providers;
pub mod reconcile;
pub mod resolution;
pub mod retry;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod worker;
