//! The CPF (Cadastro de Pessoas Físicas), the Brazilian individual taxpayer number.
//!
//! It is the identity the whole service resolves contacts to, so it is kept in one canonical
//! form (11 ASCII digits with valid check digits) and prints masked everywhere except through
//! the explicit `as_str` / `formatted` accessors, because a CPF is personal data.

use std::fmt;
use std::str::FromStr;

use super::error::DomainError;

/// A valid CPF, stored as its 11 plain digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cpf(String);

impl Cpf {
    /// Accepts the plain (`52601815906`) and formatted (`526.018.159-06`) forms; dots, dashes and
    /// spaces are ignored wherever they are, since CRMs and providers each place them differently.
    pub fn parse(s: &str) -> Result<Cpf, DomainError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DomainError::Empty);
        }
        let (digits, len) = Self::read_digits(s)?;
        if len != digits.len() {
            return Err(DomainError::InvalidCpf("must have 11 digits"));
        }
        Cpf::from_digits(digits)
    }

    /// Like [`Cpf::parse`], but a value with fewer than 11 digits is left-padded with zeros
    /// first: spreadsheets and JSON numbers drop the leading zeros of CPFs such as
    /// `012.345.678-90`. The padded value must still pass every rule of `parse` (check digits,
    /// placeholders), so padding never turns garbage into a CPF. A number in scientific
    /// notation (`1.23457E+10`, what a spreadsheet shows for a long number) has lost digits
    /// and is refused, never guessed. The CSV backfill and the provider adapters use this.
    pub fn parse_padded(s: &str) -> Result<Cpf, DomainError> {
        let s = s.trim();
        if s.contains(['e', 'E']) && s.chars().any(|c| c.is_ascii_digit()) {
            return Err(DomainError::InvalidCpf(
                "in scientific notation: digits were lost",
            ));
        }
        let (mut digits, len) = Self::read_digits(s)?;
        // Fewer than 3 digits left is not a CPF that lost zeros but a stray number.
        if len < 3 {
            return Err(DomainError::InvalidCpf("must have 11 digits"));
        }
        let zeros = digits.len() - len;
        digits.copy_within(..len, zeros);
        digits[..zeros].fill(0);
        Cpf::from_digits(digits)
    }

    /// The digits of a CPF as typed, left-aligned, and how many there are: dots, dashes and
    /// spaces are skipped; anything else, or more than 11 digits, is refused.
    fn read_digits(s: &str) -> Result<([u8; 11], usize), DomainError> {
        let mut digits = [0u8; 11];
        let mut len = 0usize;
        for c in s.chars() {
            match c {
                '0'..='9' => {
                    if len == digits.len() {
                        return Err(DomainError::InvalidCpf("more than 11 digits"));
                    }
                    digits[len] = c as u8 - b'0';
                    len += 1;
                }
                '.' | '-' | ' ' => {}
                _ => {
                    return Err(DomainError::InvalidCpf(
                        "contains characters other than digits, dots and dashes",
                    ));
                }
            }
        }
        if len == 0 {
            return Err(DomainError::Empty);
        }
        Ok((digits, len))
    }

    /// Why this CPF cannot be trusted as anyone's, or `None`: filler values pass the check
    /// digit arithmetic, so they are recognised by shape.
    fn placeholder_reason(digits: &[u8; 11]) -> Option<&'static str> {
        let base = &digits[..9];
        if digits.iter().all(|&d| d == digits[0]) {
            return Some("CPF with all digits the same");
        }
        // 123.456.789-09, 987.654.321-00: a keyboard run typed to get past a form.
        let ascending = base.windows(2).all(|w| w[1] == (w[0] + 1) % 10);
        let descending = base.windows(2).all(|w| w[0] == (w[1] + 1) % 10);
        if ascending || descending {
            return Some("CPF whose digits are a counting sequence");
        }
        // 000.000.001-91, 000.000.002-72: zeros then a small number, a generated filler.
        if base.iter().filter(|&&d| d != 0).count() <= 1 {
            return Some("CPF made of zeros and one digit");
        }
        None
    }

    fn from_digits(digits: [u8; 11]) -> Result<Cpf, DomainError> {
        let mut base = [0u8; 9];
        base.copy_from_slice(&digits[..9]);
        let (d1, d2) = check_digits(&base);
        if digits[9] != d1 || digits[10] != d2 {
            // Only numbers that would pass are called placeholders: a wrong check digit is a
            // typo, and saying so helps whoever fixes the record.
            if digits.iter().all(|&d| d == digits[0]) {
                return Err(DomainError::Placeholder("CPF with all digits the same"));
            }
            return Err(DomainError::InvalidCpf("check digits do not match"));
        }
        if let Some(reason) = Cpf::placeholder_reason(&digits) {
            return Err(DomainError::Placeholder(reason));
        }
        Ok(Cpf(to_string(&digits)))
    }

    /// The 11 plain digits, e.g. `52601815906`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The conventional written form, e.g. `526.018.159-06`.
    pub fn formatted(&self) -> String {
        let d = &self.0;
        format!("{}.{}.{}-{}", &d[0..3], &d[3..6], &d[6..9], &d[9..11])
    }

    /// Only the last 4 digits stay visible (`***.***.*59-06`): enough to tell two people apart
    /// in a log line without disclosing the number.
    pub fn masked(&self) -> String {
        let d = &self.0;
        format!("***.***.*{}-{}", &d[7..9], &d[9..11])
    }

    /// Completes 9 base digits with their check digits, for deterministic test-data generation.
    /// Values above 9 are taken modulo 10, and a base that `parse` would call a placeholder
    /// (all the same digit, a counting run, zeros and one digit) gets digits bumped from the
    /// end until it is not, so any input yields a valid CPF without panicking.
    pub fn from_base(base: [u8; 9]) -> Cpf {
        let mut base = base.map(|d| d % 10);
        let mut bump = base.len();
        loop {
            let (d1, d2) = check_digits(&base);
            let mut digits = [0u8; 11];
            digits[..9].copy_from_slice(&base);
            digits[9] = d1;
            digits[10] = d2;
            // At most a few bumps: two changed digits already break every placeholder shape.
            if Cpf::placeholder_reason(&digits).is_none() || bump == 0 {
                return Cpf(to_string(&digits));
            }
            bump -= 1;
            base[bump] = (base[bump] + 1) % 10;
        }
    }
}

