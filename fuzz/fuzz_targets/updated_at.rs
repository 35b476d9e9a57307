#![no_main]
//! Any text as the webhook's `updated_at`: no panic; the instant in RFC 3339 parses back.
use enricher::intake::c2s::parse_updated_at;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(at) = parse_updated_at(raw) {
        let printed = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert_eq!(parse_updated_at(&printed), Some(at));
    }
});
