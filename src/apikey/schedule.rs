//! Rotation maths and the tag that ties Twilio keys to their object. Pure.
//!
//! Contract:
//! - a key rotates `every` after its creation, minus a jitter derived from the object's UID
//!   (so it is the same after every restart) of at most 5% of `every`, capped at 30 minutes:
//!   10,000 keys with one period spread over that window instead of one second;
//! - every Twilio key the operator creates carries `[twop:<12 hex of the object UID>]` at the end
//!   of its friendly name, within Twilio's 64 characters, so keys left by a crash can be found.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};
use std::time::Duration;

const MAX_JITTER: Duration = Duration::from_secs(30 * 60);

/// Deterministic per-object jitter in `[0, min(every/20, 30m))`.
pub fn jitter(uid: &str, every: Duration) -> Duration {
    let span = (every / 20).min(MAX_JITTER);
    if span.is_zero() {
        return Duration::ZERO;
    }
    let hash = Sha256::digest(uid.as_bytes());
    let n = u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"));
    Duration::from_nanos(n % span.as_nanos() as u64)
}

/// When a key created at `created` rotates.
pub fn next_rotation(created: Timestamp, every: Duration, uid: &str) -> Timestamp {
    let due = every.saturating_sub(jitter(uid, every));
    created.saturating_add(SignedDuration::try_from(due).unwrap_or(SignedDuration::MAX)).expect("saturating add of a duration")
}

/// `at + grace`.
pub fn after(at: Timestamp, grace: Duration) -> Timestamp {
    at.saturating_add(SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX)).expect("saturating add of a duration")
}

/// The tag naming this object in Twilio friendly names.
pub fn tag(uid: &str) -> String {
    let hex: String = uid.chars().filter(char::is_ascii_hexdigit).take(12).collect();
    format!("[twop:{hex}]")
}

/// `display` with the object's tag, cut to Twilio's 64 characters.
pub fn tagged_name(display: &str, uid: &str) -> String {
    let tag = tag(uid);
    let room = 64 - tag.chars().count() - 1;
    let cut: String = display.chars().take(room).collect();
    format!("{} {tag}", cut.trim_end())
}

/// Whether a Twilio friendly name carries this object's tag.
pub fn is_tagged(friendly_name: Option<&str>, uid: &str) -> bool {
    friendly_name.is_some_and(|n| n.ends_with(&tag(uid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn jitter_is_deterministic_bounded_and_spread() {
        let every = 30 * DAY;
        assert_eq!(jitter("uid-a", every), jitter("uid-a", every));
        let spread: std::collections::BTreeSet<u64> = (0..10_000).map(|i| jitter(&format!("uid-{i}"), every).as_secs()).collect();
        assert!(spread.iter().all(|s| *s < 1800), "at most 30 minutes");
        assert!(spread.len() > 1000, "10,000 keys land on {} distinct seconds", spread.len());
        assert!(jitter("u", Duration::from_secs(3600)) < Duration::from_secs(180), "5% of an hour");
    }

    #[test]
    fn rotation_is_due_before_every_has_passed() {
        let created: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let next = next_rotation(created, DAY, "uid");
        assert!(next <= after(created, DAY) && next > after(created, DAY - MAX_JITTER));
    }

    #[test]
    fn tags_fit_in_64_characters() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let long = "x".repeat(80);
        let name = tagged_name(&long, uid);
        assert_eq!(name.chars().count(), 64);
        assert!(is_tagged(Some(&name), uid));
        assert_eq!(tagged_name("team-a/checkout", uid), "team-a/checkout [twop:0f1e2d3c4b5a]");
        assert!(!is_tagged(Some("team-a/checkout"), uid) && !is_tagged(None, uid));
        assert!(!is_tagged(Some(&tagged_name("x", "ffffffff-0000")), uid));
    }
}
