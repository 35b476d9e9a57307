#![no_main]
//! Any text as a lead id: no panic; a parsed id parses back to itself.
use enricher::domain::LeadId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = LeadId::parse(raw) {
        assert_eq!(LeadId::parse(id.as_str()).ok().as_ref(), Some(&id));
    }
});
