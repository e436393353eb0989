//! Budgets: a subaccount's month-to-date spend judged against its `spec.budget`. Pure: no I/O,
//! no clock; the subaccount reconciler's spend step reads Twilio and acts on what is decided here.
//!
//! [`judge`] turns one usage read into `status.budget` and decides whether the budget suspends
//! the subaccount; [`wanted_state`] is the one place that turns that into the state wanted at
//! Twilio. [`reads`] schedules the reads, [`triggers`] plans the usage triggers at Twilio, and
//! [`callbacks`] keeps what their calls to the operator said. ARCHITECTURE.md tells the story.

pub mod callbacks;
pub mod reads;
pub mod triggers;

use crate::api::subaccount::{
    Budget, BudgetAction, BudgetState, BudgetStatus, SubaccountState, SubaccountUsage,
};
use crate::conditions::{Problem, Reason};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use std::str::FromStr;

/// The condition type that reports the budget.
pub const CONDITION: &str = "Budget";
/// The threshold that stands for monthly itself.
pub const LIMIT: u8 = 100;

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

/// `spec.budget` with its monthly limit as a decimal, validated; `None` without a budget.
pub fn limit(budget: Option<&Budget>) -> Result<Option<(Budget, Decimal)>, Problem> {
    let Some(budget) = budget else {
        return Ok(None);
    };
    let monthly = amount("spec.budget.monthly", &budget.monthly)?;
    if monthly <= Decimal::ZERO {
        return Err(Problem::new(
            Reason::InvalidSpec,
            "spec.budget.monthly must be more than zero, such as \"50.00\"",
        ));
    }
    Ok(Some((budget.clone(), monthly)))
}

/// The state the subaccount must have at Twilio: suspended while its budget says so (see
/// [`judge`]), otherwise what `spec.state` says.
pub fn wanted_state(judgement: Option<&Judgement>, spec: SubaccountState) -> SubaccountState {
    if judgement.is_some_and(|j| j.suspend) {
        SubaccountState::Suspended
    } else {
        spec
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub(crate) fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    pub(crate) fn budget(monthly: &str, warn_at: &[u8], action: BudgetAction) -> (Budget, Decimal) {
        let b = Budget {
            monthly: monthly.into(),
            warn_at: warn_at.to_vec(),
            action,
        };
        let m = amount("spec.budget.monthly", monthly).unwrap();
        (b, m)
    }
    pub(crate) fn read(spent: &str, period: &str) -> SubaccountUsage {
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
}
