//! The CNPJ (Cadastro Nacional da Pessoa Jurídica), the Brazilian company registry number.
//!
//! Contact lookups list companies beside people (a company line, a family business), and a
//! 14-digit CNPJ must never be cut down to 11 digits and taken for a CPF. This type owns the
//! canonical form (14 ASCII digits with valid check digits) and prints masked: a company
//! number can identify a sole trader, so it is treated like personal data.

use std::fmt;

use super::error::DomainError;

/// A valid CNPJ, stored as its 14 plain digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cnpj(String);

impl Cnpj {
    /// Accepts the plain (`39182746000107`) and formatted (`39.182.746/0001-07`) forms.
    pub fn parse(s: &str) -> Result<Cnpj, DomainError> {
        let s = s.trim();
        let mut digits = [0u8; 14];
        let mut len = 0usize;
        for c in s.chars() {
            match c {
                '0'..='9' => {
                    if len == digits.len() {
                        return Err(DomainError::InvalidCnpj("more than 14 digits"));
                    }
                    digits[len] = c as u8 - b'0';
                    len += 1;
                }
                '.' | '-' | '/' | ' ' => {}
                _ => {
                    return Err(DomainError::InvalidCnpj(
                        "contains characters other than digits and separators",
                    ));
                }
            }
        }
        if len == 0 {
            return Err(DomainError::Empty);
        }
        if len != digits.len() {
            return Err(DomainError::InvalidCnpj("must have 14 digits"));
        }
        if digits.iter().all(|&d| d == digits[0]) {
            return Err(DomainError::Placeholder("CNPJ with all digits the same"));
        }
        let first = check_digit(&digits[..12]);
        let second = check_digit(&digits[..13]);
        if digits[12] != first || digits[13] != second {
            return Err(DomainError::InvalidCnpj("check digits do not match"));
        }
        Ok(Cnpj(digits.iter().map(|&d| char::from(b'0' + d)).collect()))
    }

    /// The 14 plain digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The conventional written form, e.g. `39.182.746/0001-07`.
    pub fn formatted(&self) -> String {
        let d = &self.0;
        format!(
            "{}.{}.{}/{}-{}",
            &d[0..2],
            &d[2..5],
            &d[5..8],
            &d[8..12],
            &d[12..14]
        )
    }

    /// Branch and check digits stay visible (`**.***.***/0001-07`): enough to tell two
    /// companies apart in a log line without disclosing the root number.
    pub fn masked(&self) -> String {
        let d = &self.0;
        format!("**.***.***/{}-{}", &d[8..12], &d[12..14])
    }
}

/// Weights run 2..=9 from the right, repeating; a remainder below 2 gives 0.
fn check_digit(digits: &[u8]) -> u8 {
    let sum: u32 = digits
        .iter()
        .rev()
        .zip((2..=9u32).cycle())
        .map(|(&d, w)| u32::from(d) * w)
        .sum();
    let remainder = sum % 11;
    if remainder < 2 {
        0
    } else {
        // 2..=10 gives 9..=1: fits a digit.
        (11 - remainder) as u8
    }
}

impl fmt::Debug for Cnpj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cnpj({})", self.masked())
    }
}

impl fmt::Display for Cnpj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl serde::Serialize for Cnpj {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Cnpj {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Cnpj::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cnpjs_are_read_in_each_written_form_or_refused_with_a_reason() {
        // (input, Some(plain digits) | None = refused, why)
        let table: &[(&str, Option<&str>, &str)] = &[
            ("39182746000107", Some("39182746000107"), "plain"),
            ("39.182.746/0001-07", Some("39182746000107"), "formatted"),
            (" 39 182 746 0001 07 ", Some("39182746000107"), "spaces"),
            ("39182746000108", None, "second check digit wrong"),
            ("39182746000117", None, "first check digit wrong"),
            ("3918274600010", None, "13 digits"),
            ("391827460001070", None, "15 digits"),
            ("52601815906", None, "a CPF is not a CNPJ"),
            ("00000000000000", None, "all zeros"),
            ("39.182.746/0001-0x", None, "a letter"),
            ("", None, "empty"),
        ];
        for (input, expected, why) in table {
            let got = Cnpj::parse(input).map(|c| c.as_str().to_string());
            match expected {
                Some(d) => assert_eq!(got, Ok(d.to_string()), "{why}"),
                None => assert!(got.is_err(), "{why}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_cnpj_prints_masked_and_its_errors_never_echo_it() {
        let cnpj = Cnpj::parse("39182746000107").expect("valid");
        assert_eq!(cnpj.formatted(), "39.182.746/0001-07");
        assert_eq!(format!("{cnpj}"), "**.***.***/0001-07");
        assert_eq!(format!("{cnpj:?}"), "Cnpj(**.***.***/0001-07)");
        let err = Cnpj::parse("39182746000108")
            .expect_err("invalid")
            .to_string();
        assert!(!err.contains("39182746"), "{err}");
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,24}") {
            let _ = Cnpj::parse(&s);
        }
    }
}
