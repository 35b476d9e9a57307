#![no_main]
//! Any bytes as a Diretrix answer: no panic, and every candidate read is a valid person or
//! company (a 14-digit number is never read as a CPF).
use enricher::domain::Candidate;
use enricher::providers::diretrix::parse_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(candidates) = parse_answer(data) {
        for candidate in &candidates {
            match candidate {
                Candidate::Person(p) => assert_eq!(p.cpf.as_str().len(), 11),
                Candidate::Company { cnpj, .. } => assert_eq!(cnpj.as_str().len(), 14),
            }
        }
    }
});
