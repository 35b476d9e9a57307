#![no_main]
//! Any text as an e-mail: no panic; the canonical form parses back to itself.
use enricher::domain::Email;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(email) = Email::parse(raw) {
        assert_eq!(Email::parse(email.as_str()).ok().as_ref(), Some(&email));
    }
});
