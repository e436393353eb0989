//! The budget's Twilio call budget: budgeted subaccounts over a simulated month, read on the
//! operator's own schedule (`budget::reads::next_usage_read`, `budget::judge`, `budget::reads::asked_read_at`
//! are the functions the reconciler calls), with and without usage triggers at Twilio. Prints
//! the Twilio calls the budgets cost and how long a crossed limit goes unnoticed.
//!
//! `cargo bench --bench budget` runs 100 subaccounts over 30 days, minute by minute; under
//! `cargo test --all-targets` the same code runs as a smoke run with 10. Parameters
//! (environment): `BENCH_SUBACCOUNTS` (default 100).
//!
//! The spend of each subaccount follows one of four profiles, spread over the subaccounts:
//! steady (ends the month at 40-70% of its limit), heavy (80-95%), over (crosses the limit on
//! day 20) and runaway (from 10% to 150% within an hour on day 10). Every budget warns at 50%
//! and 80% and suspends at the limit. Twilio's trigger evaluation lag (about a minute) and the
//! callback's delivery are counted as one minute; usage records are taken as current (at
//! Twilio they lag, which no schedule can make up for).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use twilio_operator::api::subaccount::{
    Budget, BudgetAction, BudgetStatus, SubaccountState, SubaccountUsage,
};
use twilio_operator::budget;
use twilio_operator::budget::reads::next_usage_read;

const MINUTES: i64 = 30 * 24 * 60;
const MONTHLY: f64 = 100.0;

#[derive(Default, Debug)]
struct Tally {
    reads: u64,
    callback_reads: u64,
    suspensions: u64,
    trigger_creates: u64,
    trigger_lists: u64,
    callbacks: u64,
    /// Minutes from spend crossing the limit to the read that sees it, per crossing.
    unnoticed: Vec<i64>,
}

/// Spend of subaccount `i` of `n` after `minute` minutes of the month.
fn spend(i: usize, n: usize, minute: i64) -> f64 {
    let f = minute as f64 / MINUTES as f64;
    let spread = (i as f64 + 0.5) / n as f64;
    match i * 20 / n {
        0..=11 => MONTHLY * (0.4 + 0.3 * spread) * f,
        12..=16 => MONTHLY * (0.8 + 0.15 * spread) * f,
        17..=18 => MONTHLY * f * 1.5,
        _ => {
            let burst = 10 * 24 * 60;
            if minute < burst {
                MONTHLY * 0.1 * minute as f64 / burst as f64
            } else {
                MONTHLY * (0.1 + 1.4 * ((minute - burst) as f64 / 60.0).min(1.0))
            }
        }
    }
}

fn simulate(n: usize, triggered: bool) -> Tally {
    let start: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
    let at = |minute: i64| start + SignedDuration::from_mins(minute);
    let spec = Budget {
        monthly: "100".into(),
        warn_at: vec![50, 80],
        action: BudgetAction::Suspend,
    };
    let monthly = Decimal::from(100);
    let thresholds = budget::thresholds(&spec);
    let mut tally = Tally::default();
    for i in 0..n {
        let read = |minute: i64| SubaccountUsage {
            month_to_date: Decimal::from_f64(spend(i, n, minute))
                .unwrap()
                .round_dp(4)
                .to_string(),
            currency: "usd".into(),
            observed_at: Time(at(minute)),
            period: Some("2026-11".into()),
        };
        if triggered {
            // Listed, one made per threshold, then listed again every 6 hours to confirm them.
            tally.trigger_lists += 1 + 30 * 4;
            tally.trigger_creates += thresholds.len() as u64;
        }
        let mut known = read(0);
        tally.reads += 1;
        let mut status: Option<BudgetStatus> = None;
        let (mut suspended, mut crossed_at) = (false, None);
        let (mut called_back, mut last_forced) = (None, None);
        let mut fired = vec![false; thresholds.len()];
        for minute in 1..MINUTES {
            let now = at(minute);
            if suspended {
                // Suspended: nothing more is spent this month.
                continue;
            }
            let spent = spend(i, n, minute);
            if crossed_at.is_none() && spent >= MONTHLY {
                crossed_at = Some(minute);
            }
            if triggered {
                for (t, fired) in thresholds.iter().zip(fired.iter_mut()) {
                    // Twilio evaluates about once a minute: the call arrives a minute later.
                    if !*fired && spend(i, n, minute - 1) >= MONTHLY * f64::from(*t) / 100.0 {
                        *fired = true;
                        tally.callbacks += 1;
                        called_back = Some(now);
                    }
                }
            }
            let rate = status.as_ref().and_then(|s| s.rate_per_hour.as_deref());
            let due = next_usage_read(&known, Some(&(spec.clone(), monthly)), rate, triggered);
            let callback = budget::reads::asked_read_at(
                &known,
                called_back,
                last_forced,
                budget::reads::CALLBACK_SPACING,
            );
            if !budget::reads::read_due(Some(&known), Some(due), callback, now) {
                continue;
            }
            if callback.is_some_and(|c| now >= c) {
                tally.callback_reads += 1;
                last_forced = Some(now);
            }
            known = read(minute);
            tally.reads += 1;
            let judged =
                budget::judge(&spec, monthly, &known, status.as_ref(), SubaccountState::Active).unwrap();
            if judged.suspend {
                suspended = true;
                tally.suspensions += 1;
                tally.unnoticed.push(minute - crossed_at.unwrap_or(minute));
            }
            status = Some(judged.status);
        }
        // The month rolls over: one read just after it starts, and one reactivation.
        tally.reads += 1;
    }
    tally
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = std::env::var("BENCH_SUBACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100 } else { 10 });
    println!("budget: {n} budgeted subaccounts over 30 days (warnAt [50, 80], action Suspend)");
    for (label, triggered) in [("polling only", false), ("with usage triggers", true)] {
        let t = simulate(n, triggered);
        let mut unnoticed = t.unnoticed.clone();
        unnoticed.sort_unstable();
        let worst = unnoticed.last().copied().unwrap_or(0);
        let median = unnoticed.get(unnoticed.len() / 2).copied().unwrap_or(0);
        let reactivations = t.suspensions;
        let calls = t.reads + t.suspensions + reactivations + t.trigger_lists + t.trigger_creates;
        println!(
            "  {label}: {calls} Twilio calls ({:.1} per subaccount per day): {} usage reads ({} asked for by callbacks), {} suspensions, {reactivations} reactivations, {} trigger lists, {} trigger creates; {} callbacks received; a crossed limit unnoticed for {median} min (median), {worst} min (worst)",
            calls as f64 / n as f64 / 30.0,
            t.reads,
            t.callback_reads,
            t.suspensions,
            t.trigger_lists,
            t.trigger_creates,
            t.callbacks,
        );
    }
}
