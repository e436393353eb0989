//! What a TwilioApiKey needs, decided from what was observed. Pure: no I/O, no clock. [`settings`]
//! validates the spec; [`plan`] turns the status, the Secret, the account's keys and the time into
//! a [`Plan`]: the record brought up to date with what the Secret proves (adoption after a crash),
//! the retiring keys due, the tagged keys nobody records (swept), and whether to issue, update or
//! do nothing; [`issued`] is the record after a new key reached the Secret. A restarted operator
//! computes the same plan from the same facts, so a restart alone never rotates anything.

use crate::api::apikey::{RetiringKey, SecretKeys, TwilioApiKey, TwilioApiKeyStatus, WindowStatus};
use crate::api::schedule;
use crate::conditions::{LifecycleStatus, Problem, duration_field};
use crate::secret::{Expect, Observed, Record, Shape};
use crate::template::{self, PLACEHOLDER_CREATED_AT, Template, Variables};
use crate::twilio::Inventory;
use crate::{fingerprint, tagging};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

/// A new value of this annotation rotates the key once.
pub const ROTATE_ANNOTATION: &str = "twilio.operator.dev/rotate";
/// How long a replaced key stays valid when the spec names no rotation.
const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// The spec, validated, with its defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The object's UID, which the Twilio tag is derived from.
    pub uid: String,
    /// The object's namespace, where its Secret lives.
    pub namespace: String,
    /// The Secret the credentials are published in.
    pub secret_name: String,
    /// The Secret's data keys.
    pub keys: SecretKeys,
    /// How long a replaced key stays valid.
    pub grace: Duration,
    /// How often the key rotates, if it does.
    pub every: Option<Duration>,
    /// When scheduled rotations may happen, if the spec limits them.
    pub window: Option<schedule::Window>,
    /// Why spec.rotation.window cannot be used, if it cannot: scheduled rotations stop, and the
    /// pass reports it once everything else is done.
    pub window_error: Option<String>,
    /// A digest of spec.restartWorkloads, to roll again when the list changes.
    pub workloads_digest: String,
    /// The key's friendly name at Twilio, before the tag.
    pub display_name: String,
    /// The value of the rotate annotation, if set.
    pub rotate_request: Option<String>,
    /// The object's generation.
    pub generation: Option<i64>,
    /// The object's name, a template variable.
    pub name: String,
    /// The Secret's type.
    pub secret_type: String,
    /// The Secret's template, checked, if it has one.
    pub template: Option<Template>,
}

/// What a key's values look like while a template is checked: as long as the real ones.
const PLACEHOLDER_ACCOUNT: &str = "AC00000000000000000000000000000000";
const PLACEHOLDER_KEY: &str = "SK00000000000000000000000000000000";
const PLACEHOLDER_SECRET: &str = "00000000000000000000000000000000";

