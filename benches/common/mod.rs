//! Pieces the benchmarks share, one file per concern. A folder module, so cargo does not take
//! it for a bench. Each bench uses some of it; what one bench leaves unused is not dead code.
#![allow(dead_code)]

pub mod machine;
pub mod postgres;
pub mod stats;
