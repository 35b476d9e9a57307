//! Shared-secret checks, in constant time.
//!
//! Both sides are hashed before comparing, so neither the content nor the length of the
//! configured secret leaks through timing.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `given` equals the configured secret. An empty secret on either side never
/// matches: an empty header must not open a route whose secret was set to "".
pub fn secret_matches(expected: &SecretString, given: &str) -> bool {
    if given.is_empty() || expected.expose_secret().is_empty() {
        return false;
    }
    let a = Sha256::digest(expected.expose_secret().as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// The value of `name` in a URL query string, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_matches() {
        let secret = SecretString::from("s3cret-value");
        assert!(secret_matches(&secret, "s3cret-value"));
        assert!(!secret_matches(&secret, "s3cret-valu"));
        assert!(!secret_matches(&secret, ""));
        assert!(!secret_matches(&secret, "S3CRET-VALUE"));
    }

    #[test]
    fn an_empty_secret_never_matches_not_even_an_empty_one() {
        assert!(!secret_matches(&SecretString::from(""), ""));
        assert!(!secret_matches(&SecretString::from(""), "x"));
    }

    #[test]
    fn query_tokens_are_found_and_decoded() {
        assert_eq!(
            query_param(Some("a=1&token=x%2By"), "token").as_deref(),
            Some("x+y")
        );
        assert_eq!(query_param(Some("a=1"), "token"), None);
        assert_eq!(query_param(None, "token"), None);
    }
}