/// Validates `key`'s spec.
pub fn settings(key: &TwilioApiKey) -> Result<Settings, Problem> {
    let rotation = key.spec.rotation.as_ref();
    let grace = rotation
        .map(|r| duration_field("spec.rotation.gracePeriod", &r.grace_period))
        .transpose()?;
    let every = rotation
        .map(|r| duration_field("spec.rotation.every", &r.every))
        .transpose()?;
    // A window admission could not fully check must not hold up revocations and repairs.
    let window = rotation.and_then(|r| r.window.as_ref()).map(|w| {
        let length = duration_field("spec.rotation.window.duration", &w.duration).map_err(|p| p.message)?;
        schedule::Window::new(&w.schedule, &w.time_zone, length)
            .map_err(|e| format!("spec.rotation.window.{e}; no scheduled rotation happens until it is fixed"))
    });
    let (window, window_error) = match window {
        Some(Ok(window)) => (Some(window), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let secret = key.spec.secret.as_deref().cloned().unwrap_or_default();
    let namespace = key.namespace().unwrap_or_default();
    let mut settings = Settings {
        uid: key.uid().unwrap_or_default(),
        display_name: tagging::display_name(key.spec.friendly_name.as_deref(), &namespace, &key.name_any()),
        namespace,
        secret_name: secret.name.unwrap_or_else(|| key.name_any()),
        keys: secret.keys.unwrap_or_default(),
        grace: grace.unwrap_or(DEFAULT_GRACE),
        every,
        window,
        window_error,
        workloads_digest: fingerprint::digest(
            &serde_json::to_string(&key.spec.restart_workloads).unwrap_or_default(),
        ),
        rotate_request: key.annotations().get(ROTATE_ANNOTATION).cloned(),
        generation: key.metadata.generation,
        name: key.name_any(),
        secret_type: secret.form.type_.clone(),
        template: None,
    };
    // Checked with placeholders before anything is asked of Twilio.
    if let Some(spec) = &secret.form.template {
        let checked = Template::compile(
            spec,
            &settings.variables(
                PLACEHOLDER_ACCOUNT,
                PLACEHOLDER_KEY,
                PLACEHOLDER_SECRET,
                PLACEHOLDER_CREATED_AT,
            ),
            &settings.defaults(PLACEHOLDER_ACCOUNT, PLACEHOLDER_KEY, PLACEHOLDER_SECRET),
        )?;
        settings.template = Some(checked);
    }
    Ok(settings)
}

impl Settings {
    /// The variables a template sees for a key.
    pub fn variables<'a>(
        &'a self,
        account: &'a str,
        sid: &'a str,
        secret: &'a str,
        created_at: &'a str,
    ) -> Variables<'a> {
        Variables::new(vec![
            ("accountSid", account),
            ("apiKey", sid),
            ("keySid", sid),
            ("apiSecret", secret),
            ("friendlyName", &self.display_name),
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("createdAt", created_at),
        ])
    }

    /// The data without a template: the three keys.
    pub fn defaults<'a>(
        &'a self,
        account: &'a str,
        sid: &'a str,
        secret: &'a str,
    ) -> [(&'a str, &'a str); 3] {
        [
            (self.keys.account_sid.as_str(), account),
            (self.keys.api_key.as_str(), sid),
            (self.keys.api_secret.as_str(), secret),
        ]
    }

    /// The Secret's data for a key, rendered if templated.
    pub fn data(
        &self,
        account: &str,
        sid: &str,
        secret: &str,
        created_at: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, template::Invalid> {
        template::data(
            self.template.as_ref(),
            &self.variables(account, sid, secret, created_at),
            &self.defaults(account, sid, secret),
        )
    }

    /// What the Secret must hold to count as intact, given what each default key must hold.
    pub fn shape<'a>(&'a self, expected: &'a [(&'a str, Expect<'a>)]) -> Shape<'a> {
        Shape::of(self.template.as_ref(), expected)
    }

    /// What each data key of the Secret must hold for it to count as intact.
    pub fn expected_data<'a>(&'a self, account: &'a str) -> [(&'a str, Expect<'a>); 3] {
        [
            (self.keys.account_sid.as_str(), Expect::Equals(account)),
            (self.keys.api_key.as_str(), Expect::CredentialSid),
            (self.keys.api_secret.as_str(), Expect::Secret),
        ]
    }

    /// When a key created at `created` rotates, if the spec rotates it at all, and the window
    /// that rotation happens in, if the spec has one: a window missed entirely (the operator was
    /// down) gives way to the next one after `now`, never to a rotation outside any.
    pub fn next_rotation(
        &self,
        created: Option<&Time>,
        now: Timestamp,
    ) -> (Option<Time>, Option<WindowStatus>) {
        let due = created
            .zip(self.every)
            .map(|(c, every)| schedule::next_rotation(c.0, every, &self.uid));
        let Some(due) = due.filter(|_| self.window_error.is_none()) else {
            return (None, None);
        };
        let placed = self.window.as_ref().and_then(|w| {
            schedule::in_window(due, w, &self.uid)
                .filter(|(_, (_, closes))| *closes > now)
                .or_else(|| schedule::in_window(now, w, &self.uid))
        });
        match placed {
            Some((at, (opens, closes))) => (
                Some(Time(at)),
                Some(WindowStatus {
                    opens_at: Time(opens),
                    closes_at: Time(closes),
                }),
            ),
            None => (Some(Time(due)), None),
        }
    }
}

/// What was read for one pass, from Kubernetes and Twilio.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The account the key lives in.
    pub account_sid: String,
    /// The Secret as found.
    pub secret: Observed,
    /// The account's keys at Twilio.
    pub inventory: Arc<Inventory>,
    /// The current key was missing from the list, but fetching it found it: one list that
    /// misses a key is not proof that it was revoked.
    pub current_key_fetched: bool,
    /// The key the Secret names, which the status does not record and the list (older than it)
    /// does not show, was fetched and carries this object's tag.
    pub named_key_tagged: bool,
}

/// The key the Secret names that the status does not record: published by a pass whose status
/// write never landed (a crash, a failed write), or named by somebody else. Only Twilio can say
/// which.
pub fn unrecorded_named_key<'a>(status: &TwilioApiKeyStatus, secret: &'a Observed) -> Option<&'a str> {
    match secret {
        Observed::Ours(record) => record
            .credential_sid
            .as_deref()
            .filter(|sid| Some(*sid) != status.key_sid.as_deref()),
        _ => None,
    }
}

/// Whether the key list must be read afresh: a create was announced and its key has not
/// reached the Secret, so a key Twilio made may be missing from any older list.
pub fn needs_fresh_inventory(status: &TwilioApiKeyStatus, secret: &Observed) -> bool {
    status.pending_since.is_some() && !intent_fulfilled(status, secret)
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

    /// What happened, as an event says it.
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

/// What to do about the current key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the key is as the spec wants it.
    None,
    /// Issue a new key for this cause.
    Issue(Cause),
    /// The spec changed (friendlyName, permissions): update the key in place.
    Update,
    /// A reissue would make more than [`MAX_LIVE_KEYS`] live: it waits.
    Wait {
        /// Why the key would be reissued.
        cause: Cause,
        /// When the first retiring key is revoked, and the reissue may proceed.
        until: Timestamp,
    },
}

