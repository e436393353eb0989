//! What a TwilioApiKey needs, decided from what was observed. Pure: no I/O, no clock.
//!
//! Contract: given the status (the operator's record), the Secret as found, the rotate
//! annotation, the schedule and (when read) the account's keys at Twilio, these functions say
//! which key the Secret really carries, which keys to revoke, which to sweep as crash leftovers,
//! and whether and why to issue a new key. A restarted operator computes the same answers from
//! the same facts, so a restart alone never rotates anything.

use super::schedule;
use crate::api::apikey::{RetiringKey, TwilioApiKeyStatus};
use crate::secret::Observed;
use crate::tagging;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// The keys of one account at Twilio, as read at `read_at`.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub read_at: Timestamp,
    /// `(sid, friendly_name)` of every key.
    pub keys: Vec<(String, Option<String>)>,
}

impl Inventory {
    pub fn contains(&self, sid: &str) -> bool {
        self.keys.iter().any(|(s, _)| s == sid)
    }
}

/// Why a new key is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// No key yet.
    Initial,
    /// The Secret was deleted: its key's secret is gone for good.
    SecretLost,
    /// The Secret's data no longer matches what was written.
    SecretEdited,
    /// The key was revoked outside Kubernetes.
    RevokedOutside,
    /// A new value of the rotate annotation.
    Requested,
    /// `rotation.every` has passed.
    Scheduled,
}

impl Cause {
    /// Whether the current key keeps working for the grace period (it does unless Twilio
    /// already revoked it).
    pub fn retires_current(self) -> bool {
        !matches!(self, Cause::Initial | Cause::RevokedOutside)
    }

    /// The cause as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Initial => "Initial",
            Cause::SecretLost => "SecretLost",
            Cause::SecretEdited => "SecretEdited",
            Cause::RevokedOutside => "RevokedOutside",
            Cause::Requested => "Requested",
            Cause::Scheduled => "Scheduled",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Cause::Initial => "created",
            Cause::SecretLost => "reissued because its Secret was deleted",
            Cause::SecretEdited => "reissued because its Secret's data was changed",
            Cause::RevokedOutside => "reissued because the key was revoked outside Kubernetes",
            Cause::Requested => "rotated on request",
            Cause::Scheduled => "rotated on schedule",
        }
    }
}

/// When the Secret carries a key the status does not record (the operator stopped between
/// writing the Secret and writing the status, or read a status older than its last write), the
/// status that records it, with the rotation request it answered. The key it replaced retires
/// as a rotation would retire it.
pub fn adopt_from_secret(
    status: &TwilioApiKeyStatus,
    secret: &Observed,
    grace: Duration,
    now: Timestamp,
) -> Option<TwilioApiKeyStatus> {
    let Observed::Ours(record) = secret else {
        return None;
    };
    let carried = record
        .credential_sid
        .as_ref()
        .filter(|sid| record.intact && status.key_sid.as_ref() != Some(*sid))?;
    let mut adopted = status.clone();
    let created = record.created_at.unwrap_or(now);
    if let Some(previous) = status.key_sid.clone() {
        adopted.retiring_keys.push(RetiringKey {
            sid: previous,
            revoke_at: Time(schedule::after(created, grace)),
        });
    }
    adopted.retiring_keys.retain(|r| &r.sid != carried);
    adopted.key_sid = Some(carried.clone());
    adopted.key_created_at = Some(Time(created));
    if record.request.is_some() {
        adopted.last_rotation_request = record.request.clone();
    }
    Some(adopted)
}

/// Whether the create that `status.pendingSince` announced reached the Secret. Each intent
/// covers exactly one create (the client repeats a create only when Twilio surely did not act),
/// so once its key is published nothing can have been left behind.
pub fn intent_fulfilled(status: &TwilioApiKeyStatus, secret: &Observed) -> bool {
    match (&status.pending_since, secret) {
        (Some(pending), Observed::Ours(record)) => {
            record.intact && record.created_at.is_some_and(|created| created >= pending.0)
        }
        _ => false,
    }
}

/// Retiring keys whose revokeAt has come.
pub fn due_revocations(status: &TwilioApiKeyStatus, now: Timestamp) -> Vec<String> {
    status
        .retiring_keys
        .iter()
        .filter(|r| r.revoke_at.0 <= now)
        .map(|r| r.sid.clone())
        .collect()
}

