#![no_main]
//! Any stored `(kind, value)` pair as a contact key: no panic; the stored value gives the
//! same key. The first byte picks the kind.
use enricher::domain::ContactKey;
use enricher::domain::contact_key::ContactKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = if first % 2 == 0 { ContactKind::Phone } else { ContactKind::Email };
    if let Ok(key) = ContactKey::from_parts(kind, raw) {
        assert_eq!(ContactKey::from_parts(key.kind(), key.value()).ok().as_ref(), Some(&key));
    }
});
