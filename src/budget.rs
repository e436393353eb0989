//! Budgets: a subaccount's month-to-date spend judged against its `spec.budget`. Pure: no I/O,
//! no clock; the subaccount reconciler reads Twilio and acts on what is decided here.
//!
//! Contract:
//! - money is decimal ([`Decimal`]), never floating point: "50.00" and "49.999" compare exactly;
//! - [`judge`] turns one usage read into `status.budget`: the state (Ok, Warning, Exceeded), the
//!   thresholds to announce (each once per usage month, re-armed if spend falls back below it, as
//!   when monthly is raised) and whether the budget suspends the subaccount (action Suspend, spend
//!   at or above monthly, in the month Twilio reports);
//! - the budget month is the one Twilio's usage record reports (its start date, GMT), so a
//!   month rollover is seen when Twilio sees it, whatever the operator's clock says;
//! - [`read_interval`] and [`next_read`] are the polling schedule: half the time the current
//!   spend rate (between the last two reads) needs to reach the next threshold, between 1 and
//!   15 minutes; and, whatever the rate, at most 5 minutes within 5 points of the next threshold
//!   and 10 within 20, so a burst from idle is seen soon; with usage triggers at Twilio (which
//!   call the operator at each threshold) at least 5 minutes apart; past monthly every 15
//!   minutes; always just after the next GMT month starts;
//! - [`trigger_plan`] keeps one recurring monthly price trigger per threshold, found again by a
//!   name derived from the object's UID, so a create interrupted before it was recorded is
//!   found, not made twice.

use crate::api::schedule;
use crate::api::subaccount::{
    Budget, BudgetAction, BudgetState, BudgetStatus, BudgetTrigger, SubaccountState, SubaccountUsage,
};
use crate::conditions::{Problem, Reason};
use crate::twilio::types::{NewUsageTrigger, UsageTrigger};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use std::str::FromStr;
use std::time::Duration;

/// The condition type that reports the budget.
pub const CONDITION: &str = "Budget";
/// The threshold that stands for monthly itself.
pub const LIMIT: u8 = 100;

const MINUTE: Duration = Duration::from_secs(60);
/// How long after a GMT month starts its first read is made: Twilio's usage records lag.
const AFTER_MONTH_START: Duration = Duration::from_secs(2 * 60);
/// The least time between two reads trigger callbacks ask for, whatever arrives.
pub const CALLBACK_SPACING: Duration = Duration::from_secs(30);
/// The least time between a read and one a change of the object (a look) asks for.
pub const LOOK_SPACING: Duration = Duration::from_secs(10);
/// A read older than this is made again before a budget suspension is lifted.
pub const FRESH_BEFORE_LIFTING: Duration = MINUTE;

/// A decimal amount of money from `field`; text that is not one is an `InvalidSpec` problem.
pub fn amount(field: &str, text: &str) -> Result<Decimal, Problem> {
    Decimal::from_str(text.trim()).map_err(|_| {
        Problem::new(
            Reason::InvalidSpec,
            format!("{field}: {text:?} is not a decimal amount such as \"50.00\""),
        )
    })
}

/// The thresholds of `budget`: its warnAt percentages (1 to 99, sorted, once each), then 100.
pub fn thresholds(budget: &Budget) -> Vec<u8> {
    let mut out: Vec<u8> = budget
        .warn_at
        .iter()
        .copied()
        .filter(|p| (1..LIMIT).contains(p))
        .collect();
    out.sort_unstable();
    out.dedup();
    out.push(LIMIT);
    out
}

/// Whether `spent` has reached `percent` of `monthly`.
fn reached(spent: Decimal, monthly: Decimal, percent: u8) -> bool {
    spent * Decimal::from(100) >= monthly * Decimal::from(percent)
}

/// The spend at which threshold `percent` of `monthly` is reached, as Twilio takes it.
pub fn threshold_value(monthly: Decimal, percent: u8) -> String {
    (monthly * Decimal::from(percent) / Decimal::from(100))
        .normalize()
        .to_string()
}