/// The most keys one TwilioApiKey has live at Twilio at any moment: the published one and two
/// retiring. Each deleted Secret would otherwise leave one more key behind for its grace period.
pub const MAX_LIVE_KEYS: usize = 3;

/// The steps of one pass, in the order they run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The record, brought up to date with what was observed.
    pub status: TwilioApiKeyStatus,
    /// Whether `status` now records the key the Secret carries instead of the one it recorded.
    pub adopted: bool,
    /// Retiring keys whose revokeAt has come.
    pub revoke: Vec<String>,
    /// Keys with this object's tag that nothing records: left by a crash, swept.
    pub sweep: Vec<String>,
    /// What to do about the current key.
    pub change: Change,
}

/// The plan for one pass. `applied_here` says this process already applied the object's
/// current generation at Twilio (its status may not show it yet).
pub fn plan(
    settings: &Settings,
    status: &TwilioApiKeyStatus,
    seen: &Observation,
    applied_here: bool,
    now: Timestamp,
) -> Plan {
    let mut st = status.clone();
    st.account_sid = Some(seen.account_sid.clone());
    let secret = &verified(seen, &settings.uid, st.key_sid.as_deref());
    // Judged on the record as read: adopting the Secret's key makes it a recorded one.
    let fulfilled = intent_fulfilled(&st, secret);
    let adopted = adopt_from_secret(&st, secret, settings.grace, now);
    let was_adopted = adopted.is_some();
    if let Some(adopted) = adopted {
        st = adopted;
    }
    // The schedule follows from the key's creation, never from a possibly stale status field.
    (st.next_rotation_at, st.rotation_window) = settings.next_rotation(st.key_created_at.as_ref(), now);
    if fulfilled {
        // The one create this intent covered reached the Secret: nothing can be left over.
        st.pending_since = None;
    }
    let revoke = due_revocations(&st, now);
    let sweep = orphans(&seen.inventory, &settings.uid, &st, secret);
    let revoked = revoked_outside(&st, &seen.inventory) && !seen.current_key_fetched;
    let change = match issue_cause(&st, secret, settings.rotate_request.as_deref(), revoked, now) {
        // A rotation waits for the grace period in progress to end (its deadline wakes the object):
        // a retiring key is never cut short, and no more than two keys are live.
        Some(Cause::Requested | Cause::Scheduled)
            if st.retiring_keys.iter().any(|r| !revoke.contains(&r.sid)) =>
        {
            Change::None
        }
        // A lost or edited Secret is replaced at once, keys still retiring keep their grace, and
        // no more than MAX_LIVE_KEYS are live: past that the reissue waits for the first to go.
        Some(cause) if cause.retires_current() && st.key_sid.is_some() => {
            let retiring: Vec<&RetiringKey> = (st.retiring_keys.iter())
                .filter(|r| !revoke.contains(&r.sid))
                .collect();
            match retiring.iter().map(|r| r.revoke_at.0).min() {
                Some(until) if retiring.len() + 2 > MAX_LIVE_KEYS => Change::Wait { cause, until },
                _ => Change::Issue(cause),
            }
        }
        Some(cause) => Change::Issue(cause),
        // A changed spec, unless this process already applied it (a pass may read an older status).
        None if st.applied() != settings.generation && !applied_here => Change::Update,
        None => Change::None,
    };
    Plan {
        status: st,
        adopted: was_adopted,
        revoke,
        sweep,
        change,
    }
}

/// The record once key `sid`, issued for `cause` at `now`, reached the Secret: the key it
/// replaced retires for the grace period, and the rotation request counts as answered.
pub fn issued(
    settings: &Settings,
    status: &TwilioApiKeyStatus,
    sid: &str,
    cause: Cause,
    now: Timestamp,
) -> TwilioApiKeyStatus {
    let mut st = status.clone();
    if let Some(old) = st.key_sid.take().filter(|_| cause.retires_current()) {
        st.retiring_keys.push(RetiringKey {
            sid: old,
            revoke_at: Time(schedule::revoke_at(now, settings.grace)),
            account_sid: st.account_sid.clone(),
        });
    }
    st.key_sid = Some(sid.to_owned());
    st.key_created_at = Some(Time(schedule::recorded(now)));
    (st.next_rotation_at, st.rotation_window) = settings.next_rotation(st.key_created_at.as_ref(), now);
    st.pending_since = None;
    if settings.rotate_request.is_some() {
        st.last_rotation_request = settings.rotate_request.clone();
    }
    st
}

