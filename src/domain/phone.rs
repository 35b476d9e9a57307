//! A Brazilian phone number, canonicalized to E.164 (`+5511987654321`).
//!
//! Phones are one of the two contact keys the cache and the providers are keyed on, so every way
//! people write the same Brazilian number (with or without `+55`, trunk `0`, carrier code,
//! punctuation, the pre-2016 8-digit mobile form) must collapse to one value. Only Brazilian
//! personal numbers (landline or mobile) are accepted: the providers only know Brazilians. The
//! number is personal data, so `Debug` and `Display` print it masked.

use std::fmt;
use std::str::FromStr;

use phonenumber::country::Id::BR;
use phonenumber::{Mode, PhoneNumber, Type};

use super::error::DomainError;

/// A valid Brazilian landline or mobile number in E.164 form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(String);

impl Phone {
    pub fn parse(s: &str) -> Result<Phone, DomainError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DomainError::Empty);
        }
        let (international, digits) = scan(s)?;
        if digits.is_empty() {
            return Err(DomainError::InvalidPhone("contains no digits"));
        }
        // Short all-same inputs (`+55`) are merely too short, not filler.
        if digits.len() >= 8 && all_same(&digits) {
            return Err(DomainError::Placeholder("all digits are the same"));
        }
        let nsn = national_significant_number(international, &digits)?;
        if nsn.len() < 10 {
            return Err(DomainError::InvalidPhone("too short"));
        }
        if nsn.len() > 11 {
            return Err(DomainError::InvalidPhone("too long"));
        }
        let subscriber = &nsn[2..];
        if all_same(subscriber)
            || (subscriber.len() == 9 && subscriber.starts_with('9') && all_same(&subscriber[1..]))
        {
            return Err(DomainError::Placeholder(
                "subscriber digits are all the same",
            ));
        }
        // A run that starts in the area code (`12345678901`) is keyboard filler, never a number.
        if is_run(&nsn) {
            return Err(DomainError::Placeholder("sequential digits"));
        }

        // Since the 2012-2016 migration every Brazilian mobile has 9 digits starting with 9, so
        // an 8-digit subscriber starting 6-9 is an old mobile written the pre-migration way; the
        // same line today is `9` + those 8 digits. libphonenumber still lists some 10-digit
        // 7-numbers (legacy trunked radio), but a lead typing one almost surely means the mobile,
        // so the 9-form wins whenever it is valid, keeping one key per line.
        if nsn.len() == 10 && matches!(nsn.as_bytes()[2], b'6'..=b'9') {
            let upgraded = format!("{}9{}", &nsn[..2], &nsn[2..]);
            if let Some(phone) = validate(&upgraded) {
                return Ok(phone);
            }
        }
        if let Some(phone) = validate(&nsn) {
            return Ok(phone);
        }
        // Runs inside the subscriber (`(11) 1234-5678`) are reported as filler only when the
        // number is invalid anyway: `(11) 98765-4321` is a perfectly real mobile.
        if is_run(&subscriber[subscriber.len() - 8..]) {
            return Err(DomainError::Placeholder("sequential digits"));
        }
        Err(DomainError::InvalidPhone(
            "not a valid Brazilian landline or mobile number",
        ))
    }

    /// E.164, e.g. `+5511987654321`: the canonical key.
    pub fn e164(&self) -> &str {
        &self.0
    }

    /// Area code + subscriber, digits only, e.g. `11987654321`.
    pub fn national(&self) -> String {
        self.0[3..].to_string()
    }

    /// A made-up valid number, `(11) 98765-4321`, built without the phone metadata: what an
    /// operator's template is rendered against at startup, which must not wait for
    /// [`load_metadata`] (a test checks it is what [`Phone::parse`] makes of it).
    pub fn sample() -> Phone {
        Phone("+5511987654321".to_owned())
    }

    /// `(11) 98765-4321` for mobiles, `(11) 3800-1234` for landlines.
    pub fn formatted(&self) -> String {
        format_national(&self.0[3..])
    }

    /// Country and area code plus the last 2 digits (`+55 11 *****-**21`): the area code is
    /// coarse location, not identity, and helps when reading logs.
    pub fn masked(&self) -> String {
        let n = &self.0[3..];
        let hidden_head = "*".repeat(n.len() - 6);
        format!("+55 {} {}-**{}", &n[..2], hidden_head, &n[n.len() - 2..])
    }
}