/// The usage month a read belongs to, `YYYY-MM`: the start date of Twilio's record, or the GMT
/// month of `at` when Twilio gave none.
pub fn period(start_date: Option<&str>, at: Timestamp) -> String {
    let month = start_date.and_then(|d| d.get(..7)).filter(|m| {
        m.bytes()
            .enumerate()
            .all(|(i, b)| if i == 4 { b == b'-' } else { b.is_ascii_digit() })
    });
    match month {
        Some(m) => m.to_owned(),
        None => at.to_zoned(TimeZone::UTC).strftime("%Y-%m").to_string(),
    }
}

/// What one usage read means for the budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The new `status.budget`.
    pub status: BudgetStatus,
    /// Thresholds reached and not announced yet this month, lowest first.
    pub announce: Vec<u8>,
    /// Whether the budget wants the subaccount suspended.
    pub suspend: bool,
}

/// Judges `usage` against `budget` (whose limit is `monthly`), given what the last pass
/// recorded (`previous`) and the state the spec asks for.
pub fn judge(
    budget: &Budget,
    monthly: Decimal,
    usage: &SubaccountUsage,
    previous: Option<&BudgetStatus>,
    spec_state: SubaccountState,
) -> Result<Judgement, Problem> {
    let spent = Decimal::from_str(usage.month_to_date.trim()).map_err(|_| {
        Problem::new(
            Reason::TwilioError,
            format!(
                "Twilio reported month-to-date spend {:?}, which is not a number; the budget cannot be judged",
                usage.month_to_date
            ),
        )
    })?;
    let period = usage
        .period
        .clone()
        .unwrap_or_else(|| period(None, usage.observed_at.0));
    let all = thresholds(budget);
    let now_reached: Vec<u8> = all
        .iter()
        .copied()
        .filter(|p| reached(spent, monthly, *p))
        .collect();
    let before: &[u8] = previous
        .filter(|p| p.period == period)
        .map_or(&[], |p| p.announced.as_slice());
    let announce: Vec<u8> = now_reached
        .iter()
        .copied()
        .filter(|p| !before.contains(p))
        .collect();
    let state = if now_reached.contains(&LIMIT) {
        BudgetState::Exceeded
    } else if now_reached.is_empty() {
        BudgetState::Ok
    } else {
        BudgetState::Warning
    };
    let suspend = budget.action == BudgetAction::Suspend && state == BudgetState::Exceeded;
    let rate = rate(previous, usage, spent, &period);
    let percent = (spent * Decimal::from(100) / monthly)
        .floor()
        .to_i64()
        .unwrap_or(i64::MAX);
    Ok(Judgement {
        status: BudgetStatus {
            spent: usage.month_to_date.clone(),
            currency: usage.currency.clone(),
            percent,
            state,
            suspended_by_budget: suspend && spec_state == SubaccountState::Active,
            period,
            announced: now_reached,
            observed_at: usage.observed_at.clone(),
            rate_per_hour: rate.map(|r| r.to_string()),
            next_read_at: None,
            triggers: previous.map(|p| p.triggers.clone()).unwrap_or_default(),
        },
        announce,
        suspend,
    })
}

/// spent / monthly, for the metric.
pub fn ratio(status: &BudgetStatus, monthly: Decimal) -> f64 {
    Decimal::from_str(&status.spent)
        .ok()
        .and_then(|spent| (spent / monthly).to_f64())
        .unwrap_or(0.0)
}

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

