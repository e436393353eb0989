//! When things are due: rotation schedules and deadlines. Pure.
//!
//! Contract: [`after`] adds a spec duration to a moment, saturating instead of overflowing; a
//! key rotates `every` after its creation, minus a jitter derived from the object's
//! UID (so it is the same after every restart) of at most 5% of `every`, capped at 30 minutes:
//! 10,000 keys with one period spread over that window instead of one second;
//! - every moment computed here is in whole seconds, as status records them, so a value read
//!   back from status computes to the same again: deadlines round up, never earlier than set;
//! - with a rotation [`Window`], a rotation due while a window is open happens then, and one due
//!   outside waits for the next window to open, plus the same kind of jitter within the window.

use k8s_openapi::jiff::tz::{TimeZone, TimeZoneDatabase};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;
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

/// The time zones windows may name: the IANA database bundled in the binary, so admission (which
/// lists the same names) and the operator agree whatever the host or image holds.
pub static TIME_ZONES: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// The time zone names a window may use, sorted.
pub fn time_zone_names() -> Vec<String> {
    let mut names: Vec<String> = TIME_ZONES.available().map(|n| n.to_string()).collect();
    names.sort();
    names
}

/// When scheduled rotations may happen: from each time `opens` names, read in `zone`, for
/// `length`.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    opens: croner::Cron,
    zone: TimeZone,
    length: Duration,
}

impl Window {
    /// A window opening at the cron `schedule` (five fields) in time zone `zone`; the error says
    /// which of the two is wrong.
    pub fn new(schedule: &str, zone: &str, length: Duration) -> Result<Self, String> {
        if schedule.split_whitespace().count() != 5 {
            return Err(format!(
                "schedule {schedule:?} must have five fields: minute hour day-of-month month day-of-week"
            ));
        }
        let opens = schedule
            .parse::<croner::Cron>()
            .map_err(|e| format!("schedule {schedule:?} is not a cron schedule: {e}"))?;
        let zone = TIME_ZONES
            .get(zone)
            .map_err(|_| format!("timeZone {zone:?} is not an IANA time zone name such as Europe/Berlin"))?;
        let window = Self { opens, zone, length };
        window
            .around(Timestamp::now())
            .ok_or_else(|| format!("schedule {schedule:?} never opens again"))?;
        Ok(window)
    }

    /// The window open at `due`, or else the next to open: (opens, closes). `None` when the
    /// schedule names no time ahead.
    pub fn around(&self, due: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let span = SignedDuration::try_from(self.length).ok()?;
        // The first opening after `due - length` is the one open at `due`, if any opened at all.
        let from = due.checked_sub(span).ok()?.to_zoned(self.zone.clone());
        let opens = self.opens.find_next_occurrence(&from, false).ok()?.timestamp();
        Some((opens, after(opens, self.length)))
    }
}

/// When a rotation due at `due` happens inside `window`, and that window: at `due` if it is
/// open then, else when the next one opens plus the object's jitter (at most 5% of the window,
/// 30 minutes at most), so keys sharing a window do not rotate in the same second.
pub fn in_window(due: Timestamp, window: &Window, uid: &str) -> Option<(Timestamp, (Timestamp, Timestamp))> {
    let (opens, closes) = window.around(due)?;
    let at = if opens <= due {
        due
    } else {
        after(opens, jitter(uid, window.length))
    };
    Some((at, (opens, closes)))
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
    fn a_window_defers_a_rotation_due_outside_it_and_keeps_one_due_inside() {
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        // 02:00 every Saturday in Berlin (UTC+1 in winter), for four hours.
        let window = Window::new("0 2 * * SAT", "Europe/Berlin", Duration::from_secs(4 * 3600)).unwrap();
        let saturday = (at("2027-01-02T01:00:00Z"), at("2027-01-02T05:00:00Z"));
        // Due on a Friday afternoon: waits for Saturday's window, jittered inside it.
        let (when, open) = in_window(at("2027-01-01T14:00:00Z"), &window, "uid").unwrap();
        assert_eq!(open, saturday);
        assert!(
            when >= saturday.0 && when < after(saturday.0, Duration::from_secs(12 * 60)),
            "{when}"
        );
        // Due while it is open: at once.
        let due = at("2027-01-02T03:30:00Z");
        assert_eq!(in_window(due, &window, "uid"), Some((due, saturday)));
        // Due just as it closed: the next Saturday.
        let (_, next) = in_window(saturday.1, &window, "uid").unwrap();
        assert_eq!(next.0, at("2027-01-09T01:00:00Z"));
        // Summer time moves the window in UTC, not on the wall clock.
        let (_, july) = in_window(at("2027-07-01T00:00:00Z"), &window, "uid").unwrap();
        assert_eq!(july.0, at("2027-07-03T00:00:00Z"));
    }

    #[test]
    fn a_window_names_what_is_wrong_with_it() {
        let hour = Duration::from_secs(3600);
        let err = |s: &str, z: &str| Window::new(s, z, hour).unwrap_err();
        assert!(err("0 2 * * * *", "UTC").contains("five fields"));
        assert!(err("61 2 * * *", "UTC").contains("not a cron schedule"));
        assert!(err("0 2 * * SAT", "Europe/Berln").contains("not an IANA time zone"));
        assert!(err("0 0 31 2 *", "UTC").contains("never opens"));
        assert!(time_zone_names().len() > 500 && time_zone_names().contains(&"UTC".to_owned()));
    }

    #[test]
    fn rotation_is_due_before_every_has_passed() {
        let created: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let next = next_rotation(created, DAY, "uid");
        assert!(next <= after(created, DAY) && next > after(created, DAY - MAX_JITTER));
    }
}
