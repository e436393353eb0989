//! What a TwilioSubaccount needs, decided from what was observed. Pure.
//!
//! Contract: the functions here turn spec, status and what Twilio reported into the next step:
//! which status to ask Twilio for (never reopening a closed account), whether usage is stale,
//! and where the auth token rotation stands (publish, start, promote, or wait until when).

use crate::api::subaccount::{AuthTokenStatus, SubaccountState, SubaccountUsage};
use crate::apikey::schedule;
use crate::twilio::types::AccountStatus;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// Usage is read from Twilio at most this often.
pub const USAGE_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// What to do about the account's status at Twilio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateStep {
    Keep,
    Set(AccountStatus),
    /// Closed at Twilio: irreversible, so nothing is asked for.
    Closed,
}

pub fn state_step(desired: SubaccountState, observed: AccountStatus) -> StateStep {
    let wanted = match desired {
        SubaccountState::Active => AccountStatus::Active,
        SubaccountState::Suspended => AccountStatus::Suspended,
    };
    match observed {
        AccountStatus::Closed => StateStep::Closed,
        s if s == wanted => StateStep::Keep,
        _ => StateStep::Set(wanted),
    }
}

pub fn usage_due(usage: Option<&SubaccountUsage>, now: Timestamp) -> bool {
    usage.is_none_or(|u| {
        now.duration_since(u.observed_at.0)
            >= k8s_openapi::jiff::SignedDuration::try_from(USAGE_MAX_AGE).expect("fits")
    })
}

/// The next step of the secondary-token rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStep {
    /// Create a secondary token and publish it.
    Start,
    /// The grace period is over: promote the published secondary.
    Promote,
    /// Nothing to do before this moment.
    WaitUntil(Timestamp),
}

pub fn token_step(record: &AuthTokenStatus, every: Duration, grace: Duration, now: Timestamp) -> TokenStep {
    match &record.secondary_published_at {
        Some(published) => {
            let due = schedule::after(published.0, grace);
            if now >= due {
                TokenStep::Promote
            } else {
                TokenStep::WaitUntil(due)
            }
        }
        None => {
            let due = schedule::after(record.rotated_at.0, every);
            if now >= due {
                TokenStep::Start
            } else {
                TokenStep::WaitUntil(due)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn closed_is_never_reopened() {
        assert_eq!(
            state_step(SubaccountState::Active, AccountStatus::Closed),
            StateStep::Closed
        );
        assert_eq!(
            state_step(SubaccountState::Active, AccountStatus::Suspended),
            StateStep::Set(AccountStatus::Active)
        );
        assert_eq!(
            state_step(SubaccountState::Suspended, AccountStatus::Active),
            StateStep::Set(AccountStatus::Suspended)
        );
        assert_eq!(
            state_step(SubaccountState::Suspended, AccountStatus::Suspended),
            StateStep::Keep
        );
    }

    #[test]
    fn usage_is_read_at_most_every_15_minutes() {
        let usage = SubaccountUsage {
            month_to_date: "1".into(),
            currency: "usd".into(),
            observed_at: Time(at("2026-01-01T00:00:00Z")),
        };
        assert!(!usage_due(Some(&usage), at("2026-01-01T00:14:59Z")));
        assert!(usage_due(Some(&usage), at("2026-01-01T00:15:00Z")));
        assert!(usage_due(None, at("2026-01-01T00:00:00Z")));
    }

    #[test]
    fn token_rotation_walks_start_wait_promote() {
        let day = Duration::from_secs(86_400);
        let hour = Duration::from_secs(3600);
        let idle = AuthTokenStatus {
            rotated_at: Time(at("2026-01-01T00:00:00Z")),
            secondary_published_at: None,
            next_rotation_at: None,
        };
        assert_eq!(
            token_step(&idle, day, hour, at("2026-01-01T12:00:00Z")),
            TokenStep::WaitUntil(at("2026-01-02T00:00:00Z"))
        );
        assert_eq!(
            token_step(&idle, day, hour, at("2026-01-02T00:00:00Z")),
            TokenStep::Start
        );
        let pending = AuthTokenStatus {
            secondary_published_at: Some(Time(at("2026-01-02T00:00:00Z"))),
            ..idle
        };
        assert_eq!(
            token_step(&pending, day, hour, at("2026-01-02T00:30:00Z")),
            TokenStep::WaitUntil(at("2026-01-02T01:00:00Z"))
        );
        assert_eq!(
            token_step(&pending, day, hour, at("2026-01-02T01:00:00Z")),
            TokenStep::Promote
        );
    }
}