/// Keys at Twilio that carry this object's tag but that nothing records: left by a crash
/// between Twilio's create and the Secret write. Their secret is lost, so they can only go.
pub fn orphans(
    inventory: &Inventory,
    uid: &str,
    status: &TwilioApiKeyStatus,
    secret: &Observed,
) -> Vec<String> {
    let in_secret = match secret {
        Observed::Ours(record) => record.credential_sid.clone(),
        _ => None,
    };
    inventory
        .keys
        .iter()
        .filter(|(sid, name)| {
            tagging::is_tagged(name.as_deref(), uid)
                && status.key_sid.as_ref() != Some(sid)
                && in_secret.as_ref() != Some(sid)
                && !status.retiring_keys.iter().any(|r| &r.sid == sid)
        })
        .map(|(sid, _)| sid.clone())
        .collect()
}

/// Whether the current key was revoked outside Kubernetes: missing from a list read after it
/// was created (a list read before could simply predate it).
pub fn revoked_outside(status: &TwilioApiKeyStatus, inventory: Option<&Inventory>) -> bool {
    match (
        status.key_sid.as_deref(),
        status.key_created_at.as_ref(),
        inventory,
    ) {
        (Some(sid), Some(created), Some(inv)) => inv.read_at > created.0 && !inv.contains(sid),
        _ => false,
    }
}

/// Whether, and why, a new key is needed now. The first matching cause wins.
pub fn issue_cause(
    status: &TwilioApiKeyStatus,
    secret: &Observed,
    rotate_request: Option<&str>,
    revoked: bool,
    now: Timestamp,
) -> Option<Cause> {
    if status.key_sid.is_none() {
        return Some(Cause::Initial);
    }
    match secret {
        Observed::Missing => return Some(Cause::SecretLost),
        Observed::Ours(record) if !record.intact => return Some(Cause::SecretEdited),
        _ => {}
    }
    if revoked {
        return Some(Cause::RevokedOutside);
    }
    if rotate_request.is_some_and(|r| status.last_rotation_request.as_deref() != Some(r)) {
        return Some(Cause::Requested);
    }
    if status.next_rotation_at.as_ref().is_some_and(|t| t.0 <= now) {
        return Some(Cause::Scheduled);
    }
    None
}

