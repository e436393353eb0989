//! The condition vocabulary: the `Ready` condition and its reasons, and the [`Problem`] that says
//! why an object is not Ready, with a hint a person can act on and never a secret.
//! `lastTransitionTime` moves only when a condition's status changes, so a condition that keeps
//! failing does not churn; [`LifecycleStatus`] is what the shared lifecycle steps may touch in
//! either kind's status.

use crate::api::duration;
use crate::api::{TwilioApiKeyStatus, TwilioSubaccountStatus};
use crate::twilio::{Error as TwilioError, ErrorClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use std::time::Duration;

/// Why an object is or is not Ready; the string is the condition reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Everything the spec asks for exists and is published.
    Ready,
    /// The TwilioAccount does not allow what the object asks (namespace, key type, permission,
    /// subaccount create, adoption, deletionPolicy).
    NotPermitted,
    /// Another object already manages the subaccount SID this one names.
    SidInUse,
    /// A first create was asked of Twilio and has not been recorded yet.
    Pending,
    /// The Secret template cannot be rendered (syntax, unknown variable or filter, a bad data
    /// key, too large); the message names the template key and position.
    TemplateInvalid,
    /// A spec field the schema admitted cannot be used (an object stored before a schema change).
    InvalidSpec,
    /// No usable credentials: the Secret is missing or malformed, or the operator has none.
    CredentialsMissing,
    /// Twilio refused the credentials (20003).
    AuthenticationFailed,
    /// Kubernetes refused a write the operator needs (a 400, 403 or 422): a policy, RBAC or an
    /// invalid object; the message carries Kubernetes' words.
    KubernetesError,
    /// Twilio asked us to slow down (429/20429).
    RateLimited,
    /// The referenced TwilioSubaccount is not Ready yet.
    SubaccountNotReady,
    /// The referenced subaccount is suspended at Twilio.
    SubaccountSuspended,
    /// The subaccount is closed at Twilio, which cannot be undone.
    SubaccountClosed,
    /// The Secret name is taken by a Secret this object does not own.
    SecretConflict,
    /// Any other Twilio error; the code is in the message.
    TwilioError,
    /// Keys are being revoked before the object goes.
    Revoking,
    /// What the object names does not exist at Twilio.
    NotFound,
    /// `spec.sid` names an account that is not a subaccount of the credentials' account.
    NotASubaccount,
    /// The parent account has as many subaccounts as Twilio allows (21480).
    LimitReached,
    /// Subaccount credentials were given where a parent's are needed (21101).
    CredentialsNotParent,
    /// A per-tenant bound: the TwilioAccount's maxPerNamespace, or a key's live keys.
    QuotaExceeded,
}

/// What kstatus (Flux, kpt, cli-utils) reads of a reason that is not Ready: `Reconciling` while
/// the operator is getting there by itself, `Stalled` while it needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The object is on its way: a wait, or a failure retried with backoff.
    Reconciling,
    /// The object cannot get there until somebody changes something.
    Stalled,
}

impl Reason {
    /// How kstatus should read this reason; `None` for Ready.
    pub fn progress(self) -> Option<Progress> {
        use Reason::*;
        match self {
            Ready => None,
            Pending | SubaccountNotReady | Revoking | RateLimited | TwilioError => {
                Some(Progress::Reconciling)
            }
            NotPermitted | SidInUse | TemplateInvalid | InvalidSpec | CredentialsMissing
            | AuthenticationFailed | KubernetesError | SubaccountSuspended | SubaccountClosed
            | SecretConflict | NotFound | NotASubaccount | LimitReached | CredentialsNotParent
            | QuotaExceeded => Some(Progress::Stalled),
        }
    }

    /// Whether the reason is a normal wait that ends by itself (a create in flight, a subaccount
    /// still being made, keys being revoked), told as a Normal event rather than a Warning.
    pub fn is_wait(self) -> bool {
        matches!(
            self,
            Reason::Pending | Reason::SubaccountNotReady | Reason::Revoking
        )
    }

    /// The reason as the condition spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ready => "Ready",
            Reason::NotPermitted => "NotPermitted",
            Reason::SidInUse => "SidInUse",
            Reason::Pending => "Pending",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::TemplateInvalid => "TemplateInvalid",
            Reason::CredentialsMissing => "CredentialsMissing",
            Reason::AuthenticationFailed => "AuthenticationFailed",
            Reason::KubernetesError => "KubernetesError",
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
            Reason::QuotaExceeded => "QuotaExceeded",
        }
    }
}

