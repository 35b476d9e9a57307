//! The compact form a person takes in the memory tier, and what an entry is weighed at.
//!
//! A [`Person`] as a struct is some thirty small heap blocks (every name, e-mail, phone and
//! address line its own `String`, every list its own `Vec`), each with the allocator's own
//! header and rounding, and each a separate free when the entry goes. Memory keeps the
//! person instead as one shared block of compact JSON, which is the same text the database
//! holds, and decodes it when a lookup hands the person out (a few microseconds, against the
//! milliseconds a message takes to render and post). One copy serves every key that reaches
//! the person: contact entries hold the CPF, person entries this block behind an `Arc`.
//!
//! The weights below are what an entry costs in RSS, measured with `cargo bench --bench
//! memory` (see BENCHMARKS.md), so that `ENRICHER__CACHE__MAX_BYTES` means bytes of memory.

use std::fmt;
use std::sync::Arc;

use crate::domain::Person;

/// RSS an entry costs beyond its own payload: moka's entry (key and value copies, its `Arc`ed
/// bookkeeping, the access-order and timer-wheel nodes, the hash table slot), the key's heap
/// block, and allocator rounding. Measured: see BENCHMARKS.md, "Memory tier".
pub(crate) const ENTRY_OVERHEAD: usize = 400;

/// What memory keeps of one person: compact JSON in one shared, immutable block.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedPerson(Arc<str>);

/// The packed bytes did not read back as a person; only a defect could cause it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a person kept in memory does not read back")]
pub struct UnpackError;

impl PackedPerson {
    /// Packs a person. Serializing plain strings and lists into JSON cannot fail.
    pub fn pack(person: &Person) -> PackedPerson {
        let text = serde_json::to_string(person).unwrap_or_default();
        PackedPerson(Arc::from(text))
    }

    /// The person again, as it was packed.
    pub fn unpack(&self) -> Result<Person, UnpackError> {
        serde_json::from_str(&self.0).map_err(|_| UnpackError)
    }

    /// Bytes of the packed form.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// The packed text is personal data: it never reaches a log line.
impl fmt::Debug for PackedPerson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PackedPerson").field(&self.len()).finish()
    }
}

/// Weight of an entry whose payload (key text, packed person) is `payload` bytes. Saturates
/// rather than wrapping: an absurd entry is the heaviest there is, not a light one.
pub(crate) fn entry_weight(payload: usize) -> u32 {
    u32::try_from(payload.saturating_add(ENTRY_OVERHEAD)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample person, with text that JSON must escape.
    fn full_person() -> Person {
        let mut person = Person::sample();
        person.addresses[0].complement = Some("AP 52 \"fundos\" \\ çã 🏠".into());
        person.companies[0].relation = None;
        person
    }

    #[test]
    fn a_packed_person_unpacks_to_the_same_person() {
        let person = full_person();
        assert_eq!(PackedPerson::pack(&person).unpack(), Ok(person));
    }

    #[test]
    fn a_person_with_nothing_but_a_cpf_round_trips() {
        let person: Person = serde_json::from_str(r#"{"cpf":"52601815906"}"#).unwrap();
        assert_eq!(PackedPerson::pack(&person).unpack(), Ok(person));
    }

    #[test]
    fn the_packed_form_is_compact_json_in_one_block() {
        let person = full_person();
        let packed = PackedPerson::pack(&person);
        assert_eq!(packed.len(), serde_json::to_vec(&person).unwrap().len());
        assert!(!packed.0.contains(": "), "no pretty-printing whitespace");
    }

    #[test]
    fn copies_of_a_packed_person_share_one_block() {
        let packed = PackedPerson::pack(&full_person());
        let copy = packed.clone();
        assert!(Arc::ptr_eq(&packed.0, &copy.0));
    }

    #[test]
    fn debug_of_a_packed_person_shows_its_size_and_no_data() {
        let shown = format!("{:?}", PackedPerson::pack(&full_person()));
        assert!(!shown.contains("MARIA"), "{shown}");
        assert!(!shown.contains("52601815906"), "{shown}");
        assert!(shown.starts_with("PackedPerson("), "{shown}");
    }

    #[test]
    fn bytes_that_are_not_a_person_do_not_unpack() {
        let broken = PackedPerson(Arc::from("{\"name\":\"no cpf\"}"));
        assert_eq!(broken.unpack(), Err(UnpackError));
    }

    #[test]
    fn an_entry_weighs_its_payload_plus_the_measured_overhead() {
        assert_eq!(entry_weight(0), ENTRY_OVERHEAD as u32);
        assert_eq!(entry_weight(600), (600 + ENTRY_OVERHEAD) as u32);
    }

    #[test]
    fn an_absurd_payload_weighs_the_most_there_is_instead_of_wrapping() {
        assert_eq!(entry_weight(usize::MAX), u32::MAX);
        assert_eq!(entry_weight(u32::MAX as usize), u32::MAX);
    }
}
