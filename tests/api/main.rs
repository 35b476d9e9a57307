//! Integration tests: the application on port 0 against a real database (Postgres and
//! SQLite) with wiremock standing in for every outside API. One binary, so it links once.

mod config;
mod delivery;
mod faults;
mod helpers;
mod hostile;
mod intake;
mod logs;
mod operators;
mod pipeline;
mod store;