/// Spend per hour between the read `previous` recorded and `usage`, when both are of the same
/// month and at least a minute apart; otherwise the rate `previous` recorded, if it is of the
/// same month. Falling spend (a refund) counts as no growth.
fn rate(
    previous: Option<&BudgetStatus>,
    usage: &SubaccountUsage,
    spent: Decimal,
    period: &str,
) -> Option<Decimal> {
    let previous = previous.filter(|p| p.period == period)?;
    let elapsed = usage
        .observed_at
        .0
        .duration_since(previous.observed_at.0)
        .as_secs();
    if elapsed < 60 {
        return previous
            .rate_per_hour
            .as_deref()
            .and_then(|r| Decimal::from_str(r).ok());
    }
    let before = Decimal::from_str(&previous.spent).ok()?;
    let grown = (spent - before).max(Decimal::ZERO);
    Some(
        (grown * Decimal::from(3600) / Decimal::from(elapsed))
            .round_dp(4)
            .normalize(),
    )
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

/// The Warning event announcing threshold `percent`: its reason and note.
pub fn announcement(
    percent: u8,
    status: &BudgetStatus,
    budget: &Budget,
    sid: &str,
) -> (&'static str, String) {
    let spent = format!(
        "Subaccount {sid} has spent {} {} this month ({}%) of its budget of {}",
        status.spent, status.currency, status.percent, budget.monthly
    );
    if percent < LIMIT {
        return ("BudgetWarning", format!("{spent}: past the {percent}% threshold"));
    }
    let consequence = match budget.action {
        BudgetAction::Alert => "action is Alert, so nothing was changed at Twilio",
        BudgetAction::Suspend => {
            "action is Suspend: the subaccount is suspended at Twilio until the next month starts (GMT) or spec.budget.monthly is raised above the spend"
        }
    };
    (
        "BudgetExceeded",
        format!("{spent}: the limit is reached; {consequence}"),
    )
}

/// The Budget condition's status, reason and message for `status`.
pub fn condition(status: &BudgetStatus, budget: &Budget) -> (&'static str, &'static str, String) {
    let figures = format!(
        "{} {} spent of {} this month ({}%, {})",
        status.spent, status.currency, budget.monthly, status.percent, status.period
    );
    match status.state {
        BudgetState::Ok => ("True", "WithinBudget", figures),
        BudgetState::Warning => ("True", "BudgetWarning", figures),
        BudgetState::Exceeded if status.suspended_by_budget => (
            "False",
            "BudgetExceeded",
            format!("{figures}; suspended at Twilio until the next month or a higher limit"),
        ),
        BudgetState::Exceeded => ("False", "BudgetExceeded", figures),
    }
}

/// The name a budget trigger of the object with `uid` carries for threshold `percent`.
pub fn trigger_name(uid: &str, percent: u8) -> String {
    format!("{}{percent}", trigger_prefix(uid))
}

fn trigger_prefix(uid: &str) -> String {
    format!("twilio-operator budget {uid} ")
}

/// A trigger the budget wants at Twilio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Its threshold.
    pub percent: u8,
    /// The spend at which it fires.
    pub value: String,
    /// Its name, from the object's UID and the threshold.
    pub name: String,
    /// Where Twilio calls.
    pub callback_url: String,
}

impl Wanted {
    /// The create request for this trigger.
    pub fn request(&self) -> NewUsageTrigger {
        NewUsageTrigger {
            callback_url: self.callback_url.clone(),
            trigger_value: self.value.clone(),
            usage_category: "totalprice".into(),
            friendly_name: Some(self.name.clone()),
            recurring: Some("monthly".into()),
            trigger_by: Some("price".into()),
        }
    }
}

/// The triggers the object with `uid` wants: one per threshold of `budget`, calling
/// `callback_url`; none without a budget or a URL.
pub fn wanted_triggers(
    budget: Option<(&Budget, Decimal)>,
    uid: &str,
    callback_url: Option<&str>,
) -> Vec<Wanted> {
    let (Some((budget, monthly)), Some(url)) = (budget, callback_url) else {
        return Vec::new();
    };
    thresholds(budget)
        .into_iter()
        .map(|percent| Wanted {
            percent,
            value: threshold_value(monthly, percent),
            name: trigger_name(uid, percent),
            callback_url: url.to_owned(),
        })
        .collect()
}

/// Whether the triggers recorded in status are exactly those wanted.
pub fn recorded_as_wanted(recorded: &[BudgetTrigger], wanted: &[Wanted]) -> bool {
    recorded.len() == wanted.len()
        && wanted.iter().all(|w| {
            recorded
                .iter()
                .any(|r| r.percent == w.percent && r.value == w.value && r.callback_url == w.callback_url)
        })
}

/// What to change at Twilio so the object's triggers are those wanted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerPlan {
    /// Triggers already right: recorded as they are.
    pub keep: Vec<BudgetTrigger>,
    /// Triggers right but for their callback URL: `(sid, wanted)`.
    pub repoint: Vec<(String, Wanted)>,
    /// Triggers to create.
    pub create: Vec<Wanted>,
    /// SIDs of this object's triggers nobody wants (changed value, duplicates, no budget).
    pub delete: Vec<String>,
}