/// The two mod-11 check digits of the Receita Federal algorithm.
fn check_digits(base: &[u8; 9]) -> (u8, u8) {
    let d1 = check_digit(base);
    let mut ten = [0u8; 10];
    ten[..9].copy_from_slice(base);
    ten[9] = d1;
    (d1, check_digit(&ten))
}

/// Weights run from `len + 1` down to 2; a remainder of 10 folds to 0.
fn check_digit(digits: &[u8]) -> u8 {
    let weight_start = digits.len() as u32 + 1;
    let sum: u32 = digits
        .iter()
        .zip((2..=weight_start).rev())
        .map(|(&d, w)| u32::from(d) * w)
        .sum();
    ((sum * 10 % 11) % 10) as u8
}

fn to_string(digits: &[u8; 11]) -> String {
    digits.iter().map(|&d| char::from(b'0' + d)).collect()
}

impl fmt::Debug for Cpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cpf({})", self.masked())
    }
}

impl fmt::Display for Cpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl FromStr for Cpf {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cpf::parse(s)
    }
}

impl serde::Serialize for Cpf {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Cpf {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Cpf::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Synthetic CPFs whose check digits were computed by hand from arbitrary bases.
    const VALID: &[&str] = &["52601815906", "11144477735", "04567812344", "00000145750"];

    #[test]
    fn synthetic_cpfs_with_correct_check_digits_are_accepted() {
        for s in VALID {
            assert_eq!(
                Cpf::parse(s).map(|c| c.as_str().to_string()),
                Ok(s.to_string())
            );
        }
    }

    #[test]
    fn formatted_and_padded_forms_give_the_plain_digits() {
        for input in [
            "526.018.159-06",
            "  52601815906 ",
            "526 018 159 06",
            "526018159-06",
        ] {
            assert_eq!(
                Cpf::parse(input).map(|c| c.as_str().to_string()),
                Ok("52601815906".to_string()),
                "{input}"
            );
        }
    }

    #[test]
    fn invalid_cpfs_are_refused() {
        for input in [
            "52601815907",
            "52601815916",
            "5260181590",
            "526018159061",
            "5260181590a",
            "526/018/159-06",
            "52601815906x",
            "abc",
        ] {
            assert!(
                matches!(Cpf::parse(input), Err(DomainError::InvalidCpf(_))),
                "{input}: {:?}",
                Cpf::parse(input)
            );
        }
    }

