//! An e-mail address in the one canonical form used as a contact key.
//!
//! E-mails key the cache and the provider lookups, so `  Maria.Souza@Example.COM ` and
//! `maria.souza@example.com` must be the same value: the whole address is lowercased (providers
//! match case-insensitively; no real mailbox differs only by case) and the domain is stored in
//! its ASCII (punycode) form. Filler addresses typed into required form fields are refused, as
//! looking them up would spend provider money on nobody. Personal data: prints masked.

use std::fmt;
use std::str::FromStr;

use super::error::DomainError;

/// A syntactically valid, non-placeholder e-mail address, lowercased, domain in ASCII.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

/// Where a filler word gives an address away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Filler {
    /// The local part alone says "I have no e-mail" (`naotem@gmail.com`).
    Anywhere,
    /// Only together with a filler domain (`teste@teste.com`, `nao@tem.com`), because
    /// `test@acme.com.br` or `a@acme.com.br` can be real inboxes.
    WithFillerDomain,
}

/// What people type into a required e-mail field when they have none or are testing the form
/// (Portuguese and English). The `WithFillerDomain` words also count as filler domains when they
/// are the domain's first label. `example` is deliberately absent: `example.com` is the reserved
/// domain for synthetic data and is accepted.
const PLACEHOLDERS: &[(&str, Filler)] = &[
    ("naotem", Filler::Anywhere),
    ("nao.tem", Filler::Anywhere),
    ("nao_tem", Filler::Anywhere),
    ("nao-tem", Filler::Anywhere),
    ("naotenho", Filler::Anywhere),
    ("naopossui", Filler::Anywhere),
    ("nao.possui", Filler::Anywhere),
    ("naoinformado", Filler::Anywhere),
    ("nao.informado", Filler::Anywhere),
    ("nenhum", Filler::Anywhere),
    ("nenhuma", Filler::Anywhere),
    ("noemail", Filler::Anywhere),
    ("no.email", Filler::Anywhere),
    ("no_email", Filler::Anywhere),
    ("no-email", Filler::Anywhere),
    ("sememail", Filler::Anywhere),
    ("sem.email", Filler::Anywhere),
    ("sem_email", Filler::Anywhere),
    ("sem-email", Filler::Anywhere),
    ("none", Filler::Anywhere),
    ("null", Filler::Anywhere),
    ("nulo", Filler::Anywhere),
    ("teste", Filler::WithFillerDomain),
    ("test", Filler::WithFillerDomain),
    ("email", Filler::WithFillerDomain),
    ("e-mail", Filler::WithFillerDomain),
    ("exemplo", Filler::WithFillerDomain),
    ("nao", Filler::WithFillerDomain),
    ("sem", Filler::WithFillerDomain),
    ("tem", Filler::WithFillerDomain),
    ("no", Filler::WithFillerDomain),
    ("a", Filler::WithFillerDomain),
    ("x", Filler::WithFillerDomain),
    ("xx", Filler::WithFillerDomain),
    ("xxx", Filler::WithFillerDomain),
    ("asd", Filler::WithFillerDomain),
    ("asdf", Filler::WithFillerDomain),
];

const MAX_LOCAL_BYTES: usize = 64;
const MAX_ADDRESS_BYTES: usize = 254;

