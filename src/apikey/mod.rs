//! The TwilioApiKey reconciler: one lifecycle for one Twilio key and its Secret.
//!
//! Contract:
//! - observe (credentials, the Secret, the account's keys at Twilio), decide with [`plan`],
//!   act, and record the outcome in status with the Ready condition;
//! - create is crash-safe: the intent (`status.pendingSince`) is written before Twilio is asked,
//!   the new key carries the object's tag, its credentials reach the Secret before the status,
//!   and whatever a crash leaves behind is either adopted from the Secret or swept at Twilio;
//! - at most two keys are ever live: the current one and one retiring until its revokeAt;
//! - failures become a condition reason and an event, and back off exponentially;
//! - no secret value is ever logged, put in status, or put in an event.

pub mod plan;
pub mod schedule;

use crate::api::apikey::{
    KeyDeletionPolicy, KeyType, SecretKeys, TwilioApiKey, TwilioApiKeyStatus, WorkloadKind,
};
use crate::api::duration;
use crate::conditions::{self, Reason};
use crate::context::{Context, MANAGER, Problem};
use crate::reconcile::{self, Error, Stop, object_id, write_status};
use crate::secret::{self, Expect, Observed};
use crate::target::{self, Target};
use crate::{failpoint, tagging};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use plan::Cause;
use secrecy::ExposeSecret;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// A new value of this annotation rotates the key once.
pub const ROTATE_ANNOTATION: &str = "twilio.operator.dev/rotate";
/// Pod-template annotation whose value (the current key SID) rolls restartWorkloads.
pub const ROLLOUT_ANNOTATION: &str = "twilio.operator.dev/api-key-sid";

pub async fn reconcile(key: Arc<TwilioApiKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile::with_finalizer(
        key,
        ctx,
        |o, ctx| async move { apply(&o, &ctx).await },
        |o, ctx| async move { cleanup(&o, &ctx).await },
    )
    .await
}

struct Spec<'a> {
    key: &'a TwilioApiKey,
    uid: String,
    namespace: String,
    secret_name: String,
    keys: SecretKeys,
    grace: Duration,
    every: Option<Duration>,
}

impl<'a> Spec<'a> {
    fn read(key: &'a TwilioApiKey) -> Result<Self, Problem> {
        let rotation = key.spec.rotation.as_ref();
        let parse = |field: &str, text: &str| {
            duration::parse(text)
                .map_err(|e| Problem::new(Reason::Pending, format!("spec.rotation.{field}: {e}")))
        };
        let grace = rotation
            .map(|r| parse("gracePeriod", &r.grace_period))
            .transpose()?
            .unwrap_or(Duration::from_secs(3600));
        let every = rotation.map(|r| parse("every", &r.every)).transpose()?;
        let secret = key.spec.secret.clone().unwrap_or_default();
        Ok(Self {
            key,
            uid: key.uid().unwrap_or_default(),
            namespace: key.namespace().unwrap_or_default(),
            secret_name: secret.name.unwrap_or_else(|| key.name_any()),
            keys: secret.keys.unwrap_or_default(),
            grace,
            every,
        })
    }

    fn display_name(&self) -> String {
        self.key
            .spec
            .friendly_name
            .clone()
            .unwrap_or_else(|| format!("{}/{}", self.namespace, self.key.name_any()))
    }

    fn rotate_request(&self) -> Option<&str> {
        self.key.annotations().get(ROTATE_ANNOTATION).map(String::as_str)
    }
}

async fn resolve(key: &TwilioApiKey, ctx: &Context) -> Result<Target, Problem> {
    let ns = key.namespace().unwrap_or_default();
    match &key.spec.subaccount_ref {
        Some(sub) => target::subaccount(ctx, &ns, &sub.name).await,
        None => {
            let creds = target::credentials(ctx, &ns, key.spec.credentials_ref.as_ref()).await?;
            Ok(Target {
                account_sid: creds.account_sid().to_owned(),
                creds,
            })
        }
    }
}