    #[test]
    fn all_same_digit_cpfs_are_placeholders_even_though_their_check_digits_pass() {
        for d in 0..=9u8 {
            let s: String = std::iter::repeat_n(char::from(b'0' + d), 11).collect();
            assert!(
                matches!(Cpf::parse(&s), Err(DomainError::Placeholder(_))),
                "{s}"
            );
        }
    }

    #[test]
    fn blank_input_is_empty() {
        assert_eq!(Cpf::parse(""), Err(DomainError::Empty));
        assert_eq!(Cpf::parse("  "), Err(DomainError::Empty));
        assert_eq!(Cpf::parse(".-"), Err(DomainError::Empty));
    }

    #[test]
    fn from_base_computes_the_known_check_digits() {
        assert_eq!(
            Cpf::from_base([5, 2, 6, 0, 1, 8, 1, 5, 9]).as_str(),
            "52601815906"
        );
        assert_eq!(
            Cpf::from_base([1, 1, 1, 4, 4, 4, 7, 7, 7]).as_str(),
            "11144477735"
        );
    }

    #[test]
    fn from_base_never_yields_a_placeholder() {
        for base in [
            [1, 2, 3, 4, 5, 6, 7, 8, 9],
            [0; 9],
            [0, 0, 0, 0, 0, 0, 0, 0, 1],
            [9, 8, 7, 6, 5, 4, 3, 2, 1],
        ] {
            let cpf = Cpf::from_base(base);
            assert_eq!(Cpf::parse(cpf.as_str()), Ok(cpf.clone()), "{base:?}");
        }
    }

    /// Filler typed to get past a form: the check digits are right, nobody is behind it.
    #[test]
    fn placeholders_with_valid_check_digits_are_recognised_with_a_reason() {
        let table: &[(&str, &str)] = &[
            ("123.456.789-09", "counting sequence"),
            ("12345678909", "counting sequence"),
            ("987.654.321-00", "counting sequence"),
            ("000.000.001-91", "zeros and one digit"),
            ("000.000.002-72", "zeros and one digit"),
            ("00000000191", "zeros and one digit"),
            ("000.000.000-00", "all digits the same"),
            ("111.111.111-11", "all digits the same"),
            ("999.999.999-99", "all digits the same"),
        ];
        for (input, why) in table {
            match Cpf::parse(input) {
                Err(DomainError::Placeholder(reason)) => {
                    assert!(reason.contains(why), "{input}: {reason}");
                    // The reason is fixed text: safe to log, it never carries the number.
                    assert!(!reason.chars().any(|c| c.is_ascii_digit()), "{reason}");
                }
                other => panic!("{input}: expected a placeholder, got {other:?}"),
            }
            assert!(
                matches!(Cpf::parse_padded(input), Err(DomainError::Placeholder(_))),
                "{input} padded"
            );
        }
    }

    /// What `parse_padded` does with what spreadsheets and forms produce; `parse` stays strict.
    #[test]
    fn padded_parsing_restores_lost_leading_zeros_and_refuses_lost_digits() {
        // (input, Some(padded result) | None = refused, why)
        let table: &[(&str, Option<&str>, &str)] = &[
            ("4567812344", Some("04567812344"), "one zero lost"),
            ("145750", Some("00000145750"), "many zeros lost"),
            (
                "456.781.234-4",
                Some("04567812344"),
                "formatting kept, zero lost",
            ),
            ("04567812344", Some("04567812344"), "already complete"),
            ("526.018.159-06", Some("52601815906"), "formatted, complete"),
            ("4567812345", None, "check digits fail after padding"),
            ("191", None, "pads to the 000.000.001-91 placeholder"),
            ("12", None, "too short to be a CPF"),
            ("1.23457E+10", None, "scientific notation lost digits"),
            ("1,23457E+10", None, "scientific notation, decimal comma"),
            ("5.2601815906e10", None, "scientific notation, all digits"),
            ("526018159061", None, "more than 11 digits"),
            ("", None, "empty"),
        ];
        for (input, expected, why) in table {
            let got = Cpf::parse_padded(input).map(|c| c.as_str().to_string());
            match expected {
                Some(digits) => assert_eq!(got, Ok(digits.to_string()), "{why}: {input}"),
                None => assert!(got.is_err(), "{why}: {input} gave {got:?}"),
            }
        }
        assert!(Cpf::parse("1234567890").is_err(), "parse does not pad");
    }