/// Plans the triggers of the object with `uid` from those Twilio lists for its subaccount:
/// others' triggers are never touched, and of two triggers for one threshold one is deleted.
pub fn trigger_plan(uid: &str, wanted: &[Wanted], existing: &[UsageTrigger]) -> TriggerPlan {
    let prefix = trigger_prefix(uid);
    let mut plan = TriggerPlan::default();
    let mut used = Vec::new();
    for w in wanted {
        let same = |t: &&UsageTrigger| {
            t.friendly_name.as_deref() == Some(w.name.as_str())
                && t.trigger_value
                    .as_deref()
                    .and_then(|v| Decimal::from_str(v).ok())
                    .zip(Decimal::from_str(&w.value).ok())
                    .is_some_and(|(a, b)| a == b)
                && !used.contains(&t.sid)
        };
        let found = existing
            .iter()
            .filter(same)
            .min_by_key(|t| t.callback_url.as_deref() != Some(w.callback_url.as_str()));
        match found {
            Some(t) => {
                used.push(t.sid.clone());
                if t.callback_url.as_deref() == Some(w.callback_url.as_str()) {
                    plan.keep.push(record(&t.sid, w));
                } else {
                    plan.repoint.push((t.sid.clone(), w.clone()));
                }
            }
            None => plan.create.push(w.clone()),
        }
    }
    plan.delete = existing
        .iter()
        .filter(|t| t.friendly_name.as_deref().is_some_and(|n| n.starts_with(&prefix)))
        .filter(|t| !used.contains(&t.sid))
        .map(|t| t.sid.clone())
        .collect();
    plan
}