/// A reason the object cannot make progress, reported in its Ready condition.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The condition reason.
    pub reason: Reason,
    /// What went wrong and what to do about it, for a person.
    pub message: String,
    /// When the problem is known to end (a wait for a deadline), so the next pass comes then
    /// instead of after a growing backoff.
    pub until: Option<Timestamp>,
}

impl Problem {
    /// A problem with `reason` and `message`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            until: None,
        }
    }

    /// This problem, known to end at `until`.
    pub fn until(self, until: Timestamp) -> Self {
        Self {
            until: Some(until),
            ..self
        }
    }

    /// How kstatus reads the problem: a wait with a known end is on its way whatever its reason.
    pub fn progress(&self) -> Progress {
        match (self.until, self.reason.progress()) {
            (Some(_), _) => Progress::Reconciling,
            (None, progress) => progress.unwrap_or(Progress::Reconciling),
        }
    }

    /// The Secret name is taken by a Secret this `kind` object does not own.
    pub fn secret_conflict(secret: &str, kind: &str) -> Self {
        Problem::new(
            Reason::SecretConflict,
            format!(
                "Secret {secret} exists and is not owned by this {kind}; the operator will not overwrite it. Delete it or set spec.secret.name to another name"
            ),
        )
    }
}

impl From<TwilioError> for Problem {
    fn from(e: TwilioError) -> Self {
        let reason = match (e.class(), e.code()) {
            (ErrorClass::Credentials, _) => Reason::AuthenticationFailed,
            (ErrorClass::RateLimited, _) => Reason::RateLimited,
            (_, Some(21479)) => Reason::SubaccountClosed,
            (_, Some(21101)) => Reason::CredentialsNotParent,
            (_, Some(21480)) => Reason::LimitReached,
            _ => Reason::TwilioError,
        };
        let hint = match reason {
            Reason::AuthenticationFailed => {
                " Check the credentials this object acts with: the Secret named in spec.credentialsRef, or else its TwilioAccount's spec.credentials. They must hold an account SID with its auth token, or a Main API key."
            }
            Reason::RateLimited => " The operator backs off and tries again.",
            Reason::SubaccountClosed => " A closed subaccount cannot be reopened; delete this object.",
            Reason::CredentialsNotParent => {
                " The credentials belong to a subaccount, and subaccounts cannot have subaccounts: use the parent (main) account's credentials."
            }
            Reason::LimitReached => {
                " The parent account has as many subaccounts as Twilio allows (1000 by default): close unused ones, or ask Twilio support to raise the limit."
            }
            _ => "",
        };
        Problem::new(reason, format!("{e}.{hint}"))
    }
}

impl Problem {
    /// The problem a Kubernetes refusal the operator cannot fix by retrying alone is: a 400, 403
    /// or 422 (RBAC, an admission policy, an invalid object). `None` for other errors, which are
    /// retried as they are.
    pub fn from_kube(e: &kube::Error) -> Option<Self> {
        match e {
            kube::Error::Api(status) if matches!(status.code, 400 | 403 | 422) => Some(Problem::new(
                Reason::KubernetesError,
                format!(
                    "Kubernetes refused a write ({} {}): {}",
                    status.code, status.reason, status.message
                ),
            )),
            _ => None,
        }
    }
}

/// The duration in spec field `field` (a path such as `spec.rotation.every`); a string the
/// operator cannot read is an `InvalidSpec` problem naming the field.
pub fn duration_field(field: &str, text: &str) -> Result<Duration, Problem> {
    duration::parse(text).map_err(|e| Problem::new(Reason::InvalidSpec, format!("{field}: {e}")))
}

/// The parts of a kind's status that the shared lifecycle steps write.
pub trait LifecycleStatus: Serialize {
    /// The status conditions.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    /// The generation the last pass judged, successfully or not.
    fn observed_generation_mut(&mut self) -> &mut Option<i64>;
    /// The generation the last successful pass applied.
    fn applied_generation_mut(&mut self) -> &mut Option<i64>;
    /// The generation applied in full, read from status written before or after that was
    /// recorded apart from the generation judged.
    fn applied(&self) -> Option<i64>;
    /// When a create was last asked of Twilio and not yet recorded.
    fn pending_since_mut(&mut self) -> &mut Option<Time>;
}