/// The earliest moment the object needs attention again: a rotation or a revocation.
pub fn next_deadline(status: &TwilioApiKeyStatus) -> Option<Timestamp> {
    status
        .retiring_keys
        .iter()
        .map(|r| r.revoke_at.0)
        .chain(status.next_rotation_at.as_ref().map(|t| t.0))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Record;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T01:00:00Z";
    const T2: &str = "2026-01-01T02:00:00Z";

    fn live(sid: &str) -> TwilioApiKeyStatus {
        TwilioApiKeyStatus {
            key_sid: Some(sid.into()),
            key_created_at: Some(Time(at(T0))),
            ..Default::default()
        }
    }
    fn ours(sid: &str, intact: bool) -> Observed {
        Observed::Ours(Record {
            credential_sid: Some(sid.into()),
            created_at: Some(at(T1)),
            request: Some("r2".into()),
            digest: None,
            intact,
        })
    }

    #[test]
    fn causes_in_order() {
        let none = TwilioApiKeyStatus::default();
        assert_eq!(
            issue_cause(&none, &Observed::Missing, None, false, at(T0)),
            Some(Cause::Initial)
        );
        let st = live("SK1");
        assert_eq!(
            issue_cause(&st, &Observed::Missing, None, false, at(T1)),
            Some(Cause::SecretLost)
        );
        assert_eq!(
            issue_cause(&st, &ours("SK1", false), None, false, at(T1)),
            Some(Cause::SecretEdited)
        );
        assert_eq!(
            issue_cause(&st, &ours("SK1", true), None, true, at(T1)),
            Some(Cause::RevokedOutside)
        );
        assert_eq!(
            issue_cause(&st, &ours("SK1", true), Some("r1"), false, at(T1)),
            Some(Cause::Requested)
        );
        let acted = TwilioApiKeyStatus {
            last_rotation_request: Some("r1".into()),
            ..live("SK1")
        };
        assert_eq!(
            issue_cause(&acted, &ours("SK1", true), Some("r1"), false, at(T1)),
            None,
            "a request is acted on once"
        );
        let due = TwilioApiKeyStatus {
            next_rotation_at: Some(Time(at(T1))),
            ..live("SK1")
        };
        assert_eq!(issue_cause(&due, &ours("SK1", true), None, false, at(T0)), None);
        assert_eq!(
            issue_cause(&due, &ours("SK1", true), None, false, at(T1)),
            Some(Cause::Scheduled)
        );
        assert!(Cause::Scheduled.retires_current() && !Cause::RevokedOutside.retires_current());
    }

    #[test]
    fn a_secret_ahead_of_the_status_is_adopted_and_the_old_key_retires() {
        let adopted = adopt_from_secret(
            &live("SK1"),
            &ours("SK2", true),
            Duration::from_secs(3600),
            at(T2),
        )
        .unwrap();
        assert_eq!(adopted.key_sid.as_deref(), Some("SK2"));
        assert_eq!(adopted.key_created_at, Some(Time(at(T1))));
        assert_eq!(
            adopted.retiring_keys,
            vec![RetiringKey {
                sid: "SK1".into(),
                revoke_at: Time(at(T2))
            }]
        );
        assert_eq!(
            adopted.last_rotation_request.as_deref(),
            Some("r2"),
            "the request is not answered twice"
        );
        assert!(adopt_from_secret(&live("SK2"), &ours("SK2", true), Duration::ZERO, at(T2)).is_none());
        assert!(
            adopt_from_secret(&live("SK1"), &ours("SK2", false), Duration::ZERO, at(T2)).is_none(),
            "an edited Secret is not a record"
        );
        let first = adopt_from_secret(
            &TwilioApiKeyStatus::default(),
            &ours("SK2", true),
            Duration::ZERO,
            at(T2),
        )
        .unwrap();
        assert!(first.retiring_keys.is_empty());
    }

    #[test]
    fn orphans_are_tagged_and_unrecorded() {
        let uid = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
        let tagged = |sid: &str| (sid.to_owned(), Some(tagging::tagged_name("x", uid)));
        let inventory = Inventory {
            read_at: at(T2),
            keys: vec![
                tagged("SK1"),
                tagged("SK2"),
                tagged("SK3"),
                tagged("SK4"),
                ("SK5".into(), Some("someone else's".into())),
            ],
        };
        let mut st = live("SK1");
        st.retiring_keys.push(RetiringKey {
            sid: "SK2".into(),
            revoke_at: Time(at(T2)),
        });
        assert_eq!(
            orphans(&inventory, uid, &st, &ours("SK3", true)),
            vec!["SK4".to_owned()]
        );
    }

    #[test]
    fn revocation_outside_needs_a_fresh_list() {
        let st = live("SK1");
        let stale = Inventory {
            read_at: at("2025-12-31T23:00:00Z"),
            keys: vec![],
        };
        let fresh = Inventory {
            read_at: at(T1),
            keys: vec![],
        };
        assert!(!revoked_outside(&st, Some(&stale)), "the list predates the key");
        assert!(revoked_outside(&st, Some(&fresh)));
        assert!(!revoked_outside(
            &st,
            Some(&Inventory {
                read_at: at(T1),
                keys: vec![("SK1".into(), None)]
            })
        ));
        assert!(!revoked_outside(&st, None));
    }

    #[test]
    fn an_intent_is_fulfilled_by_a_key_published_after_it() {
        let pending = |at_: &str| TwilioApiKeyStatus {
            pending_since: Some(Time(at(at_))),
            ..live("SK1")
        };
        assert!(
            intent_fulfilled(&pending(T1), &ours("SK2", true)),
            "published at the intent's moment"
        );
        assert!(
            !intent_fulfilled(&pending(T2), &ours("SK2", true)),
            "the Secret predates the intent"
        );
        assert!(!intent_fulfilled(&pending(T1), &ours("SK2", false)));
        assert!(!intent_fulfilled(&pending(T1), &Observed::Missing));
        assert!(!intent_fulfilled(&live("SK1"), &ours("SK1", true)), "no intent");
    }

    #[test]
    fn deadlines_and_due_revocations() {
        let mut st = live("SK1");
        st.next_rotation_at = Some(Time(at(T2)));
        st.retiring_keys.push(RetiringKey {
            sid: "SK0".into(),
            revoke_at: Time(at(T1)),
        });
        assert_eq!(next_deadline(&st), Some(at(T1)));
        assert!(due_revocations(&st, at(T0)).is_empty());
        assert_eq!(due_revocations(&st, at(T1)), vec!["SK0".to_owned()]);
    }
}
