//! Short, non-reversible digests the operator records on the Secrets it publishes, so an edit
//! to a secret value, a template or rendered data is noticed without keeping the value. Pure.

use sha2::{Digest, Sha256};

/// A short digest of a secret value: enough to notice an edit, useless to an attacker, since
/// the value is 32 random characters.
pub fn digest(secret: &str) -> String {
    short(Sha256::digest(secret.as_bytes()).as_slice())
}

/// A digest of a Secret's whole data, in key order.
pub fn data_digest<'a>(data: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sorted: Vec<_> = data.collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for (key, value) in sorted {
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
    }
    short(hasher.finalize().as_slice())
}

/// The first 8 bytes of a SHA-256, in hex.
fn short(hash: &[u8]) -> String {
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
