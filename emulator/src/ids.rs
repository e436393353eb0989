//! Identifier, secret and date formats as Twilio produces them.
//!
//! Contract: SIDs are a two-letter prefix and 32 lowercase hex digits; key secrets are 32
//! base62 characters; auth tokens 32 lowercase hex digits; all drawn from the OS-seeded CSPRNG.
//! v2010 and IAM dates are RFC 2822 in GMT, accounts v1 dates RFC 3339 UTC.

use jiff::{Timestamp, tz::TimeZone};
use rand::RngExt;
use sha2::{Digest, Sha256};

const HEX: &[u8] = b"0123456789abcdef";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn draw(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// A new SID such as `SK` followed by 32 hex digits.
pub fn sid(prefix: &str) -> String {
    format!("{prefix}{}", draw(HEX, 32))
}

/// Whether `text` is a SID with this prefix (either case of hex, as the spec's pattern allows).
pub fn is_sid(prefix: &str, text: &str) -> bool {
    text.len() == 34 && text.starts_with(prefix) && text[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A new API key secret.
pub fn key_secret() -> String {
    draw(BASE62, 32)
}

/// A new auth token.
pub fn auth_token() -> String {
    draw(HEX, 32)
}

/// A value for the `Twilio-Request-Id` header.
pub fn request_id() -> String {
    sid("RQ")
}

/// SHA-256 of a secret, the only form in which key secrets are kept.
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `Mon, 13 Jun 2016 22:50:08 +0000`.
pub fn rfc2822(at: Timestamp) -> String {
    jiff::fmt::rfc2822::to_string(&at.to_zoned(TimeZone::UTC)).unwrap_or_default()
}

/// `2022-08-30T05:14:57Z`.
pub fn rfc3339(at: Timestamp) -> String {
    at.round(jiff::Unit::Second).unwrap_or(at).to_string()
}

/// `X-Twilio-Signature` of a webhook to `url` with form `params`, as Twilio signs it with the
/// account's auth token `token`: base64 of HMAC-SHA1 over the URL followed by each parameter's
/// name and value, sorted by name.
pub fn webhook_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        hmac::Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_twilio() {
        let s = sid("SK");
        assert!(
            is_sid("SK", &s)
                && s[2..]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert!(!is_sid("AC", &s));
        assert_eq!(key_secret().len(), 32);
        assert!(auth_token().chars().all(|c| c.is_ascii_hexdigit()));
        let at: Timestamp = "2016-06-13T22:50:08Z".parse().unwrap();
        assert_eq!(rfc2822(at), "Mon, 13 Jun 2016 22:50:08 +0000");
        assert_eq!(rfc3339(at), "2016-06-13T22:50:08Z");
    }
}