/// National digits as Brazilians write them: `11987654321` -> `(11) 98765-4321`,
/// `1138001234` -> `(11) 3800-1234`; anything but 10 or 11 digits is returned unchanged.
/// [`Phone::formatted`] is this for a valid number; it also serves the phones a provider
/// lists, which are shown as given (never parsed, so never upgraded or refused).
pub fn format_national(digits: &str) -> String {
    if !matches!(digits.len(), 10 | 11) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return digits.to_owned();
    }
    let (area, rest) = digits.split_at(2);
    let (head, tail) = rest.split_at(rest.len() - 4);
    format!("({area}) {head}-{tail}")
}

/// Checks the characters and collects the digits. Letters are refused up front because
/// libphonenumber would read them as a vanity keypad (`abc123` -> `222123`) and accept garbage.
/// Returns whether the number was written with a leading `+`.
fn scan(s: &str) -> Result<(bool, String), DomainError> {
    // `0xx11 98765-4321` is how Brazilians traditionally write "trunk prefix + area code".
    let s = s
        .strip_prefix('(')
        .map_or(s, |rest| if starts_with_0xx(rest) { rest } else { s });
    let (s, trunk_xx) = if starts_with_0xx(s) {
        (&s[3..], true)
    } else {
        (s, false)
    };
    let mut digits = String::with_capacity(s.len() + 1);
    if trunk_xx {
        digits.push('0');
    }
    let mut international = false;
    for (i, c) in s.char_indices() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 && !trunk_xx => international = true,
            ' ' | '.' | '-' | '(' | ')' | '/' | '\u{a0}' => {}
            '+' => return Err(DomainError::InvalidPhone("misplaced '+'")),
            _ => {
                return Err(DomainError::InvalidPhone(
                    "contains characters other than digits and separators",
                ));
            }
        }
    }
    Ok((international, digits))
}

fn starts_with_0xx(s: &str) -> bool {
    s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("0xx"))
}

/// Strips the country code, the trunk `0`, the carrier-selection code and the international
/// prefix `00`, whichever are present, leaving area code + subscriber.
fn national_significant_number(international: bool, digits: &str) -> Result<String, DomainError> {
    if international {
        return after_country_code(digits);
    }
    if let Some(rest) = digits.strip_prefix("00") {
        // International dialling prefix, optionally followed by a 2-digit carrier code.
        if rest.starts_with("55") && (12..=13).contains(&rest.len()) {
            return after_country_code(rest);
        }
        if rest.len() > 2 && rest[2..].starts_with("55") && (12..=13).contains(&(rest.len() - 2)) {
            return after_country_code(&rest[2..]);
        }
        return after_country_code(rest);
    }
    if let Some(rest) = digits.strip_prefix('0') {
        // `0 AA NNNNNNNN` or, with a carrier code, `0 CC AA NNNNNNNN`.
        return Ok(match rest.len() {
            12 | 13 => rest[2..].to_string(),
            _ => rest.to_string(),
        });
    }
    // National numbers have at most 11 digits, so 12 or 13 starting with 55 carry the country.
    if digits.starts_with("55") && (12..=13).contains(&digits.len()) {
        return Ok(digits[2..].to_string());
    }
    Ok(digits.to_string())
}