    #[test]
    fn from_base_turns_an_all_same_base_into_a_valid_cpf() {
        for d in 0..=9u8 {
            let cpf = Cpf::from_base([d; 9]);
            assert_eq!(Cpf::parse(cpf.as_str()), Ok(cpf.clone()));
        }
        assert_eq!(Cpf::from_base([13; 9]), Cpf::from_base([3; 9]));
    }

    #[test]
    fn accessors_render_formatted_and_masked_forms() {
        let cpf = Cpf::parse("52601815906").expect("valid");
        assert_eq!(cpf.formatted(), "526.018.159-06");
        assert_eq!(cpf.masked(), "***.***.*59-06");
        assert_eq!(format!("{cpf}"), "***.***.*59-06");
        assert_eq!(format!("{cpf:?}"), "Cpf(***.***.*59-06)");
    }

    #[test]
    fn errors_never_echo_the_input() {
        for input in ["52601815907", "5260181590a", "11111111111"] {
            let msg = Cpf::parse(input).expect_err("invalid").to_string();
            assert!(!msg.contains("526") && !msg.contains("111"), "{msg}");
        }
    }

    #[test]
    fn serde_writes_plain_digits_and_reads_through_parse() {
        let cpf = Cpf::parse("526.018.159-06").expect("valid");
        assert_eq!(
            serde_json::to_string(&cpf).expect("serializes"),
            "\"52601815906\""
        );
        let back: Cpf = serde_json::from_str("\"526.018.159-06\"").expect("parses");
        assert_eq!(back, cpf);
        assert!(serde_json::from_str::<Cpf>("\"52601815907\"").is_err());
    }

    #[test]
    fn a_first_digit_change_that_folds_remainder_ten_onto_zero_is_a_blind_spot_of_the_algorithm() {
        // The mod-11 scheme maps remainders 10 and 0 to the same check digit, so a few single
        // digit changes keep both check digits; the property test below only allows these.
        assert!(Cpf::parse("62601815906").is_ok());
    }

    /// The raw first-check remainder (before folding 10 to 0).
    fn raw_first_remainder(digits: &[u8]) -> u32 {
        let sum: u32 = digits[..9]
            .iter()
            .zip((2..=10u32).rev())
            .map(|(&d, w)| u32::from(d) * w)
            .sum();
        sum * 10 % 11
    }

    proptest! {
        #[test]
        fn from_base_parses_from_plain_and_formatted_forms(base in proptest::array::uniform9(0u8..10)) {
            let cpf = Cpf::from_base(base);
            prop_assert_eq!(Cpf::parse(cpf.as_str()), Ok(cpf.clone()));
            prop_assert_eq!(Cpf::parse(&cpf.formatted()), Ok(cpf.clone()));
            prop_assert_eq!(Cpf::parse(&format!(" {} ", cpf.formatted())), Ok(cpf.clone()));
        }

        #[test]
        fn changing_any_single_digit_makes_it_invalid_unless_the_remainder_folds(
            base in proptest::array::uniform9(0u8..10),
            pos in 0usize..11,
            delta in 1u8..10,
        ) {
            let cpf = Cpf::from_base(base);
            let mut digits: Vec<u8> = cpf.as_str().bytes().map(|b| b - b'0').collect();
            let original_r1 = raw_first_remainder(&digits);
            digits[pos] = (digits[pos] + delta) % 10;
            let changed: String = digits.iter().map(|&d| char::from(b'0' + d)).collect();
            let accepted = Cpf::parse(&changed).is_ok();
            // Only the 10 -> 0 fold of the first check can hide a change (see the test above).
            let folded = {
                let mut pair = [original_r1, raw_first_remainder(&digits)];
                pair.sort_unstable();
                pair == [0, 10]
            };
            prop_assert!(!accepted || (pos < 9 && folded), "{} -> {}", cpf.masked(), pos);
        }

        #[test]
        fn masked_never_contains_the_clear_value(base in proptest::array::uniform9(0u8..10)) {
            let cpf = Cpf::from_base(base);
            let masked = cpf.masked();
            let masked_digits: String = masked.chars().filter(char::is_ascii_digit).collect();
            prop_assert!(masked_digits.len() <= 4);
            prop_assert!(!masked.contains(cpf.as_str()) && !masked.contains(&cpf.formatted()));
            let shown = format!("{cpf:?}{cpf}");
            prop_assert!(!shown.contains(&cpf.as_str()[..7]));
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,20}") {
            let _ = Cpf::parse(&s);
        }
    }
}
