//! Integration tests: the application on port 0 against a real database (Postgres and
//! SQLite) with wiremock standing in for every outside API. One binary, so it links once.

mod backfill;
mod candidates;
mod config;
mod crash;
mod delivery;
mod dump;
mod erasure;
mod faults;
mod google_ads;
mod group_commit;
mod harness;
mod helpers;
mod hostile;
mod instances;
mod intake;
mod operators;
mod outage;
mod pipeline;
mod process;
mod properties;
mod reconcile;
mod resolution;
mod retention;
mod shutdown;
mod store;
