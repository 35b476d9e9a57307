#![no_main]
//! Any bytes as a C2S webhook body: no panic; an accepted event's stored payload reads again
//! with the same identity (the worker parses it a second time).
use enricher::intake::c2s::{C2sEvent, parse_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(events) = parse_body(&body) {
        for event in events {
            let again = C2sEvent::from_payload(&event.payload, "").unwrap();
            assert_eq!(again.lead_id, event.lead_id);
            assert_eq!(again.updated_at, event.event_at);
        }
    }
});