/// `digits` start with a country code; anything other than 55 is a foreign number.
fn after_country_code(digits: &str) -> Result<String, DomainError> {
    match digits.strip_prefix("55") {
        Some(rest) => {
            let rest = match rest.strip_prefix('0') {
                Some(r) if (10..=11).contains(&r.len()) => r,
                _ => rest,
            };
            Ok(rest.to_string())
        }
        None => match phonenumber::parse(None, format!("+{digits}")) {
            Ok(_) => Err(DomainError::NotBrazilian),
            Err(_) => Err(DomainError::InvalidPhone("unknown country code")),
        },
    }
}

/// Loads libphonenumber's metadata, which the first [`Phone::parse`] would otherwise load:
/// about 40 ms of CPU compiling every region's patterns. Startup runs it on a blocking thread
/// beside the rest, so the service answers `/ready` without waiting for it; a phone parsed
/// meanwhile waits for the load to finish.
pub fn load_metadata() {
    let _ = &*phonenumber::metadata::DATABASE;
}

/// Checks area code + subscriber with libphonenumber and returns it in E.164 if it is a
/// Brazilian landline or mobile; toll-free, premium and shared-cost lines are not people.
fn validate(nsn: &str) -> Option<Phone> {
    let number: PhoneNumber = phonenumber::parse(Some(BR), format!("+55{nsn}")).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    let personal = matches!(
        number.number_type(&phonenumber::metadata::DATABASE),
        Type::FixedLine | Type::Mobile | Type::FixedLineOrMobile
    );
    let e164 = number.format().mode(Mode::E164).to_string();
    // libphonenumber may re-interpret prefixes; only accept it if it kept exactly our digits.
    (personal && e164.strip_prefix("+55") == Some(nsn)).then_some(Phone(e164))
}

fn all_same(digits: &str) -> bool {
    let b = digits.as_bytes();
    b.iter().all(|&d| d == b[0])
}

/// Every step is +1 or every step is -1 (wrapping 9 -> 0), e.g. `1234567890`, `98765432`.
fn is_run(digits: &str) -> bool {
    let b = digits.as_bytes();
    let steps = || b.windows(2).map(|w| (10 + w[1] - w[0]) % 10);
    b.len() >= 2 && (steps().all(|s| s == 1) || steps().all(|s| s == 9))
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl FromStr for Phone {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phone::parse(s)
    }
}

impl serde::Serialize for Phone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Phone {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Phone::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e164(s: &str) -> Result<String, DomainError> {
        Phone::parse(s).map(|p| p.e164().to_string())
    }

    #[test]
    fn the_sample_phone_is_what_parsing_its_digits_gives() {
        assert_eq!(Phone::sample(), Phone::parse("(11) 98765-4321").unwrap());
    }

    #[test]
    fn every_common_way_of_writing_a_mobile_gives_one_key() {
        for input in [
            "(11) 98765-4321",
            "11987654321",
            "11 98765-4321",
            "+55 11 98765 4321",
            "+5511987654321",
            "5511987654321",
            "55 11 98765-4321",
            "+55 (11) 9.8765-4321",
            "011 98765-4321",
            "(011) 98765-4321",
            "0 21 11 98765-4321",
            "0xx11 98765-4321",
            "(0XX11) 98765-4321",
            "0055 11 98765-4321",
            "+55 0 11 98765-4321",
            "  11.98765.4321  ",
            "11/98765-4321",
        ] {
            assert_eq!(e164(input), Ok("+5511987654321".into()), "{input}");
        }
    }

    #[test]
    fn landlines_keep_their_eight_digit_subscriber() {
        for input in [
            "(11) 3800-1234",
            "1138001234",
            "+55 11 3800-1234",
            "011 3800 1234",
        ] {
            assert_eq!(e164(input), Ok("+551138001234".into()), "{input}");
        }
    }

