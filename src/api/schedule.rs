//! When things are due: rotation schedules and deadlines. Pure.
//!
//! Contract: [`after`] adds a spec duration to a moment, saturating instead of overflowing; a
//! key rotates `every` after its creation, minus a jitter derived from the object's
//! UID (so it is the same after every restart) of at most 5% of `every`, capped at 30 minutes:
//! 10,000 keys with one period spread over that window instead of one second;
//! - every moment computed here is in whole seconds, as status records them, so a value read
//!   back from status computes to the same again: deadlines round up, never earlier than set.

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
    Duration::from_secs(n % span.as_secs().max(1))
}

/// When a key created at `created` rotates.
pub fn next_rotation(created: Timestamp, every: Duration, uid: &str) -> Timestamp {
    after(created, every.saturating_sub(jitter(uid, every)))
}

/// `at + grace`, rounded up to a whole second.
pub fn after(at: Timestamp, grace: Duration) -> Timestamp {
    let due = at
        .saturating_add(SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX))
        .expect("saturating add of a duration");
    if due.subsec_nanosecond() == 0 {
        return due;
    }
    Timestamp::from_second(due.as_second().saturating_add(1)).unwrap_or(due)
}

/// When a key replaced at `at` is revoked: `grace` later, rounded up to a whole second; with no
/// grace, at once (rounded down, so the pass that replaced it finds it due).
pub fn revoke_at(at: Timestamp, grace: Duration) -> Timestamp {
    if grace.is_zero() {
        recorded(at)
    } else {
        after(at, grace)
    }
}

/// `at` as status records it: in whole seconds, rounded down.
pub fn recorded(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn jitter_is_deterministic_bounded_and_spread() {
        let every = 30 * DAY;
        assert_eq!(jitter("uid-a", every), jitter("uid-a", every));
        let spread: std::collections::BTreeSet<u64> = (0..10_000)
            .map(|i| jitter(&format!("uid-{i}"), every).as_secs())
            .collect();
        assert!(spread.iter().all(|s| *s < 1800), "at most 30 minutes");
        assert!(
            spread.len() > 1000,
            "10,000 keys land on {} distinct seconds",
            spread.len()
        );
        assert!(
            jitter("u", Duration::from_secs(3600)) < Duration::from_secs(180),
            "5% of an hour"
        );
    }

    #[test]
    fn rotation_is_due_before_every_has_passed() {
        let created: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let next = next_rotation(created, DAY, "uid");
        assert!(next <= after(created, DAY) && next > after(created, DAY - MAX_JITTER));
    }
}
