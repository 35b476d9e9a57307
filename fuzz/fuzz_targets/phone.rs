#![no_main]
//! Any text as a phone: no panic; every printed form of a parsed phone parses back to it.
use enricher::domain::Phone;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(phone) = Phone::parse(raw) {
        assert_eq!(Phone::parse(phone.e164()).ok().as_ref(), Some(&phone));
        assert_eq!(Phone::parse(&phone.formatted()).ok().as_ref(), Some(&phone));
        assert_eq!(Phone::parse(&phone.national()).ok().as_ref(), Some(&phone));
    }
});
