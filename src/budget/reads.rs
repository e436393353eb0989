//! When a subaccount's spend is read from Twilio. Pure.
//!
//! Without a budget, every 15 minutes. With one, [`read_interval`]: half the time the current
//! spend rate needs to reach the next threshold, between 1 and 15 minutes, and at most 5 within
//! 5 points of it or 10 within 20; with usage triggers at Twilio at least 5 minutes apart; past
//! monthly every 15 minutes; always just after the next GMT month starts. A verified trigger
//! callback or a person's change asks for a read sooner, spaced so a flood costs little.

use super::reached;
use super::thresholds;
use crate::api::schedule;
use crate::api::subaccount::{Budget, SubaccountUsage};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use std::time::Duration;

/// Usage is read from Twilio at least this often.
pub const USAGE_MAX_AGE: Duration = Duration::from_secs(15 * 60);
const MINUTE: Duration = Duration::from_secs(60);
/// How long after a GMT month starts its first read is made: Twilio's usage records lag.
const AFTER_MONTH_START: Duration = Duration::from_secs(2 * 60);
/// The least time between two reads trigger callbacks ask for, whatever arrives.
pub const CALLBACK_SPACING: Duration = Duration::from_secs(30);
/// The least time between a read and one a change of the object (a look) asks for.
pub const LOOK_SPACING: Duration = Duration::from_secs(10);
/// A read older than this is made again before a budget suspension is lifted.
pub const FRESH_BEFORE_LIFTING: Duration = MINUTE;

/// How long until spend is read again, from where it stands and how fast it grows (`rate`, per
/// hour): the closer to the next threshold, the sooner. `triggered` says Twilio calls the
/// operator at each threshold.
pub fn read_interval(
    budget: &Budget,
    monthly: Decimal,
    spent: Decimal,
    rate: Option<Decimal>,
    triggered: bool,
) -> Duration {
    let next = thresholds(budget)
        .into_iter()
        .find(|p| !reached(spent, monthly, *p));
    let Some(next) = next else {
        return 15 * MINUTE;
    };
    let hundred = Decimal::from(100);
    // Points of monthly between spend and the next threshold.
    let gap = Decimal::from(next) - spent * hundred / monthly;
    let by_gap = if gap <= Decimal::from(5) {
        5 * MINUTE
    } else if gap <= Decimal::from(20) {
        10 * MINUTE
    } else {
        15 * MINUTE
    };
    let by_rate = rate.filter(|r| *r > Decimal::ZERO).map(|r| {
        let left = gap * monthly / hundred;
        // Half the time the threshold is reached in at this rate, in whole seconds.
        let seconds = (left / r * Decimal::from(3600) / Decimal::from(2))
            .floor()
            .to_u64()
            .unwrap_or(u64::MAX);
        Duration::from_secs(seconds).clamp(MINUTE, 15 * MINUTE)
    });
    let interval = by_rate.map_or(by_gap, |r| r.min(by_gap));
    // Triggers call back within about a minute of a crossing; polling stays as the net for a
    // call that never arrives, at most 5 minutes late.
    if triggered {
        interval.max(5 * MINUTE)
    } else {
        interval
    }
}

/// When spend read at `observed` is read again: after `interval`, and at the latest just after
/// the next GMT month starts.
pub fn next_read(observed: Timestamp, interval: Duration) -> Timestamp {
    let month_start = observed
        .to_zoned(TimeZone::UTC)
        .date()
        .first_of_month()
        .checked_add(k8s_openapi::jiff::Span::new().months(1))
        .ok()
        .and_then(|d| d.to_zoned(TimeZone::UTC).ok())
        .map(|z| z.timestamp());
    let regular = schedule::after(observed, interval);
    match month_start {
        Some(start) => regular.min(schedule::after(start, AFTER_MONTH_START)),
        None => regular,
    }
}

/// When a read asked for at `asked` (a verified trigger callback, or a person's look) after the
/// read `known` may be made: at once, unless a read of the same kind was made less than
/// `spacing` before (`last`), so however often it is asked, spend is read at most once per
/// `spacing` because of it. `None` when nothing newer than the read asks.
pub fn asked_read_at(
    known: &SubaccountUsage,
    asked: Option<Timestamp>,
    last: Option<Timestamp>,
    spacing: Duration,
) -> Option<Timestamp> {
    let spacing = k8s_openapi::jiff::SignedDuration::try_from(spacing).expect("fits");
    asked
        .filter(|at| *at > known.observed_at.0)
        .map(|at| last.map_or(at, |t| t.saturating_add(spacing).expect("saturating").max(at)))
}

/// Whether a read must be made now: none is known, the known one is `due`, or one was asked
/// for and may be made (`asked`, from [`asked_read_at`]).
pub fn read_due(
    known: Option<&SubaccountUsage>,
    due: Option<Timestamp>,
    asked: Option<Timestamp>,
    now: Timestamp,
) -> bool {
    let Some(_) = known else {
        return true;
    };
    asked.is_some_and(|at| now >= at) || due.is_none_or(|d| now >= d)
}

/// The newer of two usage reads.
pub fn newest_usage(a: Option<SubaccountUsage>, b: Option<SubaccountUsage>) -> Option<SubaccountUsage> {
    [a, b].into_iter().flatten().max_by_key(|u| u.observed_at.0)
}