/// Whether the workloads in restartWorkloads must be rolled to the current key: they have not
/// been for this key, or the list changed since (recorded by an operator older than the digest:
/// the spec changed since).
pub fn roll_due(status: &TwilioApiKeyStatus, settings: &Settings) -> bool {
    let list_changed = match &status.workloads_rolled_digest {
        Some(digest) => *digest != settings.workloads_digest,
        None => status.applied() != settings.generation,
    };
    status.key_sid.is_some() && (status.workloads_rolled_for != status.key_sid || list_changed)
}

/// Whether Twilio may hold keys of this object: it recorded one, or announced a create.
pub fn may_hold_keys(status: &TwilioApiKeyStatus) -> bool {
    status.key_sid.is_some() || !status.retiring_keys.is_empty() || status.pending_since.is_some()
}

/// The keys the status records, current first.
pub fn recorded_keys(status: &TwilioApiKeyStatus) -> Vec<String> {
    status
        .key_sid
        .iter()
        .cloned()
        .chain(status.retiring_keys.iter().map(|r| r.sid.clone()))
        .collect()
}

/// The Secret as the plan may trust it. Its annotations are editable by anyone who can edit
/// Secrets in the namespace, so a key SID it names that the status does not record counts only
/// if Twilio lists that key with this object's tag; otherwise the Secret counts as edited (and
/// is replaced), and the key it names is never adopted, updated or revoked.
fn verified(seen: &Observation, uid: &str, recorded: Option<&str>) -> Observed {
    let secret = &seen.secret;
    let Observed::Ours(record) = secret else {
        return secret.clone();
    };
    let Some(named) = record.credential_sid.as_deref() else {
        return secret.clone();
    };
    if Some(named) == recorded || seen.named_key_tagged || seen.inventory.lists_tagged(uid, named) {
        return secret.clone();
    }
    Observed::Ours(Record {
        credential_sid: None,
        intact: false,
        ..record.clone()
    })
}

