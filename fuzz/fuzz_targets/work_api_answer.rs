#![no_main]
//! Any bytes as a Work API answer: no panic.
use enricher::providers::work_api::WorkApiAnswer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = WorkApiAnswer::parse(&body);
    }
});