macro_rules! lifecycle_status {
    ($($status:ty),+) => {$(
        impl LifecycleStatus for $status {
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn observed_generation_mut(&mut self) -> &mut Option<i64> {
                &mut self.observed_generation
            }
            fn applied_generation_mut(&mut self) -> &mut Option<i64> {
                &mut self.applied_generation
            }
            fn applied(&self) -> Option<i64> {
                self.applied_generation.or(self.observed_generation)
            }
            fn pending_since_mut(&mut self) -> &mut Option<Time> {
                &mut self.pending_since
            }
        }
    )+};
}
lifecycle_status!(TwilioApiKeyStatus, TwilioSubaccountStatus);

/// `conditions` with Ready True, and kstatus' `Reconciling` and `Stalled` gone.
pub fn ready(
    conditions: &[Condition],
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    judged(conditions, Reason::Ready, message.into(), None, generation, now)
}

/// `conditions` with Ready False for `problem`, beside the kstatus condition that says whether
/// the operator is still on its way (`Reconciling`) or needs a person (`Stalled`).
pub fn not_ready(
    conditions: &[Condition],
    problem: &Problem,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let message = problem.message.clone();
    judged(
        conditions,
        problem.reason,
        message,
        Some(problem.progress()),
        generation,
        now,
    )
}

fn judged(
    conditions: &[Condition],
    reason: Reason,
    message: String,
    progress: Option<Progress>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let status = if progress.is_none() { "True" } else { "False" };
    let mut out = conditions.to_vec();
    set(
        &mut out,
        "Ready",
        status,
        reason.as_str(),
        message.clone(),
        generation,
        now,
    );
    // kstatus' abnormal-true conditions: present, and True, only while they apply.
    for (type_, kind) in [
        ("Reconciling", Progress::Reconciling),
        ("Stalled", Progress::Stalled),
    ] {
        if progress == Some(kind) {
            set(
                &mut out,
                type_,
                "True",
                reason.as_str(),
                message.clone(),
                generation,
                now,
            );
        } else {
            out.retain(|c| c.type_ != type_);
        }
    }
    out
}

/// Sets condition `type_` in `conditions`; its `lastTransitionTime` moves only when `status`
/// changes.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let last_transition_time = match conditions.iter().find(|c| c.type_ == type_) {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    };
    // In place, so conditions keep their order (Ready first, as it was set first).
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
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
        let problem = |reason, message| Problem::new(reason, message);
        let failing = not_ready(&[], &problem(Reason::RateLimited, "slow down"), Some(1), t0);
        let still = not_ready(&failing, &problem(Reason::TwilioError, "other"), Some(1), t1);
        assert_eq!(still[0].last_transition_time, Time(t0));
        assert_eq!(still[0].reason, "TwilioError");
        let fine = ready(&still, "ok", Some(2), t1);
        assert_eq!(
            (fine[0].status.as_str(), fine[0].last_transition_time.clone()),
            ("True", Time(t1))
        );
        assert!(is_ready(&fine) && !is_ready(&still));
    }

    #[test]
    fn a_malformed_duration_names_its_field() {
        let problem = duration_field("spec.rotation.every", "1d").unwrap_err();
        assert_eq!(problem.reason, Reason::InvalidSpec);
        assert!(
            problem.message.starts_with("spec.rotation.every: "),
            "{}",
            problem.message
        );
        assert_eq!(
            duration_field("spec.rotation.every", "90m").unwrap(),
            Duration::from_secs(5400)
        );
    }

    #[test]
    fn kstatus_reads_reconciling_while_on_the_way_and_stalled_while_a_person_is_needed() {
        let now = Timestamp::UNIX_EPOCH;
        let kinds = |c: &[Condition]| -> Vec<(String, String)> {
            c.iter().map(|c| (c.type_.clone(), c.status.clone())).collect()
        };
        let pending = not_ready(&[], &Problem::new(Reason::Pending, "creating"), Some(1), now);
        assert_eq!(
            kinds(&pending),
            [
                ("Ready".into(), "False".into()),
                ("Reconciling".into(), "True".into())
            ]
        );
        let refused = not_ready(&pending, &Problem::new(Reason::NotPermitted, "no"), Some(2), now);
        assert_eq!(
            kinds(&refused),
            [
                ("Ready".into(), "False".into()),
                ("Stalled".into(), "True".into())
            ]
        );
        let done = ready(&refused, "yes", Some(2), now);
        assert_eq!(kinds(&done), [("Ready".into(), "True".into())]);
        // A bound that lifts by itself at a known time is a wait, not a dead end.
        let waiting = Problem::new(Reason::QuotaExceeded, "three live keys").until(now);
        assert_eq!(waiting.progress(), Progress::Reconciling);
        assert_eq!(
            Problem::new(Reason::QuotaExceeded, "no").progress(),
            Progress::Stalled
        );
    }
}