/// The status record of trigger `sid`, made as `wanted` says.
pub fn record(sid: &str, wanted: &Wanted) -> BudgetTrigger {
    BudgetTrigger {
        percent: wanted.percent,
        sid: sid.to_owned(),
        value: wanted.value.clone(),
        callback_url: wanted.callback_url.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn budget(monthly: &str, warn_at: &[u8], action: BudgetAction) -> (Budget, Decimal) {
        let b = Budget {
            monthly: monthly.into(),
            warn_at: warn_at.to_vec(),
            action,
        };
        let m = amount("spec.budget.monthly", monthly).unwrap();
        (b, m)
    }
    fn read(spent: &str, period: &str) -> SubaccountUsage {
        SubaccountUsage {
            month_to_date: spent.into(),
            currency: "usd".into(),
            observed_at: Time(at("2026-11-10T12:00:00Z")),
            period: Some(period.into()),
        }
    }

    #[test]
    fn thresholds_warn_once_a_month_and_rearm_below() {
        let (b, m) = budget("50.00", &[80, 50, 80], BudgetAction::Alert);
        assert_eq!(thresholds(&b), vec![50, 80, 100]);
        let active = SubaccountState::Active;
        let j = judge(&b, m, &read("24.99", "2026-11"), None, active).unwrap();
        assert_eq!(
            (j.status.state, j.status.percent, j.announce.clone()),
            (BudgetState::Ok, 49, vec![])
        );
        let j = judge(&b, m, &read("41.27", "2026-11"), Some(&j.status), active).unwrap();
        assert_eq!((j.status.state, j.status.percent), (BudgetState::Warning, 82));
        assert_eq!(
            j.announce,
            vec![50, 80],
            "both thresholds crossed at once are announced"
        );
        let again = judge(&b, m, &read("45", "2026-11"), Some(&j.status), active).unwrap();
        assert!(again.announce.is_empty(), "once per month");
        let next_month = judge(&b, m, &read("41.27", "2026-12"), Some(&again.status), active).unwrap();
        assert_eq!(next_month.announce, vec![50, 80], "a new month announces again");
        // The limit raised: 80% is no longer reached, so it is announced when crossed again.
        let (raised, rm) = budget("100", &[50, 80], BudgetAction::Alert);
        let lower = judge(
            &raised,
            rm,
            &read("60", "2026-12"),
            Some(&next_month.status),
            active,
        )
        .unwrap();
        assert_eq!(
            (lower.status.announced.clone(), lower.announce.clone()),
            (vec![50], vec![])
        );
        let up = judge(&raised, rm, &read("80", "2026-12"), Some(&lower.status), active).unwrap();
        assert_eq!(up.announce, vec![80]);
    }

    #[test]
    fn exceeding_suspends_only_with_action_suspend_and_never_overrides_the_spec() {
        let (alert, m) = budget("50", &[80], BudgetAction::Alert);
        let j = judge(
            &alert,
            m,
            &read("50.00", "2026-11"),
            None,
            SubaccountState::Active,
        )
        .unwrap();
        assert_eq!(
            (j.status.state, j.suspend, j.status.suspended_by_budget),
            (BudgetState::Exceeded, false, false)
        );
        assert_eq!(j.announce, vec![80, 100]);
        let (suspend, m) = budget("50", &[80], BudgetAction::Suspend);
        let just_below = judge(
            &suspend,
            m,
            &read("49.9999", "2026-11"),
            None,
            SubaccountState::Active,
        )
        .unwrap();
        assert!(!just_below.suspend, "decimal, not floating point");
        let j = judge(
            &suspend,
            m,
            &read("50.01", "2026-11"),
            None,
            SubaccountState::Active,
        )
        .unwrap();
        assert!(j.suspend && j.status.suspended_by_budget);
        let by_spec = judge(
            &suspend,
            m,
            &read("50.01", "2026-11"),
            None,
            SubaccountState::Suspended,
        )
        .unwrap();
        assert!(
            by_spec.suspend && !by_spec.status.suspended_by_budget,
            "suspended by the spec, not the budget"
        );
        let new_month = judge(
            &suspend,
            m,
            &read("0", "2026-12"),
            Some(&j.status),
            SubaccountState::Active,
        )
        .unwrap();
        assert!(!new_month.suspend && new_month.status.state == BudgetState::Ok);
        let bad = judge(
            &suspend,
            m,
            &read("lots", "2026-11"),
            None,
            SubaccountState::Active,
        )
        .unwrap_err();
        assert_eq!(bad.reason, Reason::TwilioError);
    }

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

    fn existing(sid: &str, name: &str, value: &str, url: &str) -> UsageTrigger {
        serde_json::from_value(serde_json::json!({
            "sid": sid, "friendly_name": name, "trigger_value": value, "callback_url": url,
        }))
        .unwrap()
    }

    #[test]
    fn triggers_are_found_by_name_never_duplicated_and_others_left_alone() {
        let (b, m) = budget("50", &[80], BudgetAction::Suspend);
        let url = "https://op.example.com/usage-triggers/ns/a";
        let wanted = wanted_triggers(Some((&b, m)), "uid-1", Some(url));
        assert_eq!(
            wanted
                .iter()
                .map(|w| (w.percent, w.value.as_str()))
                .collect::<Vec<_>>(),
            vec![(80, "40"), (100, "50")]
        );
        assert!(
            wanted_triggers(Some((&b, m)), "uid-1", None).is_empty(),
            "no public URL"
        );
        assert!(wanted_triggers(None, "uid-1", Some(url)).is_empty(), "no budget");
        let fresh = trigger_plan("uid-1", &wanted, &[]);
        assert_eq!(fresh.create.len(), 2);
        let made = [
            existing("UT1", &trigger_name("uid-1", 80), "40.00", url),
            existing("UT2", &trigger_name("uid-1", 100), "50", url),
            // Made twice by an interrupted pass, or left by an old limit: deleted.
            existing("UT3", &trigger_name("uid-1", 100), "50", url),
            existing("UT4", &trigger_name("uid-1", 50), "25", url),
            // Somebody else's, or another object's: never touched.
            existing("UT5", "alerts for finance", "40", url),
            existing("UT6", &trigger_name("uid-2", 80), "40", url),
        ];
        let plan = trigger_plan("uid-1", &wanted, &made);
        assert!(plan.create.is_empty() && plan.repoint.is_empty());
        assert_eq!(
            plan.keep.iter().map(|t| t.sid.as_str()).collect::<Vec<_>>(),
            vec!["UT1", "UT2"]
        );
        assert_eq!(plan.delete, vec!["UT3", "UT4"]);
        assert!(recorded_as_wanted(&plan.keep, &wanted));
        let moved = wanted_triggers(
            Some((&b, m)),
            "uid-1",
            Some("https://new.example.com/usage-triggers/ns/a"),
        );
        let plan = trigger_plan("uid-1", &moved, &made[..2]);
        assert_eq!(plan.repoint.len(), 2, "a new URL updates, it does not re-create");
        assert!(!recorded_as_wanted(&[], &moved));
        let gone = trigger_plan("uid-1", &[], &made);
        assert_eq!(gone.delete, vec!["UT1", "UT2", "UT3", "UT4"]);
    }
}
