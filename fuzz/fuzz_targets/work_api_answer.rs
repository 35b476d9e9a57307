#![no_main]
//! Any bytes as a Work API answer: no panic.
use enricher::domain::Person;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = Person::from_work_api(&body);
    }
});