/// When `usage` is read again: after [`USAGE_MAX_AGE`], or sooner as the budget's schedule
/// says ([`read_interval`], from the spend `rate` per hour; `triggered` says Twilio calls back
/// at each threshold).
pub fn next_usage_read(
    usage: &SubaccountUsage,
    budget: Option<&(Budget, Decimal)>,
    rate: Option<&str>,
    triggered: bool,
) -> Timestamp {
    let observed = usage.observed_at.0;
    let spent = Decimal::from_str_exact(usage.month_to_date.trim()).ok();
    let rate = rate.and_then(|r| Decimal::from_str_exact(r).ok());
    match (budget, spent) {
        (Some((budget, monthly)), Some(spent)) => {
            next_read(observed, read_interval(budget, *monthly, spent, rate, triggered))
        }
        _ => schedule::after(observed, USAGE_MAX_AGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::subaccount::BudgetAction;
    use crate::budget::period;
    use crate::budget::tests::{at, budget, read};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::str::FromStr;

    #[test]
    fn reads_come_sooner_near_a_threshold_and_at_the_month_start() {
        let (b, m) = budget("100", &[50, 80], BudgetAction::Suspend);
        let d = |s: &str| Decimal::from_str(s).unwrap();
        let interval = |spent: &str, rate: Option<&str>, triggered| {
            read_interval(&b, m, d(spent), rate.map(d), triggered)
        };
        assert_eq!(interval("10", None, false), 15 * MINUTE);
        assert_eq!(
            interval("30", None, false),
            10 * MINUTE,
            "within 20 points of 50%"
        );
        assert_eq!(interval("46", None, false), 5 * MINUTE, "within 5 points of 50%");
        assert_eq!(interval("50", None, false), 15 * MINUTE, "80% is 30 points away");
        assert_eq!(
            interval("46", Some("0"), false),
            5 * MINUTE,
            "idle near a threshold"
        );
        assert_eq!(
            interval("10", Some("0.5"), false),
            15 * MINUTE,
            "80 hours from 50%"
        );
        assert_eq!(
            interval("10", Some("80"), false),
            15 * MINUTE,
            "half an hour from 50%"
        );
        assert_eq!(
            interval("10", Some("240"), false),
            5 * MINUTE,
            "10 minutes from 50%"
        );
        assert_eq!(interval("10", Some("10000"), false), MINUTE, "a runaway");
        assert_eq!(
            interval("100", Some("10000"), false),
            15 * MINUTE,
            "past the limit"
        );
        assert_eq!(
            interval("99", Some("10000"), true),
            5 * MINUTE,
            "triggers call back; polling is the net"
        );
        assert_eq!(interval("10", None, true), 15 * MINUTE);
        assert_eq!(
            next_read(at("2026-11-10T12:00:00Z"), 15 * MINUTE),
            at("2026-11-10T12:15:00Z")
        );
        assert_eq!(
            next_read(at("2026-11-30T23:55:00Z"), 15 * MINUTE),
            at("2026-12-01T00:02:00Z"),
            "just after the GMT month starts"
        );
        assert_eq!(period(Some("2026-12-01"), at("2026-11-30T23:59:00Z")), "2026-12");
        assert_eq!(period(None, at("2026-11-30T23:59:00Z")), "2026-11");
        assert_eq!(period(Some("garbage"), at("2026-11-30T23:59:00Z")), "2026-11");
        assert_eq!(
            period(Some("2026-1é-01"), at("2026-11-30T23:59:00Z")),
            "2026-11",
            "no panic on odd text"
        );
    }

    #[test]
    fn a_callback_forces_a_read_at_most_every_30_seconds() {
        let known = read("1", "2026-11");
        let observed = known.observed_at.0;
        let due = Some(at("2026-11-10T12:15:00Z"));
        let soon = at("2026-11-10T12:00:10Z");
        assert!(!read_due(Some(&known), due, None, soon));
        let spacing = CALLBACK_SPACING;
        assert_eq!(
            asked_read_at(&known, Some(soon), None, spacing),
            Some(soon),
            "the first callback is acted on at once"
        );
        let forced = at("2026-11-10T12:00:05Z");
        let spaced = asked_read_at(&known, Some(soon), Some(forced), spacing);
        assert_eq!(
            spaced,
            Some(at("2026-11-10T12:00:35Z")),
            "the next one waits for the spacing"
        );
        assert!(!read_due(Some(&known), due, spaced, soon));
        assert!(read_due(Some(&known), due, spaced, at("2026-11-10T12:00:35Z")));
        assert_eq!(
            asked_read_at(&known, Some(observed), None, spacing),
            None,
            "older than the read"
        );
        assert!(read_due(None, None, None, soon));
        assert!(read_due(Some(&known), due, None, at("2026-11-10T12:15:00Z")));
    }

    #[test]
    fn usage_is_read_at_most_every_15_minutes() {
        let usage_at = |t: &str| SubaccountUsage {
            month_to_date: "1".into(),
            currency: "usd".into(),
            observed_at: Time(at(t)),
            period: None,
        };
        let usage = usage_at("2026-01-01T00:00:00Z");
        assert_eq!(
            next_usage_read(&usage, None, None, false),
            at("2026-01-01T00:15:00Z")
        );
        let newer = usage_at("2026-01-01T00:10:00Z");
        assert_eq!(
            newest_usage(Some(usage.clone()), Some(newer.clone())),
            Some(newer.clone())
        );
        assert_eq!(newest_usage(None, Some(usage.clone())), Some(usage));
    }
}
