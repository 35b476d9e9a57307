//! The CRM's identifier of a lead.
//!
//! It is opaque to us and not personal data, so it prints in clear; it is only normalized enough
//! (trimmed, bounded, no control characters) to be safe as a database key and in log lines.

use std::fmt;
use std::str::FromStr;

use super::error::DomainError;

const MAX_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct LeadId(String);

impl LeadId {
    pub fn parse(s: &str) -> Result<LeadId, DomainError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DomainError::Empty);
        }
        if s.chars().count() > MAX_CHARS {
            return Err(DomainError::InvalidLeadId("longer than 200 characters"));
        }
        // Control characters could forge log lines or break the CRM callback URL.
        if s.chars().any(char::is_control) {
            return Err(DomainError::InvalidLeadId("contains control characters"));
        }
        // The id is one segment of the CRM's URL path; URL parsers drop `.` and `..` (even
        // percent-encoded), which would post to another path.
        if s == "." || s == ".." {
            return Err(DomainError::InvalidLeadId("is a relative path segment"));
        }
        Ok(LeadId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for LeadId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LeadId::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for LeadId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        LeadId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_trimmed_and_kept_verbatim_otherwise() {
        assert_eq!(
            LeadId::parse("  00Q5e00000AbCdE ").map(|l| l.to_string()),
            Ok("00Q5e00000AbCdE".into())
        );
        assert_eq!(
            LeadId::parse("lead/42 ção").map(|l| l.as_str().to_string()),
            Ok("lead/42 ção".into())
        );
    }

    #[test]
    fn blank_ids_are_empty() {
        assert_eq!(LeadId::parse(""), Err(DomainError::Empty));
        assert_eq!(LeadId::parse(" \t"), Err(DomainError::Empty));
    }

    #[test]
    fn ids_longer_than_200_characters_are_refused() {
        assert!(LeadId::parse(&"ç".repeat(200)).is_ok());
        assert!(matches!(
            LeadId::parse(&"a".repeat(201)),
            Err(DomainError::InvalidLeadId(_))
        ));
    }

    #[test]
    fn control_characters_inside_are_refused() {
        for input in ["lead\n42", "lead\u{0}42", "lead\u{1b}[31m", "a\rb"] {
            assert!(
                matches!(LeadId::parse(input), Err(DomainError::InvalidLeadId(_))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn dot_segments_are_refused_since_a_url_would_drop_them() {
        for input in [".", "..", " .. "] {
            assert!(
                matches!(LeadId::parse(input), Err(DomainError::InvalidLeadId(_))),
                "{input:?}"
            );
        }
        assert!(LeadId::parse("...").is_ok());
        assert!(LeadId::parse("a.b").is_ok());
    }

    #[test]
    fn serde_round_trips_as_a_plain_string_and_validates_on_read() {
        let id = LeadId::parse("lead-42").expect("valid");
        assert_eq!(
            serde_json::to_string(&id).expect("serializes"),
            "\"lead-42\""
        );
        assert_eq!(
            serde_json::from_str::<LeadId>("\" lead-42 \"").expect("parses"),
            id
        );
        assert!(serde_json::from_str::<LeadId>("\"   \"").is_err());
    }

    proptest! {
        #[test]
        fn any_printable_id_round_trips_through_display(s in "[!-~][ -~]{0,150}[!-~]") {
            let id = LeadId::parse(&s).expect("printable ASCII is valid");
            prop_assert_eq!(LeadId::parse(&id.to_string()), Ok(id));
        }
    }
}