impl Email {
    pub fn parse(s: &str) -> Result<Email, DomainError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DomainError::Empty);
        }
        // Letters and digits of any script pass, and the ASCII punctuation addresses use;
        // symbols (emoji) and invisible format characters (bidi overrides, zero-width
        // joiners) never appear in a real mailbox and would make two keys look alike.
        if !s
            .chars()
            .all(|c| c.is_alphanumeric() || c.is_ascii_graphic())
        {
            return Err(DomainError::InvalidEmail(
                "contains a symbol or invisible character",
            ));
        }
        let lower = s.to_lowercase();
        let (local, domain) = match lower.split_once('@') {
            Some((l, d)) if !d.contains('@') => (l, d),
            _ => return Err(DomainError::InvalidEmail("must contain exactly one '@'")),
        };
        validate_local(local)?;
        let domain = ascii_domain(domain)?;
        if local.len() + 1 + domain.len() > MAX_ADDRESS_BYTES {
            return Err(DomainError::InvalidEmail("longer than 254 bytes"));
        }
        if is_placeholder(local, &domain) {
            return Err(DomainError::Placeholder("filler e-mail address"));
        }
        Ok(Email(format!("{local}@{domain}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `m***@example.com`: the domain is kept because it is usually a shared provider and helps
    /// when diagnosing, the local part is what identifies the person.
    pub fn masked(&self) -> String {
        let (local, domain) = self.0.split_once('@').unwrap_or(("", &self.0));
        let first = local.chars().next().map(String::from).unwrap_or_default();
        format!("{first}***@{domain}")
    }
}

fn validate_local(local: &str) -> Result<(), DomainError> {
    if local.is_empty() {
        return Err(DomainError::InvalidEmail("missing local part"));
    }
    if local.len() > MAX_LOCAL_BYTES {
        return Err(DomainError::InvalidEmail("local part longer than 64 bytes"));
    }
    // Quoted local parts are legal but never appear in leads; refusing them keeps one form.
    if local
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"(),:;<>[\\]".contains(c))
    {
        return Err(DomainError::InvalidEmail(
            "local part contains invalid characters",
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(DomainError::InvalidEmail("misplaced dot in local part"));
    }
    Ok(())
}

/// IDNA-converts the domain and then enforces plain hostname rules, since `domain_to_ascii`
/// alone lets through things like underscores or a single label.
fn ascii_domain(domain: &str) -> Result<String, DomainError> {
    if domain.is_empty() {
        return Err(DomainError::InvalidEmail("missing domain"));
    }
    let ascii = idna::domain_to_ascii(domain)
        .map_err(|_| DomainError::InvalidEmail("domain is not a valid domain name"))?;
    if ascii.len() > 253 {
        return Err(DomainError::InvalidEmail("domain too long"));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(DomainError::InvalidEmail("domain needs at least one dot"));
    }
    for label in &labels {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(DomainError::InvalidEmail("domain has an invalid label"));
        }
        // `ab--` is reserved for IDNA encodings; only `xn--` (punycode) is in use.
        if label.get(2..4) == Some("--") && !label.starts_with("xn--") {
            return Err(DomainError::InvalidEmail(
                "domain has a label with a reserved '--'",
            ));
        }
    }
    // What IDNA maps to something else (`ⓜ`, full-width letters, `ℌ`) was not the domain the
    // person has: looking up the mapped one would ask about somebody else's.
    // Labels typed in ASCII (punycode included) are compared as typed, the others as IDNA
    // gives them back.
    let (unicode, _) = idna::domain_to_unicode(&ascii);
    let typed: Vec<&str> = domain.split('.').collect();
    let back: Vec<&str> = unicode.split('.').collect();
    if typed.len() != back.len()
        || typed
            .iter()
            .zip(&back)
            .any(|(t, b)| !t.is_ascii() && t != b)
    {
        return Err(DomainError::InvalidEmail(
            "domain has characters that IDNA changes",
        ));
    }
    // A numeric top-level label means an IP address, never a lead's mailbox; every real
    // top-level domain is letters or punycode.
    let tld = labels.last().copied().unwrap_or_default();
    if !(tld.bytes().all(|b| b.is_ascii_lowercase()) || tld.starts_with("xn--")) {
        return Err(DomainError::InvalidEmail(
            "top-level label is not letters or punycode",
        ));
    }
    // Special-use names (RFC 6761, 6762, 7686, 9476) never hold a mailbox. `example.com`
    // and its siblings stay valid: they are second-level names, reserved for examples, and
    // the synthetic test data uses them.
    if SPECIAL_USE_TLDS.contains(&tld) || ascii.ends_with(".home.arpa") {
        return Err(DomainError::InvalidEmail(
            "domain is a special-use name that cannot exist",
        ));
    }
    Ok(ascii)
}

/// Top-level names reserved so that they never resolve on the public DNS.
const SPECIAL_USE_TLDS: &[&str] = &[
    "invalid",
    "localhost",
    "test",
    "example",
    "local",
    "onion",
    "alt",
    "internal",
];

fn is_placeholder(local: &str, domain: &str) -> bool {
    let first_label = domain.split('.').next().unwrap_or(domain);
    let filler = |word: &str| {
        PLACEHOLDERS
            .iter()
            .find(|(w, _)| *w == word)
            .map(|(_, f)| *f)
    };
    match filler(local) {
        Some(Filler::Anywhere) => true,
        Some(Filler::WithFillerDomain) => filler(first_label).is_some(),
        // `b@b.com`: a single character repeated as the domain is filler too.
        None => local == first_label && local.chars().count() == 1,
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.masked())
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl FromStr for Email {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Email::parse(s)
    }
}

impl serde::Serialize for Email {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Email::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(s: &str) -> Result<String, DomainError> {
        Email::parse(s).map(|e| e.as_str().to_string())
    }

    #[test]
    fn addresses_are_trimmed_and_lowercased() {
        assert_eq!(
            key("  Maria.Souza@Example.COM "),
            Ok("maria.souza@example.com".into())
        );
        assert_eq!(
            key("\tJOAO+crm@Sub.Example.org\n"),
            Ok("joao+crm@sub.example.org".into())
        );
    }

    #[test]
    fn unicode_domains_become_punycode_and_unicode_local_parts_are_lowercased() {
        let expected = idna::domain_to_ascii("exâmple.com.br").expect("valid idn");
        assert!(expected.starts_with("xn--"));
        assert_eq!(key("José@Exâmple.com.br"), Ok(format!("josé@{expected}")));
        assert_eq!(key("josé@EXÂMPLE.com.br"), key("JOSÉ@exâmple.COM.BR"));
    }

    #[test]
    fn malformed_addresses_are_invalid() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("ana@{}.example.com", vec!["b".repeat(60); 4].join("."));
        for input in [
            "maria.souza",
            "maria@@example.com",
            "maria@souza@example.com",
            "@example.com",
            "maria@",
            "maria@example",
            "maria@.example.com",
            "maria@example..com",
            "maria@-example.com",
            "maria@exa_mple.com",
            "maria@192.168.0.1",
            "maria souza@example.com",
            ".maria@example.com",
            "maria.@example.com",
            "ma..ria@example.com",
            "\"maria\"@example.com",
            "maria@example.com.",
            long_local.as_str(),
            long_total.as_str(),
        ] {
            assert!(
                matches!(key(input), Err(DomainError::InvalidEmail(_))),
                "{input}: {:?}",
                key(input)
            );
        }
    }

    /// Domains that cannot exist are not looked up: each rule with the reason it gives.
    #[test]
    fn domains_that_cannot_exist_are_refused_with_a_reason() {
        // (input, Ok(key) | Err(part of the reason), why)
        let table: &[(&str, Result<&str, &str>, &str)] = &[
            (
                "ana@example.com",
                Ok("ana@example.com"),
                "the reserved example domain stays valid",
            ),
            ("ana@example.org", Ok("ana@example.org"), "its sibling too"),
            (
                "ana@mail.example.com.br",
                Ok("ana@mail.example.com.br"),
                "a subdomain of it",
            ),
            ("ana@acme.invalid", Err("special-use"), ".invalid"),
            ("ana@localhost.localhost", Err("special-use"), ".localhost"),
            ("ana@acme.test", Err("special-use"), ".test"),
            ("ana@acme.example", Err("special-use"), ".example"),
            ("ana@printer.local", Err("special-use"), ".local (mDNS)"),
            ("ana@abc.onion", Err("special-use"), ".onion"),
            ("ana@router.home.arpa", Err("special-use"), ".home.arpa"),
            ("ana@-acme.com", Err("invalid label"), "leading hyphen"),
            ("ana@acme-.com", Err("invalid label"), "trailing hyphen"),
            (
                "ana@ab--cd.com",
                Err("reserved '--'"),
                "-- at positions 3-4",
            ),
            (
                "ana@xn--exmple-qta.com",
                Ok("ana@xn--exmple-qta.com"),
                "punycode is fine",
            ),
            ("ana@a--b.com", Ok("ana@a--b.com"), "-- elsewhere is fine"),
            ("ana@acme©.com", Err("symbol"), "© is a symbol"),
            (
                "ana@ⓜail.com",
                Err("IDNA changes"),
                "a circled letter IDNA maps to m",
            ),
            (
                "ana@ｅｘａｍｐｌｅ.com",
                Err("IDNA changes"),
                "full-width letters",
            ),
            (
                "ana@acme.com1",
                Err("not letters or punycode"),
                "digit in the top-level label",
            ),
            (
                "ana@acme.c-m",
                Err("not letters or punycode"),
                "hyphen in the top-level label",
            ),
            (
                "ana@acme.xn--p1ai",
                Ok("ana@acme.xn--p1ai"),
                "a punycode top-level label",
            ),
            (
                "ana@exâmple.com.br",
                Ok("ana@xn--exmple-xta.com.br"),
                "an accented domain is punycoded",
            ),
        ];
        for (input, expected, why) in table {
            let got = key(input);
            match (expected, &got) {
                (Ok(k), _) => assert_eq!(got.as_deref(), Ok(*k), "{why}"),
                (Err(reason), Err(DomainError::InvalidEmail(r))) => {
                    assert!(r.contains(reason), "{why}: {r}")
                }
                (Err(_), other) => panic!("{why}: {input} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_longest_allowed_local_part_is_accepted() {
        let local = "a".repeat(64);
        assert_eq!(
            key(&format!("{local}@example.com")),
            Ok(format!("{local}@example.com"))
        );
    }

    #[test]
    fn bidi_controls_emoji_and_invisible_characters_are_invalid() {
        for input in [
            "maria\u{202E}moc.elpmaxe@example.com",
            "maria@exa\u{202E}mple.com",
            "maria😀@example.com",
            "maria@😀.com",
            "ma\u{200D}ria@example.com",
            "maria@example.com\u{2066}",
        ] {
            assert!(
                matches!(Email::parse(input), Err(DomainError::InvalidEmail(_))),
                "{input:?}"
            );
        }
        assert!(Email::parse("joão@exemplo.com.br").is_ok());
    }

    #[test]
    fn blank_input_is_empty() {
        assert_eq!(key(""), Err(DomainError::Empty));
        assert_eq!(key(" \n "), Err(DomainError::Empty));
    }

    #[test]
    fn filler_addresses_are_placeholders() {
        for input in [
            "teste@teste.com",
            "Test@Test.com",
            "email@email.com",
            "email@email.com.br",
            "a@a.com",
            "x@x.com",
            "b@b.com.br",
            "sem@email.com",
            "naotem@example.com",
            "nao.tem@example.org",
            "nao@tem.com",
            "nenhum@example.net",
            "noemail@example.com",
            "no@email.com",
            "sememail@example.com",
            "teste@exemplo.com.br",
        ] {
            assert!(
                matches!(key(input), Err(DomainError::Placeholder(_))),
                "{input}: {:?}",
                key(input)
            );
        }
    }

    #[test]
    fn filler_words_on_a_real_domain_are_not_placeholders_unless_unambiguous() {
        for input in [
            "test@example.com",
            "a@example.org",
            "email@example.net",
            "teste@example.com",
        ] {
            assert_eq!(key(input), Ok(input.to_string()), "{input}");
        }
        assert!(key("example@example.com").is_ok());
    }

    #[test]
    fn masked_keeps_the_first_character_and_the_domain() {
        let e = Email::parse("maria.souza@example.com").expect("valid");
        assert_eq!(e.masked(), "m***@example.com");
        assert_eq!(format!("{e}"), "m***@example.com");
        assert_eq!(format!("{e:?}"), "Email(m***@example.com)");
        let e = Email::parse("josé@example.com").expect("valid");
        assert_eq!(e.masked(), "j***@example.com");
        let e = Email::parse("édson@example.com").expect("valid");
        assert_eq!(e.masked(), "é***@example.com");
    }

    #[test]
    fn errors_never_echo_the_input() {
        for input in [
            "maria.souza",
            "maria@example",
            "teste@teste.com",
            "maria souza@example.com",
        ] {
            let msg = Email::parse(input).expect_err("invalid").to_string();
            assert!(!msg.contains("maria") && !msg.contains("teste"), "{msg}");
        }
    }

    #[test]
    fn serde_writes_the_address_and_reads_through_parse() {
        let e = Email::parse("Maria@Example.com").expect("valid");
        assert_eq!(
            serde_json::to_string(&e).expect("serializes"),
            "\"maria@example.com\""
        );
        let back: Email = serde_json::from_str("\" MARIA@example.COM\"").expect("parses");
        assert_eq!(back, e);
        assert!(serde_json::from_str::<Email>("\"teste@teste.com\"").is_err());
    }

    fn local_part() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]"
            .prop_filter("no consecutive dots", |s| !s.contains(".."))
            .prop_filter("not a filler word", |s| {
                !PLACEHOLDERS.iter().any(|(w, _)| w == s)
            })
    }

    fn domain() -> impl Strategy<Value = String> {
        (
            "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?",
            proptest::sample::select(vec![
                "example.com",
                "example.org",
                "example.net",
                "example.com.br",
            ]),
        )
            // `ab--…` labels are reserved for IDNA (`xn--` is punycode and must decode).
            .prop_filter("no reserved label", |(sub, _)| sub.get(2..4) != Some("--"))
            .prop_map(|(sub, base)| format!("{sub}.{base}"))
    }

    /// Flips the case of each character according to `mask`.
    fn recase(s: &str, mask: &[bool]) -> String {
        s.chars()
            .zip(mask.iter().cycle())
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    }

    proptest! {
        #[test]
        fn random_case_and_padding_give_the_same_key(
            local in local_part(),
            domain in domain(),
            mask in proptest::collection::vec(any::<bool>(), 1..8),
            left in "[ \t\n]{0,3}",
            right in "[ \t\n]{0,3}",
        ) {
            let canonical = format!("{local}@{domain}");
            let messy = format!("{left}{}{right}", recase(&canonical, &mask));
            prop_assert_eq!(key(&messy), Ok(canonical.clone()));
            prop_assert_eq!(key(&canonical), Ok(canonical));
        }

        #[test]
        fn parsing_the_key_is_idempotent(local in local_part(), domain in domain()) {
            let e = Email::parse(&format!("{local}@{domain}")).expect("valid");
            prop_assert_eq!(Email::parse(e.as_str()), Ok(e.clone()));
        }

        #[test]
        fn masked_never_contains_the_clear_address(local in local_part(), domain in domain()) {
            let e = Email::parse(&format!("{local}@{domain}")).expect("valid");
            let shown = format!("{}{e:?}{e}", e.masked());
            prop_assert!(!shown.contains(e.as_str()));
            let clear_local = format!("{local}@");
            prop_assert!(!shown.contains(&clear_local));
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,40}") {
            let _ = Email::parse(&s);
        }
    }
}
