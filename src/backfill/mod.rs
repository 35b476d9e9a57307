//! Backfill: enriching leads that already exist in the CRM, from a file operators export.
//!
//! [`csv`] reads the file into typed rows (or a reason per skipped row); [`report`] writes one
//! line per row saying what became of it. Neither does I/O beyond the bytes and the writer
//! they are handed; running the rows through the tiers is the caller's job.

pub mod csv;
pub mod report;