    #[test]
    fn old_eight_digit_mobiles_get_the_ninth_digit() {
        assert_eq!(e164("11 8765-4321"), Ok("+5511987654321".into()));
        assert_eq!(e164("(21) 6543-2109"), Ok("+5521965432109".into()));
        assert_eq!(e164("+55 31 9123-4567"), Ok("+5531991234567".into()));
        // Legacy 7-ranges are still "valid" 10-digit numbers in libphonenumber; the 9-form wins.
        assert_eq!(e164("11 7123-4567"), Ok("+5511971234567".into()));
    }

    #[test]
    fn area_code_55_is_not_mistaken_for_the_country_code() {
        assert_eq!(e164("55 98123-4567"), Ok("+5555981234567".into()));
        assert_eq!(e164("(55) 3222-1234"), Ok("+555532221234".into()));
        assert_eq!(e164("55 55 98123-4567"), Ok("+5555981234567".into()));
    }

    #[test]
    fn foreign_numbers_are_not_brazilian() {
        assert_eq!(e164("+1 212 555 0100"), Err(DomainError::NotBrazilian));
        assert_eq!(e164("+44 20 7946 0958"), Err(DomainError::NotBrazilian));
        assert_eq!(e164("00 1 212 555 0100"), Err(DomainError::NotBrazilian));
    }

    #[test]
    fn empty_and_blank_inputs_are_empty() {
        assert_eq!(e164(""), Err(DomainError::Empty));
        assert_eq!(e164("   \t "), Err(DomainError::Empty));
    }

    #[test]
    fn letters_are_refused_instead_of_read_as_a_keypad() {
        for input in [
            "abc123",
            "11 98765-43AB",
            "1-800-FLOWERS",
            "11987654321 ramal 2",
            "tel:+5511987654321",
        ] {
            assert!(
                matches!(e164(input), Err(DomainError::InvalidPhone(_))),
                "{input}: {:?}",
                e164(input)
            );
        }
    }

    #[test]
    fn wrong_lengths_and_invalid_ranges_are_invalid() {
        for input in [
            "123",
            "9876-5432",
            "98765-4321",
            "119876543210",
            "+55 11 98765 43210",
            "+55",
            "(20) 98123-4567",
            "(11) 0800-1234",
            "0800 591 2040",
            "4004-1234",
            "++5511987654321",
            "11 98765+4321",
        ] {
            assert!(
                matches!(e164(input), Err(DomainError::InvalidPhone(_))),
                "{input}: {:?}",
                e164(input)
            );
        }
    }

    #[test]
    fn placeholders_are_refused_with_a_reason() {
        for input in [
            "11111111111",
            "00000000000",
            "(11) 99999-9999",
            "(11) 98888-8888",
            "(21) 3333-3333",
            "12345678901",
            "1234567890",
            "(11) 1234-5678",
            "98765432109",
        ] {
            assert!(
                matches!(e164(input), Err(DomainError::Placeholder(_))),
                "{input}"
            );
        }
    }

    /// What libphonenumber says about an input, as E.164 when it calls it a valid number.
    fn libphonenumber_says(input: &str) -> Option<String> {
        let number = phonenumber::parse(Some(BR), input).ok()?;
        phonenumber::is_valid(&number).then(|| number.format().mode(Mode::E164).to_string())
    }

