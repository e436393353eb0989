//! The `Ready` condition and its reasons, kept the Kubernetes way.
//!
//! Contract: [`ready`] returns the conditions list with `Ready` set; `lastTransitionTime` moves
//! only when the status value changes, so a condition that keeps failing does not churn.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Why an object is or is not Ready; the string is the condition reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Ready,
    Pending,
    CredentialsMissing,
    AuthenticationFailed,
    RateLimited,
    SubaccountNotReady,
    SubaccountSuspended,
    SubaccountClosed,
    SecretConflict,
    TwilioError,
    Revoking,
    NotFound,
    NotASubaccount,
    LimitReached,
    CredentialsNotParent,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ready => "Ready",
            Reason::Pending => "Pending",
            Reason::CredentialsMissing => "CredentialsMissing",
            Reason::AuthenticationFailed => "AuthenticationFailed",
            Reason::RateLimited => "RateLimited",
            Reason::SubaccountNotReady => "SubaccountNotReady",
            Reason::SubaccountSuspended => "SubaccountSuspended",
            Reason::SubaccountClosed => "SubaccountClosed",
            Reason::SecretConflict => "SecretConflict",
            Reason::TwilioError => "TwilioError",
            Reason::Revoking => "Revoking",
            Reason::NotFound => "NotFound",
            Reason::NotASubaccount => "NotASubaccount",
            Reason::LimitReached => "LimitReached",
            Reason::CredentialsNotParent => "CredentialsNotParent",
        }
    }
}

/// `conditions` with the Ready condition replaced.
pub fn ready(
    conditions: &[Condition],
    reason: Reason,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let status = if reason == Reason::Ready { "True" } else { "False" };
    let previous = conditions.iter().find(|c| c.type_ == "Ready");
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != "Ready")
        .cloned()
        .collect();
    out.push(Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.as_str().into(),
        message: message.into(),
        last_transition_time,
        observed_generation: generation,
    });
    out
}

/// Whether the object's Ready condition is True.
pub fn is_ready(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let failing = ready(&[], Reason::RateLimited, "slow down", Some(1), t0);
        let still = ready(&failing, Reason::TwilioError, "other", Some(1), t1);
        assert_eq!(still[0].last_transition_time, Time(t0));
        assert_eq!(still[0].reason, "TwilioError");
        let fine = ready(&still, Reason::Ready, "ok", Some(2), t1);
        assert_eq!(
            (fine[0].status.as_str(), fine[0].last_transition_time.clone()),
            ("True", Time(t1))
        );
        assert!(is_ready(&fine) && !is_ready(&still));
    }
}
