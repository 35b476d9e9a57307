#![no_main]
//! Any text as a CPF: no panic; plain and formatted forms parse back to it.
use enricher::domain::Cpf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cpf) = Cpf::parse(raw) {
        assert_eq!(Cpf::parse(cpf.as_str()).ok().as_ref(), Some(&cpf));
        assert_eq!(Cpf::parse(&cpf.formatted()).ok().as_ref(), Some(&cpf));
    }
});