    /// libphonenumber is the reference; each row is a place where this service deliberately
    /// answers differently (the README's "Phones" section lists them). Each row first pins what
    /// libphonenumber itself says, so a metadata update that removes the difference shows here.
    #[test]
    fn every_deliberate_difference_from_libphonenumber_is_pinned() {
        // (input, libphonenumber's answer, ours, why)
        type Row<'a> = (&'a str, Option<&'a str>, Result<&'a str, &'a str>, &'a str);
        let table: &[Row] = &[
            (
                "11 7123-4567",
                Some("+551171234567"),
                Ok("+5511971234567"),
                "an old 8-digit mobile gains its 9 even where a legacy 10-digit number is valid",
            ),
            (
                "(11) 99999-9999",
                Some("+5511999999999"),
                Err("placeholder"),
                "all-same subscriber digits are filler",
            ),
            (
                "(21) 3333-3333",
                Some("+552133333333"),
                Err("placeholder"),
                "all-same landline digits are filler",
            ),
            (
                "0800 891 4712",
                Some("+558008914712"),
                Err("invalid"),
                "toll-free: not a person's line",
            ),
            (
                "11 98765-43AB",
                Some("+5511987654322"),
                Err("invalid"),
                "letters are not read as a vanity keypad",
            ),
        ];
        for (input, reference, ours, why) in table {
            assert_eq!(
                libphonenumber_says(input).as_deref(),
                *reference,
                "libphonenumber changed its mind: {why}"
            );
            let got = Phone::parse(input);
            match ours {
                Ok(e164) => assert_eq!(got.as_ref().map(Phone::e164), Ok(*e164), "{why}"),
                Err("placeholder") => {
                    assert!(
                        matches!(got, Err(DomainError::Placeholder(_))),
                        "{why}: {got:?}"
                    )
                }
                Err(_) => assert!(
                    matches!(got, Err(DomainError::InvalidPhone(_))),
                    "{why}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn a_real_looking_descending_mobile_is_still_accepted() {
        assert_eq!(e164("(21) 98765-4321"), Ok("+5521987654321".into()));
    }

    #[test]
    fn accessors_render_national_formatted_and_masked_forms() {
        let mobile = Phone::parse("(11) 98765-4321").expect("valid");
        assert_eq!(mobile.national(), "11987654321");
        assert_eq!(mobile.formatted(), "(11) 98765-4321");
        assert_eq!(mobile.masked(), "+55 11 *****-**21");
        let landline = Phone::parse("(11) 3800-1234").expect("valid");
        assert_eq!(landline.national(), "1138001234");
        assert_eq!(landline.formatted(), "(11) 3800-1234");
        assert_eq!(landline.masked(), "+55 11 ****-**34");
    }

    #[test]
    fn national_digits_are_formatted_and_anything_else_is_left_as_given() {
        let cases = [
            ("11987654321", "(11) 98765-4321"),
            ("1138001234", "(11) 3800-1234"),
            ("11900000000", "(11) 90000-0000"),
            ("5511987654321", "5511987654321"),
            ("987654321", "987654321"),
            ("(11) 98765-4321", "(11) 98765-4321"),
            ("", ""),
        ];
        for (raw, expected) in cases {
            assert_eq!(format_national(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn debug_and_display_never_show_the_number() {
        let p = Phone::parse("(11) 98765-4321").expect("valid");
        for shown in [format!("{p:?}"), format!("{p}")] {
            assert!(!shown.contains("987654321"), "{shown}");
            assert!(!shown.contains("98765"), "{shown}");
        }
    }

    #[test]
    fn errors_never_echo_the_input() {
        for input in [
            "abc123",
            "(11) 99999-9999",
            "+1 212 555 0100",
            "119876543210",
        ] {
            let msg = Phone::parse(input).expect_err("invalid").to_string();
            assert!(
                !msg.contains("123") && !msg.contains("999") && !msg.contains("555"),
                "{msg}"
            );
        }
    }

    #[test]
    fn serde_writes_e164_and_reads_through_parse() {
        let p = Phone::parse("(11) 98765-4321").expect("valid");
        assert_eq!(
            serde_json::to_string(&p).expect("serializes"),
            "\"+5511987654321\""
        );
        let back: Phone = serde_json::from_str("\"011 98765-4321\"").expect("parses");
        assert_eq!(back, p);
        assert!(serde_json::from_str::<Phone>("\"abc123\"").is_err());
    }

    const DDDS: &[u8] = &[
        11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 24, 27, 28, 31, 32, 33, 34, 35, 37, 38, 41, 42,
        43, 44, 45, 46, 47, 48, 49, 51, 53, 54, 55, 61, 62, 63, 64, 65, 66, 67, 68, 69, 71, 73, 74,
        75, 77, 79, 81, 82, 83, 84, 85, 86, 87, 88, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99,
    ];

    /// A valid mobile: a real area code and `9` + 8 digits that are not all the same.
    fn mobile() -> impl Strategy<Value = (String, String)> {
        (proptest::sample::select(DDDS), "[0-9]{8}")
            .prop_filter("all-same subscribers are placeholders", |(_, sub)| {
                !all_same(sub)
            })
            .prop_map(|(ddd, sub)| (ddd.to_string(), format!("9{sub}")))
    }

    /// Splits `digits` into random groups joined by random separators.
    fn decorate(digits: &str, cuts: &[usize], seps: &[&str]) -> String {
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && cuts.contains(&i) {
                out.push_str(seps[i % seps.len()]);
            }
            out.push(c);
        }
        out
    }

    proptest! {
        #[test]
        fn every_formatting_variant_parses_to_the_same_e164(
            (ddd, sub) in mobile(),
            prefix in proptest::sample::select(vec!["+55", "55", "+55 ", "55 ", "0", "0 ", "0xx", "0 21 ", "0015", "(0", ""]),
            wrap_ddd in any::<bool>(),
            cuts in proptest::collection::vec(1usize..9, 0..4),
            seps in proptest::collection::vec(proptest::sample::select(vec![" ", "-", ".", " - ", "  "]), 1..4),
            pad in "[ \t]{0,2}",
        ) {
            let expected = format!("+55{ddd}{sub}");
            let ddd_part = match (prefix, wrap_ddd) {
                ("(0", _) => format!("{ddd})"),
                (_, true) => format!("({ddd}) "),
                (_, false) => format!("{ddd} "),
            };
            let prefix = if prefix == "0015" { "0015 55 " } else { prefix };
            let input = format!("{pad}{prefix}{ddd_part}{}{pad}", decorate(&sub, &cuts, &seps));
            let phone = Phone::parse(&input);
            prop_assert_eq!(phone.as_ref().map(Phone::e164), Ok(expected.as_str()), "{}", input);
            let phone = phone.expect("asserted above");
            prop_assert_eq!(phone.national(), format!("{ddd}{sub}"));
            prop_assert_eq!(Phone::parse(&phone.national()), Ok(phone.clone()));
            prop_assert_eq!(Phone::parse(&phone.formatted()), Ok(phone.clone()));
        }

        #[test]
        fn parsing_e164_is_idempotent((ddd, sub) in mobile()) {
            let phone = Phone::parse(&format!("{ddd}{sub}")).expect("valid mobile");
            prop_assert_eq!(Phone::parse(phone.e164()), Ok(phone.clone()));
        }

        #[test]
        fn old_eight_digit_form_is_the_same_key_as_the_nine_digit_form(
            ddd in proptest::sample::select(DDDS),
            sub in "[6-9][0-9]{7}",
        ) {
            prop_assume!(!all_same(&sub));
            let new = Phone::parse(&format!("{ddd}9{sub}"));
            prop_assume!(new.is_ok());
            prop_assert_eq!(Phone::parse(&format!("({ddd}) {sub}")), new);
        }

        #[test]
        fn masked_never_contains_the_clear_number((ddd, sub) in mobile()) {
            let phone = Phone::parse(&format!("{ddd}{sub}")).expect("valid mobile");
            let masked = phone.masked();
            prop_assert!(!masked.contains(&sub[..]));
            prop_assert!(!masked.replace(['+', ' ', '-', '*'], "").contains(&phone.national()));
            prop_assert_eq!(masked.chars().filter(char::is_ascii_digit).count(), 2 + 2 + 2);
            let shown = format!("{phone:?}{phone}");
            prop_assert!(!shown.contains(&sub[1..]));
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,30}") {
            let _ = Phone::parse(&s);
        }
    }
}
