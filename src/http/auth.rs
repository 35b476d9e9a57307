//! Shared-secret checks, in constant time.
//!
//! Both sides are hashed before comparing, so neither the content nor the length of the
//! configured secret leaks through timing.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `given` equals the configured secret.
pub fn secret_matches(expected: &SecretString, given: &str) -> bool {
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
    fn query_tokens_are_found_and_decoded() {
        assert_eq!(
            query_param(Some("a=1&token=x%2By"), "token").as_deref(),
            Some("x+y")
        );
        assert_eq!(query_param(Some("a=1"), "token"), None);
        assert_eq!(query_param(None, "token"), None);
    }
}