/// When the Secret carries a key the status does not record (the operator stopped between
/// writing the Secret and writing the status, or read a status older than its last write), the
/// status that records it, with the rotation request it answered. The key it replaced retires
/// as a rotation would retire it.
fn adopt_from_secret(
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
            revoke_at: Time(schedule::revoke_at(created, grace)),
            account_sid: status.account_sid.clone(),
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
fn intent_fulfilled(status: &TwilioApiKeyStatus, secret: &Observed) -> bool {
    let (Some(pending), Observed::Ours(record)) = (&status.pending_since, secret) else {
        return false;
    };
    // The status keeps whole seconds, so a Secret written earlier in the intent's second also
    // looks no older than it; the key the create made is one the status does not record yet.
    let unrecorded = record
        .credential_sid
        .as_ref()
        .is_some_and(|sid| !recorded_keys(status).contains(sid));
    record.intact && unrecorded && record.created_at.is_some_and(|created| created >= pending.0)
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
fn orphans(inventory: &Inventory, uid: &str, status: &TwilioApiKeyStatus, secret: &Observed) -> Vec<String> {
    let in_secret = match secret {
        Observed::Ours(record) => record.credential_sid.clone(),
        _ => None,
    };
    inventory
        .tagged(uid)
        .iter()
        .filter(|sid| {
            status.key_sid.as_ref() != Some(sid)
                && in_secret.as_ref() != Some(sid)
                && !status.retiring_keys.iter().any(|r| &r.sid == *sid)
        })
        .cloned()
        .collect()
}

/// Whether the current key looks revoked outside Kubernetes: missing from a list read after it
/// was created (a list read before could simply predate it). Only a fetch confirms it.
pub fn revoked_outside(status: &TwilioApiKeyStatus, inventory: &Inventory) -> bool {
    match (status.key_sid.as_deref(), status.key_created_at.as_ref()) {
        // Status keeps whole seconds: only a list read a full second after the recorded
        // creation surely follows it.
        (Some(sid), Some(created)) => {
            inventory.read_at >= schedule::after(created.0, Duration::from_secs(1))
                && !inventory.contains(sid)
        }
        _ => false,
    }
}

/// Whether, and why, a new key is needed now. The first matching cause wins.
fn issue_cause(
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
    let revocations = status.retiring_keys.iter().map(|r| r.revoke_at.0).min();
    // A rotation waits for every grace period in progress, so while keys are retiring the next
    // revocation comes first: a rotation due meanwhile is no reason to wake (it would only find
    // itself blocked, again and again).
    revocations.or(status.next_rotation_at.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T01:00:00Z";
    const T2: &str = "2026-01-01T02:00:00Z";
    const UID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const HOUR: Duration = Duration::from_secs(3600);

    fn live(sid: &str) -> TwilioApiKeyStatus {
        TwilioApiKeyStatus {
            account_sid: Some("AC1".into()),
            key_sid: Some(sid.into()),
            key_created_at: Some(Time(at(T0))),
            observed_generation: Some(1),
            ..Default::default()
        }
    }
    fn ours(sid: &str, intact: bool) -> Observed {
        Observed::Ours(Record {
            credential_sid: Some(sid.into()),
            created_at: Some(at(T1)),
            request: Some("r2".into()),
            digest: None,
            generation: Some(1),
            intact,
        })
    }
    fn settings() -> Settings {
        Settings {
            uid: UID.into(),
            namespace: "ns".into(),
            secret_name: "s".into(),
            keys: SecretKeys::default(),
            grace: HOUR,
            every: None,
            window: None,
            window_error: None,
            workloads_digest: "d1".into(),
            display_name: "ns/k".into(),
            rotate_request: None,
            generation: Some(1),
            name: "k".into(),
            secret_type: "Opaque".into(),
            template: None,
        }
    }
    fn tagged(sid: &str) -> (String, Option<String>) {
        (sid.to_owned(), Some(tagging::tagged_name("x", UID)))
    }
    fn seen(secret: Observed, keys: Vec<(String, Option<String>)>, read_at: &str) -> Observation {
        Observation {
            account_sid: "AC1".into(),
            secret,
            current_key_fetched: false,
            named_key_tagged: false,
            inventory: Arc::new(Inventory::new(at(read_at), keys)),
        }
    }
    fn issue(cause: Cause) -> Change {
        Change::Issue(cause)
    }

    /// One row: the record, what was observed, the time, and the plan's decisions.
    struct Case {
        name: &'static str,
        status: TwilioApiKeyStatus,
        seen: Observation,
        settings: Settings,
        now: &'static str,
        key_sid: Option<&'static str>,
        revoke: Vec<&'static str>,
        sweep: Vec<&'static str>,
        change: Change,
    }

    /// A two-hour UTC window opening at `schedule`.
    fn window(schedule: &str) -> schedule::Window {
        schedule::Window::new(schedule, "UTC", 2 * HOUR).unwrap()
    }
    fn case(name: &'static str, status: TwilioApiKeyStatus, seen: Observation) -> Case {
        Case {
            name,
            status,
            seen,
            settings: settings(),
            now: T2,
            key_sid: None,
            revoke: vec![],
            sweep: vec![],
            change: Change::None,
        }
    }

    #[test]
    fn plans_for_every_situation() {
        let retiring = |sid: &str, when: &str| RetiringKey {
            sid: sid.into(),
            revoke_at: Time(at(when)),
            account_sid: None,
        };
        let pending = |st: TwilioApiKeyStatus| TwilioApiKeyStatus {
            pending_since: Some(Time(at(T1))),
            ..st
        };
        let first = TwilioApiKeyStatus::default();
        let cases = vec![
            Case {
                change: issue(Cause::Initial),
                ..case("a new object", first.clone(), seen(Observed::Missing, vec![], T2))
            },
            Case {
                key_sid: Some("SK1"),
                ..case(
                    "at rest",
                    live("SK1"),
                    seen(ours("SK1", true), vec![tagged("SK1")], T2),
                )
            },
            // Crash after Twilio's create, before the Secret: the tagged key nobody records goes.
            Case {
                sweep: vec!["SK9"],
                change: issue(Cause::Initial),
                ..case(
                    "crash before the Secret",
                    pending(first.clone()),
                    seen(Observed::Missing, vec![tagged("SK9")], T2),
                )
            },
            // Crash after the Secret, before the status: the Secret's key is adopted, not swept.
            // The generation is applied once more, since no status says it was.
            Case {
                key_sid: Some("SK2"),
                change: Change::Update,
                ..case(
                    "crash before the status",
                    pending(first.clone()),
                    seen(ours("SK2", true), vec![tagged("SK2")], T2),
                )
            },
            // Crash after the Secret of a rotation: the new key is adopted and the old retires.
            Case {
                key_sid: Some("SK2"),
                revoke: vec!["SK1"],
                ..case(
                    "crash mid-rotation, grace over",
                    pending(live("SK1")),
                    seen(ours("SK2", true), vec![tagged("SK1"), tagged("SK2")], T2),
                )
            },
            // Crash mid-revoke: the key is gone at Twilio but still recorded; it is revoked again.
            Case {
                key_sid: Some("SK1"),
                revoke: vec!["SK0"],
                ..case(
                    "crash mid-revoke",
                    TwilioApiKeyStatus {
                        retiring_keys: vec![retiring("SK0", T1)],
                        ..live("SK1")
                    },
                    seen(ours("SK1", true), vec![tagged("SK1")], T2),
                )
            },
            // A stale status read with a cached list: the Secret proves the newer key, and the
            // key it replaced an hour ago has had its grace period.
            Case {
                key_sid: Some("SK2"),
                revoke: vec!["SK1"],
                ..case(
                    "stale status",
                    live("SK1"),
                    seen(ours("SK2", true), vec![tagged("SK1"), tagged("SK2")], T0),
                )
            },
            // A Secret edited to name a key this object did not make: never adopted, never
            // revoked, and the Secret is replaced.
            Case {
                key_sid: Some("SK1"),
                change: issue(Cause::SecretEdited),
                ..case(
                    "forged Secret",
                    live("SK1"),
                    seen(
                        ours("SK7", true),
                        vec![
                            tagged("SK1"),
                            ("SK7".into(), Some("victim [twop:0123456789ab]".into())),
                        ],
                        T2,
                    ),
                )
            },
            Case {
                key_sid: Some("SK1"),
                change: issue(Cause::SecretLost),
                ..case(
                    "Secret deleted",
                    live("SK1"),
                    seen(Observed::Missing, vec![tagged("SK1")], T2),
                )
            },
            Case {
                key_sid: Some("SK1"),
                change: issue(Cause::SecretEdited),
                ..case(
                    "Secret edited",
                    live("SK1"),
                    seen(ours("SK1", false), vec![tagged("SK1")], T2),
                )
            },
            Case {
                key_sid: Some("SK1"),
                change: issue(Cause::RevokedOutside),
                ..case(
                    "revoked outside",
                    live("SK1"),
                    seen(ours("SK1", true), vec![], T2),
                )
            },
            Case {
                key_sid: Some("SK1"),
                ..case(
                    "a list older than the key",
                    live("SK1"),
                    seen(ours("SK1", true), vec![], "2025-12-31T00:00:00Z"),
                )
            },
            Case {
                key_sid: Some("SK1"),
                settings: Settings {
                    rotate_request: Some("r1".into()),
                    ..settings()
                },
                // It waits for the grace period to end.
                change: Change::None,
                ..case(
                    "rotation requested within a grace period",
                    TwilioApiKeyStatus {
                        retiring_keys: vec![retiring("SK0", "2026-01-02T00:00:00Z")],
                        ..live("SK1")
                    },
                    seen(ours("SK1", true), vec![tagged("SK0"), tagged("SK1")], T2),
                )
            },
            Case {
                key_sid: Some("SK1"),
                settings: Settings {
                    rotate_request: Some("r1".into()),
                    ..settings()
                },
                ..case(
                    "a request is answered once",
                    TwilioApiKeyStatus {
                        last_rotation_request: Some("r1".into()),
                        ..live("SK1")
                    },
                    seen(ours("SK1", true), vec![tagged("SK1")], T2),
                )
            },
            Case {
                key_sid: Some("SK1"),
                settings: Settings {
                    every: Some(HOUR),
                    ..settings()
                },
                change: issue(Cause::Scheduled),
                ..case(
                    "rotation due",
                    live("SK1"),
                    seen(ours("SK1", true), vec![tagged("SK1")], T2),
                )
            },
            Case {
                key_sid: Some("SK1"),
                settings: Settings {
                    every: Some(HOUR),
                    window: Some(window("0 3 * * *")),
                    ..settings()
                },
                // Due at about 01:00, but the window opens at 03:00.
                change: Change::None,
                ..case(
                    "rotation due before its window opens",
                    live("SK1"),
                    seen(ours("SK1", true), vec![tagged("SK1")], T2),
                )
            },
            Case {
                key_sid: Some("SK1"),
                settings: Settings {
                    every: Some(HOUR),
                    window: Some(window("0 1 * * *")),
                    ..settings()
                },
                change: issue(Cause::Scheduled),
                ..case(
                    "rotation due, in a window open since 01:00",
                    live("SK1"),
                    seen(ours("SK1", true), vec![tagged("SK1")], T2),
                )
            },
            Case {
                key_sid: Some("SK1"),
                settings: Settings {
                    rotate_request: Some("r1".into()),
                    window: Some(window("0 3 * * *")),
                    ..settings()
                },
                change: issue(Cause::Requested),
                ..case(
                    "a rotation asked for does not wait for the window",
                    live("SK1"),
                    seen(ours("SK1", true), vec![tagged("SK1")], T2),
                )
            },
            Case {
                key_sid: Some("SK1"),
                settings: Settings {
                    generation: Some(2),
                    ..settings()
                },
                change: Change::Update,
                ..case(
                    "spec changed",
                    live("SK1"),
                    seen(ours("SK1", true), vec![tagged("SK1")], T2),
                )
            },
            Case {
                key_sid: Some("SK1"),
                sweep: vec![],
                ..case(
                    "other objects' keys are not ours",
                    live("SK1"),
                    seen(
                        ours("SK1", true),
                        vec![tagged("SK1"), ("SK5".into(), Some("someone else's".into()))],
                        T2,
                    ),
                )
            },
        ];
        for c in cases {
            let p = plan(&c.settings, &c.status, &c.seen, false, at(c.now));
            assert_eq!(p.status.key_sid.as_deref(), c.key_sid, "{}: key", c.name);
            assert_eq!(p.revoke, c.revoke, "{}: revoke", c.name);
            assert_eq!(p.sweep, c.sweep, "{}: sweep", c.name);
            assert_eq!(p.change, c.change, "{}: change", c.name);
            assert_eq!(
                p.status.account_sid.as_deref(),
                Some("AC1"),
                "{}: account",
                c.name
            );
        }
    }

    #[test]
    fn an_applied_generation_is_not_applied_again() {
        let changed = Settings {
            generation: Some(2),
            ..settings()
        };
        let seen = seen(ours("SK1", true), vec![tagged("SK1")], T2);
        assert_eq!(
            plan(&changed, &live("SK1"), &seen, true, at(T2)).change,
            Change::None
        );
    }

    #[test]
    fn a_fulfilled_intent_needs_no_fresh_list_and_is_cleared() {
        let pending = |at_: &str| TwilioApiKeyStatus {
            pending_since: Some(Time(at(at_))),
            ..live("SK1")
        };
        assert!(
            !needs_fresh_inventory(&pending(T1), &ours("SK2", true)),
            "published at the intent's moment"
        );
        assert!(
            needs_fresh_inventory(&pending(T2), &ours("SK2", true)),
            "the Secret predates the intent"
        );
        assert!(
            needs_fresh_inventory(&pending(T1), &ours("SK1", true)),
            "status keeps whole seconds: a Secret written in the intent's second may predate it, \
             and one naming the recorded key surely does"
        );
        assert!(needs_fresh_inventory(&pending(T1), &ours("SK2", false)));
        assert!(needs_fresh_inventory(&pending(T1), &Observed::Missing));
        assert!(
            !needs_fresh_inventory(&live("SK1"), &ours("SK1", true)),
            "no intent"
        );
        let p = plan(
            &settings(),
            &pending(T1),
            &seen(ours("SK2", true), vec![tagged("SK2")], T2),
            false,
            at(T2),
        );
        assert_eq!(p.status.pending_since, None);
        assert!(p.adopted);
    }

    #[test]
    fn a_published_key_missing_from_an_older_list_counts_once_fetched_with_our_tag() {
        let pending = TwilioApiKeyStatus {
            pending_since: Some(Time(at(T1))),
            ..live("SK1")
        };
        assert_eq!(unrecorded_named_key(&pending, &ours("SK2", true)), Some("SK2"));
        assert_eq!(unrecorded_named_key(&pending, &ours("SK1", true)), None);
        // The shared list was read before SK2 was made, so it does not show it.
        let mut observed = seen(ours("SK2", true), vec![tagged("SK1")], T1);
        let p = plan(&settings(), &pending, &observed, false, at(T2));
        assert!(!p.adopted, "unproven, it counts as an edit");
        observed.named_key_tagged = true;
        let p = plan(&settings(), &pending, &observed, false, at(T2));
        assert!(p.adopted && p.status.key_sid.as_deref() == Some("SK2"));
    }

    #[test]
    fn adoption_retires_the_replaced_key_and_answers_its_request() {
        let p = plan(
            &settings(),
            &live("SK1"),
            &seen(ours("SK2", true), vec![tagged("SK2")], T0),
            false,
            at(T2),
        );
        assert_eq!(p.status.key_created_at, Some(Time(at(T1))));
        assert_eq!(
            p.status.retiring_keys,
            vec![RetiringKey {
                sid: "SK1".into(),
                revoke_at: Time(at(T2)),
                account_sid: Some("AC1".into()),
            }]
        );
        assert_eq!(
            p.status.last_rotation_request.as_deref(),
            Some("r2"),
            "the request is not answered twice"
        );
        let edited = plan(
            &settings(),
            &live("SK1"),
            &seen(ours("SK2", false), vec![], T0),
            false,
            at(T2),
        );
        assert!(!edited.adopted, "an edited Secret is not a record");
    }

    #[test]
    fn an_issued_key_retires_the_old_one_unless_it_was_revoked() {
        let s = Settings {
            rotate_request: Some("r3".into()),
            every: Some(24 * HOUR),
            ..settings()
        };
        let rotated = issued(&s, &live("SK1"), "SK2", Cause::Requested, at(T1));
        assert_eq!(rotated.key_sid.as_deref(), Some("SK2"));
        assert_eq!(
            rotated.retiring_keys,
            vec![RetiringKey {
                sid: "SK1".into(),
                revoke_at: Time(at(T2)),
                account_sid: Some("AC1".into()),
            }]
        );
        assert_eq!(rotated.last_rotation_request.as_deref(), Some("r3"));
        assert!(rotated.next_rotation_at.is_some());
        let reissued = issued(&s, &live("SK1"), "SK2", Cause::RevokedOutside, at(T1));
        assert!(reissued.retiring_keys.is_empty());
    }

    #[test]
    fn a_window_missed_while_the_operator_was_down_gives_way_to_the_next() {
        let s = Settings {
            every: Some(HOUR),
            window: Some(window("0 1 * * *")),
            ..settings()
        };
        let created = Time(at(T0));
        // At 02:00 the 01:00-03:00 window is open: the rotation due at about 01:00 happens.
        let (when, open) = s.next_rotation(Some(&created), at(T2));
        assert!(when.unwrap().0 <= at(T2));
        assert_eq!(open.unwrap().opens_at, Time(at(T1)));
        // At 05:00 it has closed unused: tomorrow's, not now.
        let (when, open) = s.next_rotation(Some(&created), at("2026-01-01T05:00:00Z"));
        let open = open.unwrap();
        assert_eq!(open.opens_at, Time(at("2026-01-02T01:00:00Z")));
        assert!(when.unwrap().0 >= open.opens_at.0);
        // A window the operator cannot read stops scheduled rotations instead of ignoring it.
        let unreadable = Settings {
            window: None,
            window_error: Some("spec.rotation.window.schedule".into()),
            ..s
        };
        assert_eq!(unreadable.next_rotation(Some(&created), at(T2)), (None, None));
    }

    #[test]
    fn workloads_roll_once_per_key_and_on_spec_changes() {
        let s = settings();
        let edited = Settings {
            generation: Some(2),
            ..settings()
        };
        let listed = Settings {
            workloads_digest: "d2".into(),
            ..edited.clone()
        };
        let rolled = TwilioApiKeyStatus {
            workloads_rolled_for: Some("SK1".into()),
            workloads_rolled_digest: Some("d1".into()),
            ..live("SK1")
        };
        assert!(!roll_due(&rolled, &s));
        assert!(!roll_due(&rolled, &edited), "another edit rolls nothing");
        assert!(roll_due(&rolled, &listed), "a changed list rolls again");
        assert!(roll_due(&live("SK1"), &s), "a new key rolls");
        assert!(!roll_due(&TwilioApiKeyStatus::default(), &s));
        // Recorded before the digest: a changed generation may have changed the list.
        let older = TwilioApiKeyStatus {
            workloads_rolled_digest: None,
            ..rolled.clone()
        };
        assert!(!roll_due(&older, &s) && roll_due(&older, &edited));
    }

    #[test]
    fn deletion_looks_at_twilio_only_when_keys_may_exist() {
        assert!(
            !may_hold_keys(&TwilioApiKeyStatus::default()),
            "a refused object never reached Twilio"
        );
        let pending = TwilioApiKeyStatus {
            pending_since: Some(Time(at(T1))),
            ..Default::default()
        };
        assert!(may_hold_keys(&pending) && may_hold_keys(&live("SK1")));
        let mut st = live("SK1");
        st.retiring_keys.push(RetiringKey {
            sid: "SK0".into(),
            revoke_at: Time(at(T1)),
            account_sid: None,
        });
        assert_eq!(recorded_keys(&st), vec!["SK1", "SK0"]);
    }

    #[test]
    fn a_lost_secret_is_reissued_only_while_at_most_three_keys_are_live() {
        let retiring = |sid: &str, when: &str| RetiringKey {
            sid: sid.into(),
            revoke_at: Time(at(when)),
            account_sid: Some("AC1".into()),
        };
        let later = "2026-01-01T03:00:00Z";
        let mut st = live("SK3");
        st.retiring_keys = vec![retiring("SK2", later)];
        let lost = seen(Observed::Missing, vec![tagged("SK2"), tagged("SK3")], T2);
        let p = plan(&settings(), &st, &lost, false, at(T2));
        assert_eq!(
            p.change,
            issue(Cause::SecretLost),
            "one retiring: a third key may go live"
        );

        st.retiring_keys.push(retiring("SK1", "2026-01-01T04:00:00Z"));
        let lost = seen(
            Observed::Missing,
            vec![tagged("SK1"), tagged("SK2"), tagged("SK3")],
            T2,
        );
        let p = plan(&settings(), &st, &lost, false, at(T2));
        let wait = Change::Wait {
            cause: Cause::SecretLost,
            until: at(later),
        };
        assert_eq!(
            p.change, wait,
            "two retiring: the reissue waits for the first to go"
        );

        let p = plan(&settings(), &st, &lost, false, at(later));
        assert_eq!(p.revoke, vec!["SK2".to_owned()]);
        assert_eq!(
            p.change,
            issue(Cause::SecretLost),
            "once it goes, the reissue proceeds"
        );
    }

    #[test]
    fn deadlines_and_due_revocations() {
        let mut st = live("SK1");
        st.next_rotation_at = Some(Time(at(T2)));
        st.retiring_keys.push(RetiringKey {
            sid: "SK0".into(),
            revoke_at: Time(at(T1)),
            account_sid: None,
        });
        assert_eq!(next_deadline(&st), Some(at(T1)));
        assert!(due_revocations(&st, at(T0)).is_empty());
        assert_eq!(due_revocations(&st, at(T1)), vec!["SK0".to_owned()]);
        assert!(Cause::Scheduled.retires_current() && !Cause::RevokedOutside.retires_current());
    }
}