async fn apply(key: &TwilioApiKey, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let mut st = key.status.clone().unwrap_or_default();
    let outcome = match Spec::read(key) {
        Ok(spec) => converge(&spec, ctx, &mut st, now)
            .await
            .map(|message| (message, plan::next_deadline(&st))),
        Err(problem) => Err(Stop::Problem(problem)),
    };
    if let Some(created) = &st.key_created_at {
        let seconds = |t: &Time| t.0.as_millisecond() as f64 / 1000.0;
        ctx.metrics.key(
            &key.namespace().unwrap_or_default(),
            &key.name_any(),
            seconds(created),
            st.next_rotation_at.as_ref().map(seconds),
        );
    }
    reconcile::finish(ctx, key, st, outcome, now).await
}

/// One pass of the lifecycle; returns the Ready message.
async fn converge(
    spec: &Spec<'_>,
    ctx: &Context,
    st: &mut TwilioApiKeyStatus,
    now: Timestamp,
) -> Result<String, Stop> {
    let key = spec.key;
    let target = resolve(key, ctx).await?;
    let account = target.account_sid.clone();
    st.account_sid = Some(account.clone());

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &spec.namespace);
    let found = secrets.get_opt(&spec.secret_name).await?;
    let observed = observe_secret(found.as_ref(), spec, &account);
    if observed == Observed::Conflict {
        return Err(reconcile::secret_conflict(&spec.secret_name, "TwilioApiKey").into());
    }
    if let Some(adopted) = plan::adopt_from_secret(st, &observed, spec.grace, now) {
        tracing::info!(object = %object_id(key), key = ?adopted.key_sid, "adopting the key the Secret already carries");
        *st = adopted;
    }

    // The schedule follows from the key's creation, never from a possibly stale status field.
    st.next_rotation_at = next_rotation(spec, st);
    let twilio_result = twilio_steps(spec, ctx, &target, st, &observed, now).await;
    if let Err(Stop::Problem(p)) = &twilio_result
        && p.reason == Reason::AuthenticationFailed
    {
        // A cached subaccount token may be what Twilio refused: read it afresh next time.
        ctx.forget_subaccount_token(&account);
    }
    twilio_result?;

    roll_workloads(spec, ctx, st).await?;
    st.secret_name = Some(spec.secret_name.clone());
    Ok(format!(
        "Key {} is published in Secret {}",
        st.key_sid.as_deref().unwrap_or("?"),
        spec.secret_name
    ))
}

fn next_rotation(spec: &Spec<'_>, st: &TwilioApiKeyStatus) -> Option<Time> {
    match (spec.every, &st.key_created_at) {
        (Some(every), Some(created)) => Some(Time(schedule::next_rotation(created.0, every, &spec.uid))),
        _ => None,
    }
}

fn observe_secret(found: Option<&Secret>, spec: &Spec<'_>, account: &str) -> Observed {
    let expected = [
        (spec.keys.account_sid.as_str(), Expect::Equals(account)),
        (spec.keys.api_key.as_str(), Expect::CredentialSid),
        (spec.keys.api_secret.as_str(), Expect::Secret),
    ];
    secret::observe(found, &spec.uid, &expected)
}

/// Everything that talks to Twilio: revocations, the sweep, drift, issuing and key updates.
async fn twilio_steps(
    spec: &Spec<'_>,
    ctx: &Context,
    target: &Target,
    st: &mut TwilioApiKeyStatus,
    observed: &Observed,
    now: Timestamp,
) -> Result<(), Stop> {
    revoke_due(ctx, target, st, now).await?;

    if plan::intent_fulfilled(st, observed) {
        // The one create this intent covered reached the Secret: nothing can be left over.
        st.pending_since = None;
    }
    let max_age = if st.pending_since.is_some() {
        Duration::ZERO
    } else {
        ctx.resync
    };
    let inventory = ctx.inventory(&target.account_sid, &target.creds, max_age).await?;
    for orphan in plan::orphans(&inventory, &spec.uid, st, observed) {
        revoke(ctx, target, &orphan).await?;
        ctx.event(
            &spec.key.object_ref(&()),
            EventType::Normal,
            "LeftoverRevoked",
            "Revoke",
            format!("Revoked key {orphan}, created before an interruption and never published"),
        )
        .await;
    }
    st.pending_since = None;

    let revoked = plan::revoked_outside(st, Some(&inventory));
    match plan::issue_cause(st, observed, spec.rotate_request(), revoked, now) {
        Some(cause) => {
            issue(spec, ctx, target, st, cause, observed, now).await?;
            revoke_due(ctx, target, st, now).await?;
        }
        // A changed spec, unless this process already applied it (a pass may read an older status).
        None if st.observed_generation != spec.key.metadata.generation
            && !ctx.applied(&spec.uid, spec.key.metadata.generation) =>
        {
            update_key(spec, ctx, target, st).await?
        }
        None => {}
    }
    Ok(())
}

