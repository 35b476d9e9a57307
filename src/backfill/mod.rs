//! Backfill: enriching leads that already exist in the CRM, from a file operators export.
//!
//! [`csv`] reads the file into typed rows (or a reason per skipped row); [`report`] writes one
//! line per row saying what became of it; [`run`] turns rows into inbox events, waits for the
//! workers to carry them through, and prices a dry run. The command line (`enricher backfill`)
//! only wires these to a file, a terminal and Ctrl-C.

pub mod csv;
pub mod report;
pub mod run;
