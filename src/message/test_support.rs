//! What the message tests share: the two sample people, the lead's contacts, and a render
//! through the default template that checks the text is tidy.

use std::sync::Arc;

use super::{Finding, MessageRenderer, Via};
use crate::domain::{Cpf, Email, Person, Phone};

/// The sample person, which the Work API fixture reads into (MARIA, 526.018.159-06).
pub(super) fn maria() -> Arc<Person> {
    Arc::new(Person::sample())
}

/// A second, sparse person: no financial data, no lists.
pub(super) fn joao() -> Arc<Person> {
    let mut person = Person::with_cpf(Cpf::parse("11144477735").unwrap());
    person.name = Some("JOAO DA SILVA".into());
    person.sex = Some("Masculino".into());
    Arc::new(person)
}

pub(super) fn phone() -> Via {
    Via::Phone(Phone::parse("11987654321").unwrap())
}

pub(super) fn email() -> Via {
    Via::Email(Email::parse("maria.souza@example.com").unwrap())
}

pub(super) fn found(via: Via, person: &Arc<Person>) -> Finding {
    Finding {
        via,
        person: Some(Arc::clone(person)),
    }
}

pub(super) fn missed(via: Via) -> Finding {
    Finding { via, person: None }
}

pub(super) fn render(lead_name: Option<&str>, findings: &[Finding]) -> String {
    let text = MessageRenderer::default_template()
        .render(lead_name, findings)
        .unwrap();
    assert_tidy(&text);
    text
}

pub(super) fn assert_tidy(text: &str) {
    assert!(!text.contains("\n\n\n"), "run of blank lines:\n{text}");
    assert!(
        text.lines().all(|l| l == l.trim_end()),
        "trailing spaces:\n{text}"
    );
    assert!(!text.starts_with('\n') && !text.ends_with('\n'), "{text:?}");
    assert!(
        !text.contains("none"),
        "a missing value was printed:\n{text}"
    );
}