/// Revokes a key at Twilio; a key already gone counts as revoked.
async fn revoke(ctx: &Context, target: &Target, sid: &str) -> Result<(), crate::twilio::Error> {
    // A pass that read an older status may list a key this process already revoked.
    if !ctx.revoked_recently(sid) {
        ctx.twilio
            .delete_key(&target.creds, &target.account_sid, sid)
            .await?;
        ctx.note_revoked(sid);
    }
    Ok(())
}

async fn revoke_due(
    ctx: &Context,
    target: &Target,
    st: &mut TwilioApiKeyStatus,
    now: Timestamp,
) -> Result<(), Stop> {
    for sid in plan::due_revocations(st, now) {
        revoke(ctx, target, &sid).await?;
        failpoint::hit("apikey-mid-revoke");
        st.retiring_keys.retain(|r| r.sid != sid);
        tracing::info!(key = %sid, "revoked retiring key");
    }
    Ok(())
}

async fn issue(
    spec: &Spec<'_>,
    ctx: &Context,
    target: &Target,
    st: &mut TwilioApiKeyStatus,
    cause: Cause,
    observed: &Observed,
    now: Timestamp,
) -> Result<(), Stop> {
    let key = spec.key;
    let object = key.object_ref(&());
    // Never more than two live keys: the retiring one goes before a new one comes.
    if cause.retires_current() && st.key_sid.is_some() {
        for retiring in std::mem::take(&mut st.retiring_keys) {
            revoke(ctx, target, &retiring.sid).await?;
        }
    }
    st.pending_since = Some(Time(now));
    write_status(ctx, key, st).await?;

    let name = tagging::tagged_name(&spec.display_name(), &spec.uid);
    let new = match (key.spec.key_type, &key.spec.permissions) {
        (KeyType::Restricted, Some(permissions)) => {
            ctx.twilio
                .create_restricted_key(&target.creds, &target.account_sid, Some(&name), permissions)
                .await?
        }
        _ => {
            ctx.twilio
                .create_key(&target.creds, &target.account_sid, Some(&name))
                .await?
        }
    };
    ctx.remember_key(&target.account_sid, &new.sid, &name).await;
    failpoint::hit("apikey-after-create");

    let owner = key
        .controller_owner_ref(&())
        .expect("a stored object has a name and a UID");
    let spec_secret = key.spec.secret.clone().unwrap_or_default();
    let published = secret::build(&secret::Published {
        name: &spec.secret_name,
        namespace: &spec.namespace,
        owner,
        labels: &spec_secret.labels,
        annotations: &spec_secret.annotations,
        credential_sid: &new.sid,
        created_at: now,
        request: spec.rotate_request(),
        data: vec![
            (&spec.keys.account_sid, &target.account_sid),
            (&spec.keys.api_key, &new.sid),
            (&spec.keys.api_secret, new.secret.expose_secret()),
        ],
        secret_key: &spec.keys.api_secret,
    });
    // Force only over our own fields: a Secret somebody created meanwhile makes this fail.
    let mut params = PatchParams::apply(MANAGER);
    params.force = matches!(observed, Observed::Ours(_));
    Api::<Secret>::namespaced(ctx.client.clone(), &spec.namespace)
        .patch(&spec.secret_name, &params, &Patch::Apply(&published))
        .await?;
    failpoint::hit("apikey-after-secret");

    let previous = st.key_sid.take();
    if cause.retires_current()
        && let Some(old) = previous.clone()
    {
        st.retiring_keys.push(crate::api::apikey::RetiringKey {
            sid: old,
            revoke_at: Time(schedule::after(now, spec.grace)),
        });
    }
    st.key_sid = Some(new.sid.clone());
    st.key_created_at = Some(Time(now));
    st.next_rotation_at = next_rotation(spec, st);
    st.pending_since = None;
    ctx.note_applied(&spec.uid, key.metadata.generation);
    st.last_rotation_request = spec
        .rotate_request()
        .map(str::to_owned)
        .or(st.last_rotation_request.take());

    ctx.metrics.rotated("TwilioApiKey", cause.label());
    let (type_, reason) = match cause {
        Cause::Initial => (EventType::Normal, "KeyCreated"),
        Cause::Requested | Cause::Scheduled => (EventType::Normal, "KeyRotated"),
        Cause::RevokedOutside => (EventType::Warning, "KeyRevokedOutside"),
        Cause::SecretLost | Cause::SecretEdited => (EventType::Warning, "KeyReissued"),
    };
    let retiring = match (cause.retires_current(), previous) {
        (true, Some(old)) => format!("; {old} stays valid for {}", humantime(spec.grace)),
        _ => String::new(),
    };
    ctx.event(
        &object,
        type_,
        reason,
        "Issue",
        format!(
            "Key {} {} and published in Secret {}{retiring}",
            new.sid,
            cause.describe(),
            spec.secret_name
        ),
    )
    .await;
    Ok(())
}

/// Applies a changed friendlyName or permissions to the existing key, in place.
async fn update_key(
    spec: &Spec<'_>,
    ctx: &Context,
    target: &Target,
    st: &TwilioApiKeyStatus,
) -> Result<(), Stop> {
    let Some(sid) = st.key_sid.as_deref() else {
        return Ok(());
    };
    let name = tagging::tagged_name(&spec.display_name(), &spec.uid);
    match (spec.key.spec.key_type, &spec.key.spec.permissions) {
        (KeyType::Restricted, Some(permissions)) => {
            ctx.twilio
                .update_iam_key(&target.creds, sid, Some(&name), Some(permissions))
                .await?;
        }
        _ => {
            ctx.twilio
                .update_key(&target.creds, &target.account_sid, sid, &name)
                .await?;
        }
    }
    ctx.note_applied(&spec.uid, spec.key.metadata.generation);
    Ok(())
}

/// Rolls each restartWorkloads entry by setting a pod-template annotation to the current key
/// SID: the same value twice changes nothing, so each workload rolls once per key.
async fn roll_workloads(spec: &Spec<'_>, ctx: &Context, st: &mut TwilioApiKeyStatus) -> Result<(), Stop> {
    let Some(sid) = st.key_sid.clone() else {
        return Ok(());
    };
    let changed_spec = st.observed_generation != spec.key.metadata.generation;
    if st.workloads_rolled_for.as_deref() == Some(sid.as_str()) && !changed_spec {
        return Ok(());
    }
    let patch =
        Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {ROLLOUT_ANNOTATION: sid}}}}}));
    let params = PatchParams::default();
    let client = ctx.client.clone();
    let ns = spec.namespace.as_str();
    for workload in &spec.key.spec.restart_workloads {
        let result = match workload.kind {
            WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(&workload.name, &params, &patch)
                .await
                .map(|_| ()),
            WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch(&workload.name, &params, &patch)
                .await
                .map(|_| ()),
            WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
                .patch(&workload.name, &params, &patch)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let note = format!(
                    "{:?} {} in restartWorkloads does not exist; it was not restarted for key {sid}",
                    workload.kind, workload.name
                );
                ctx.event(
                    &spec.key.object_ref(&()),
                    EventType::Warning,
                    "WorkloadMissing",
                    "Restart",
                    note,
                )
                .await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    st.workloads_rolled_for = Some(sid);
    Ok(())
}

/// Deletion: revoke the keys (deletionPolicy Delete) and let go, even when revoking is impossible.
async fn cleanup(key: &TwilioApiKey, ctx: &Context) -> Result<Action, Error> {
    let object = key.object_ref(&());
    ctx.metrics
        .forget_key(&key.namespace().unwrap_or_default(), &key.name_any());
    ctx.succeeded(&object_id(key));
    let st = key.status.clone().unwrap_or_default();
    if key.spec.deletion_policy == KeyDeletionPolicy::Retain {
        let kept = st.key_sid.clone().unwrap_or_else(|| "no key".into());
        ctx.event(
            &object,
            EventType::Normal,
            "Retained",
            "Delete",
            format!("deletionPolicy is Retain: {kept} stays valid at Twilio"),
        )
        .await;
        return Ok(Action::await_change());
    }
    let mut sids: Vec<String> = st
        .key_sid
        .iter()
        .cloned()
        .chain(st.retiring_keys.iter().map(|r| r.sid.clone()))
        .collect();
    let spec = Spec::read(key).ok();
    if let Some(spec) = &spec {
        let found = Api::<Secret>::namespaced(ctx.client.clone(), &spec.namespace)
            .get_opt(&spec.secret_name)
            .await?;
        if let Some(Observed::Ours(record)) = found.as_ref().map(|s| secret::observe(Some(s), &spec.uid, &[]))
            && let Some(carried) = record.credential_sid.filter(|c| !sids.contains(c))
        {
            sids.push(carried);
        }
    }
    if sids.is_empty() && st.pending_since.is_none() {
        return Ok(Action::await_change());
    }
    let mut revoking = st.clone();
    revoking.conditions = conditions::ready(
        &st.conditions,
        Reason::Revoking,
        format!("Revoking {}", sids.join(", ")),
        key.metadata.generation,
        Timestamp::now(),
    );
    write_status(ctx, key, &revoking).await?;

    // The object's own credentials first; if they are gone (a namespace being deleted takes its
    // Secrets with it) or refused, the operator's own, which reach subaccounts as their parent.
    let own = resolve(key, ctx).await.ok();
    let account = st
        .account_sid
        .clone()
        .or_else(|| own.as_ref().map(|t| t.account_sid.clone()));
    let Some(account) = account else {
        return Ok(Action::await_change());
    };
    let candidates = own
        .map(|t| t.creds)
        .into_iter()
        .chain(ctx.default_credentials.clone());
    let mut last_error = None;
    for creds in candidates {
        match revoke_all(
            ctx,
            &creds,
            &account,
            &sids,
            st.pending_since.is_some(),
            key.uid().as_deref().unwrap_or_default(),
        )
        .await
        {
            Ok(()) => {
                ctx.event(
                    &object,
                    EventType::Normal,
                    "KeysRevoked",
                    "Delete",
                    format!(
                        "Revoked {}",
                        if sids.is_empty() {
                            "leftover keys".to_owned()
                        } else {
                            sids.join(", ")
                        }
                    ),
                )
                .await;
                return Ok(Action::await_change());
            }
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => last_error = Some(e),
        }
    }
    let why = last_error.map_or_else(
        || "no credentials can reach the account".to_owned(),
        |e| e.to_string(),
    );
    ctx.event(
        &object,
        EventType::Warning,
        "RevokeFailed",
        "Delete",
        format!("Could not revoke {} in account {account} ({why}); left behind at Twilio: revoke them in the Twilio Console", sids.join(", ")),
    )
    .await;
    Ok(Action::await_change())
}

async fn revoke_all(
    ctx: &Context,
    creds: &crate::twilio::Credentials,
    account: &str,
    sids: &[String],
    sweep: bool,
    uid: &str,
) -> Result<(), crate::twilio::Error> {
    // A delete of an unreachable key also answers 404; make sure the account is in reach first,
    // so "already gone" really means gone.
    ctx.twilio.fetch_account(creds, account).await?;
    for sid in sids {
        ctx.twilio.delete_key(creds, account, sid).await?;
    }
    if sweep {
        for (sid, name) in ctx.inventory(account, creds, Duration::ZERO).await?.keys {
            if tagging::is_tagged(name.as_deref(), uid) {
                ctx.twilio.delete_key(creds, account, &sid).await?;
            }
        }
    }
    Ok(())
}

fn humantime(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}
