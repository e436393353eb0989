//! The lifecycle both reconcilers follow ([`Lifecycle`]), and the I/O steps they share: the
//! finalizer around a pass ([`reconcile`]), its end in status, condition, event and backoff
//! ([`finish`]), the intent before a create ([`create_with_intent`]), the Secret write, and the
//! deletion steps ([`release`], [`hold`]). Status is written whole with server-side apply, so a
//! field the operator stops setting disappears. ARCHITECTURE.md ("One object's path") tells the
//! story.

use crate::api::{TwilioApiKey, TwilioSubaccount};
use crate::conditions::{self, LifecycleStatus, Problem, Reason};
use crate::context::{Context, MANAGER};
use crate::failpoint;
use crate::objects::{object_id, slim_tenant_meta};
use crate::twilio::{Credentials, Error as TwilioError, ErrorClass};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::object::HasStatus;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How soon a pass that found a stale cached copy looks again.
const STALE_RETRY: Duration = Duration::from_millis(100);

/// What a reconcile can fail with, beyond what it reports in the object's status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A Twilio call failed in a way worth retrying.
    #[error("Twilio: {0}")]
    Twilio(#[from] TwilioError),
    /// The object's deletion waits on what its Ready condition says.
    #[error("deletion held: {0}")]
    Held(String),
    /// Adding or removing the finalizer failed.
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// Whether the failure is already in the object's Ready condition (a held deletion).
    pub fn is_reported(&self) -> bool {
        match self {
            Error::Held(_) => true,
            Error::Finalizer(e) => matches!(e.as_ref(), finalizer::Error::CleanupFailed(Error::Held(_))),
            _ => false,
        }
    }
}

/// A namespaced custom resource the operator reconciles.
pub trait Object:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The kind's name, as metrics and logs say it.
    const KIND: &'static str;
}

impl Object for TwilioApiKey {
    const KIND: &'static str = "TwilioApiKey";
}
impl Object for TwilioSubaccount {
    const KIND: &'static str = "TwilioSubaccount";
}

/// One kind's reconciler: its own memory, and the shared [`Context`] it acts through.
///
/// A kind's lifecycle: `converge` while the object lives, `cleanup` once it is being deleted;
/// [`reconcile`] holds the operator's finalizer in between, so Twilio is always cleaned up before
/// the object goes. A pass ends Ready, with a [`Problem`] (in the Ready condition, with a Warning
/// event when the reason changes, retried with backoff), or with a Kubernetes API error (retried
/// with backoff by the controller).
pub trait Lifecycle: Send + Sync + 'static {
    /// The kind it reconciles.
    type Kind: Object + HasStatus<Status = Self::Status>;
    /// The kind's status.
    type Status: LifecycleStatus + Clone + Default + Send + Sync;
    /// The kind's name, as metrics label it.
    const KIND: &'static str = <Self::Kind as Object>::KIND;

    /// What the reconciler shares with the others.
    fn context(&self) -> &Context;

    /// The TwilioAccount `obj` uses, if it uses one (not its own credentials or a subaccount).
    fn account_name(obj: &Self::Kind) -> Option<&str>;

    /// One pass over a live object (validate, resolve, observe, plan, act), building its
    /// status in `st`; [`reconcile`] records the outcome.
    fn converge(
        &self,
        obj: &Self::Kind,
        st: &mut Self::Status,
        now: Timestamp,
    ) -> impl Future<Output = Result<Done, Stop>> + Send;

    /// The object is being deleted: act at Twilio as its deletionPolicy says, then let go. A
    /// [`Stop`] keeps the object, and [`hold`] reports why.
    fn cleanup(&self, obj: &Self::Kind) -> impl Future<Output = Result<Action, Stop>> + Send;

    /// Drops what this reconciler keeps about `obj` (memory, metric series); see [`departed`].
    fn forget(&self, obj: &Self::Kind);
}

/// Drops everything this process keeps about `obj`: its cleanup is done, or it left this
/// process's view (deleted, or no longer selected by this shard's label selector, when another
/// shard takes it over).
pub fn departed<L: Lifecycle>(lifecycle: &L, obj: &L::Kind) {
    let ctx = lifecycle.context();
    ctx.succeeded(&object_id(obj));
    ctx.forget_writes(&obj.uid().unwrap_or_default());
    lifecycle.forget(obj);
}

/// Runs a pass over the live object or, once it is being deleted, its cleanup, behind the
/// finalizer.
pub async fn reconcile<L: Lifecycle>(obj: Arc<L::Kind>, lifecycle: Arc<L>) -> Result<Action, Error> {
    let ctx = lifecycle.context();
    let uid = obj.uid().unwrap_or_default();
    if ctx.is_stale(&uid, obj.meta().resource_version.as_deref()) {
        // The cache has not caught up with this process's own write: acting on this copy would
        // redo what that write recorded. Its watch event comes soon.
        return Ok(Action::requeue(STALE_RETRY));
    }
    let api: Api<L::Kind> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let Some(obj) = with_finalizer(ctx, &api, obj).await? else {
        return Ok(Action::requeue(STALE_RETRY));
    };
    finalizer(&api, crate::FINALIZER, obj, |event| async {
        match event {
            finalizer::Event::Apply(obj) => {
                let now = Timestamp::now();
                let mut st = obj.status().cloned().unwrap_or_default();
                let outcome = lifecycle.converge(&obj, &mut st, now).await;
                finish(ctx, obj.as_ref(), st, outcome, now).await
            }
            finalizer::Event::Cleanup(obj) => match lifecycle.cleanup(&obj).await {
                Ok(action) => {
                    departed(lifecycle.as_ref(), &obj);
                    Ok(action)
                }
                Err(stop) => Err(hold(ctx, obj.as_ref(), stop).await),
            },
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// `obj` holding the operator's finalizer: added here, on the version read, so the same pass
/// goes on with the object as written and the cached copy without it is known to be stale.
/// `None` when the object changed since it was read (look again).
async fn with_finalizer<K: Object>(
    ctx: &Context,
    api: &Api<K>,
    obj: Arc<K>,
) -> Result<Option<Arc<K>>, Error> {
    let held = obj.finalizers().iter().any(|f| f == crate::FINALIZER);
    if held || obj.meta().deletion_timestamp.is_some() {
        return Ok(Some(obj));
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(crate::FINALIZER.to_owned());
    // The resourceVersion makes the merge patch conditional: a stale copy gets 409 Conflict.
    let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    let written = api
        .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    match noted(ctx, obj.as_ref(), written) {
        Ok(written) => Ok(Some(Arc::new(written))),
        Err(e) if is_conflict(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Records the outcome of a write made from `read`: the version it wrote supersedes `read`, and
/// a 409 Conflict says `read` was stale already. Either way a pass that meets `read` again waits
/// for the watch to bring the newer copy instead of redoing the write or meeting the conflict.
/// The version written counts as the operator's own only if it carries nothing the pass did not
/// read: an unconditional write lands on whatever somebody changed meanwhile, and its watch event
/// must then still wake the object.
fn noted<K: Object>(ctx: &Context, read: &K, written: Result<K, kube::Error>) -> Result<K, kube::Error> {
    let uid = read.uid().unwrap_or_default();
    match &written {
        Ok(new) => {
            let own = same_inputs(read.meta(), new.meta())
                .then(|| new.resource_version())
                .flatten();
            ctx.wrote(&uid, read.resource_version(), own)
        }
        Err(e) if is_conflict(e) => ctx.wrote(&uid, read.resource_version(), None),
        Err(_) => {}
    }
    written
}

/// Whether two copies of an object agree on all a pass acts on besides its status: the spec (its
/// generation), labels, annotations and deletion, as the caches keep them ([`slim_tenant_meta`]).
fn same_inputs(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    let slimmed = |m: &ObjectMeta| {
        let mut m = ObjectMeta {
            labels: m.labels.clone(),
            annotations: m.annotations.clone(),
            ..ObjectMeta::default()
        };
        slim_tenant_meta(&mut m);
        (m.labels, m.annotations)
    };
    a.generation == b.generation && a.deletion_timestamp == b.deletion_timestamp && slimmed(a) == slimmed(b)
}

/// Whether the apiserver answered 409 Conflict.
fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

/// Keeps an object whose deletion stopped short: a problem is reported in its Ready condition
/// (with an event when the reason changes), and the error returned makes the controller keep the
/// finalizer and retry after the backoff.
pub async fn hold<K>(ctx: &Context, obj: &K, stop: Stop) -> Error
where
    K: Object + HasStatus,
    K::Status: LifecycleStatus + Clone + Default,
{
    let problem = match stop {
        Stop::Problem(problem) => problem,
        Stop::Kube(e) => return e.into(),
    };
    let held = problem.message.clone();
    let mut st = obj.status().cloned().unwrap_or_default();
    let reported = report(ctx, obj, st.conditions_mut(), problem, Timestamp::now()).await;
    *st.conditions_mut() = reported;
    counted(ctx, obj, st.conditions_mut());
    // A namespace being deleted may already have taken the operator's right to write the object;
    // that must not stop the retry.
    if let Err(e) = write_status(ctx, obj, &st).await {
        tracing::debug!(error = %e, "could not record why the deletion waits");
    }
    Error::Held(held)
}

/// Retries a failed reconcile after the object's growing backoff.
pub fn error_policy<L: Lifecycle>(obj: Arc<L::Kind>, error: &Error, lifecycle: Arc<L>) -> Action {
    retry_after_backoff(lifecycle.context(), obj.as_ref(), error)
}

/// Logs a failed reconcile of `obj` and retries it after its growing backoff; every kind's
/// error policy.
pub fn retry_after_backoff<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, error: &Error) -> Action {
    let id = object_id(obj);
    let delay = ctx.backoff(&id);
    tracing::warn!(object = %id, error = %error, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Why one pass of a lifecycle stopped short of Ready.
pub enum Stop {
    /// Something a person can act on; reported in the Ready condition.
    Problem(Problem),
    /// The Kubernetes API failed; the controller retries.
    Kube(kube::Error),
}

impl From<Problem> for Stop {
    fn from(p: Problem) -> Self {
        Stop::Problem(p)
    }
}
impl From<kube::Error> for Stop {
    fn from(e: kube::Error) -> Self {
        // A refusal a person must act on is reported in Ready; anything else is retried.
        Problem::from_kube(&e).map_or(Stop::Kube(e), Stop::Problem)
    }
}
impl From<TwilioError> for Stop {
    fn from(e: TwilioError) -> Self {
        Stop::Problem(e.into())
    }
}

/// Writes `status` (which must serialize as the kind's whole status) with server-side apply.
pub async fn write_status<K: Object>(
    ctx: &Context,
    obj: &K,
    status: &impl Serialize,
) -> Result<(), kube::Error> {
    apply_status(ctx, obj, status, None).await
}

/// Applies `status`; with `read`, only if the object is still at that resourceVersion (the
/// apiserver answers 409 Conflict otherwise).
async fn apply_status<K: Object>(
    ctx: &Context,
    obj: &K,
    status: &impl Serialize,
    read: Option<String>,
) -> Result<(), kube::Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let mut patch =
        serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    if let Some(version) = read {
        patch["metadata"] = serde_json::json!({"resourceVersion": version});
    }
    let written = api
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await;
    noted(ctx, obj, written).map(drop)
}

/// Writes a Secret the operator publishes, or with `dry_run` only asks Kubernetes whether it
/// would accept it. A Secret already `ours` is written by server-side apply with force; a new one
/// is created, so a Secret somebody else made meanwhile is a `SecretConflict`, never co-owned.
pub async fn write_secret(ctx: &Context, secret: &Secret, ours: bool, dry_run: bool) -> Result<Secret, Stop> {
    let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let written = if ours {
        let mut params = PatchParams::apply(MANAGER).force();
        params.dry_run = dry_run;
        api.patch(name, &params, &Patch::Apply(secret)).await
    } else {
        let params = PostParams {
            dry_run,
            field_manager: Some(MANAGER.into()),
        };
        api.create(&params, secret).await
    };
    match written {
        Err(e) if is_conflict(&e) => {
            let owner = secret
                .metadata
                .owner_references
                .iter()
                .flatten()
                .next()
                .map_or("", |o| o.kind.as_str());
            Err(Problem::secret_conflict(name, owner).into())
        }
        other => Ok(other?),
    }
}

/// Asks Twilio to create something for `obj`, announcing it first: `status.pendingSince` is
/// written, conditional on the object being as the pass read it, before `create` runs, so a
/// crash after Twilio acted leaves the next pass a reason to look for what was made (by the
/// object's tag) before making anything again, and a stale pass makes nothing.
pub async fn create_with_intent<K, S, T>(
    ctx: &Context,
    obj: &K,
    status: &mut S,
    now: Timestamp,
    failpoint_name: &str,
    create: impl Future<Output = Result<T, TwilioError>>,
) -> Result<T, Stop>
where
    K: Object,
    S: LifecycleStatus,
{
    *status.pending_since_mut() = Some(Time(now));
    // A first create is judged here, with Ready saying so. Any later one (a rotation, a repair)
    // leaves Ready and observedGeneration as they were until the pass ends: a Ready condition
    // beside a newer observedGeneration would tell kstatus the change was done.
    if !status.conditions_mut().iter().any(|c| c.type_ == "Ready") {
        judged(status, obj.meta().generation);
        let creating = format!("Creating the {} at Twilio", K::kind(&()));
        let pending = Problem::new(Reason::Pending, creating);
        let pending = conditions::not_ready(&[], &pending, obj.meta().generation, now);
        *status.conditions_mut() = pending;
    }
    // Only if the object is as this pass read it: a pass working from a stale copy (one that
    // does not know what the operator recorded since) must not erase that record and create again.
    apply_status(ctx, obj, status, obj.resource_version()).await?;
    let created = create.await?;
    failpoint::hit(failpoint_name);
    Ok(created)
}

/// The conditions after a failed pass; tells people through an event when the reason changed.
pub async fn report<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    conditions: &[Condition],
    problem: Problem,
    now: Timestamp,
) -> Vec<Condition> {
    let changed = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .is_none_or(|c| c.reason != problem.reason.as_str());
    if changed {
        let (reason, note) = (problem.reason.as_str(), problem.message.clone());
        let type_ = if problem.reason.is_wait() {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.event(obj, type_, reason, "Reconcile", note).await;
    }
    tracing::info!(object = %object_id(obj), reason = problem.reason.as_str(), message = %problem.message, "not ready");
    conditions::not_ready(conditions, &problem, obj.meta().generation, now)
}

/// How a pass that did not stop short ended: the Ready message, and when to look again.
pub struct Done {
    /// The Ready condition's message.
    pub message: String,
    /// The next moment something is due (a rotation, a revocation), if any.
    pub deadline: Option<Timestamp>,
}

/// Ends a pass: records its outcome (Ready with its message, or the problem) in status unless
/// the object already says exactly that, and says when to look again: at the next deadline if
/// that comes before the resync, or after the backoff.
pub async fn finish<K>(
    ctx: &Context,
    obj: &K,
    mut st: K::Status,
    outcome: Result<Done, Stop>,
    now: Timestamp,
) -> Result<Action, Error>
where
    K: Object + HasStatus,
    K::Status: LifecycleStatus,
{
    let id = object_id(obj);
    let requeue = match outcome {
        Ok(done) => {
            ctx.succeeded(&id);
            *st.applied_generation_mut() = obj.meta().generation;
            let ready = conditions::ready(st.conditions_mut(), done.message, obj.meta().generation, now);
            *st.conditions_mut() = ready;
            // Counted from now, not from the pass's start, with a little slack, so the deadline
            // has passed when we wake.
            let until = done.deadline.map(|t| {
                let left = Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or_default();
                left + Duration::from_millis(100)
            });
            // Later than that, the scope's resync round comes first (see `controller`).
            until.filter(|d| *d < ctx.resync)
        }
        Err(Stop::Problem(problem)) => {
            judged(&mut st, obj.meta().generation);
            let until = problem.until;
            let reported = report(ctx, obj, st.conditions_mut(), problem, now).await;
            *st.conditions_mut() = reported;
            // A wait with a known end looks again then, not after a backoff that grows past it.
            let left =
                until.map(|t| Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or_default());
            Some(left.map_or_else(|| ctx.backoff(&id), |d| d + Duration::from_millis(100)))
        }
        // The object changed since this pass read it: look again once the watch brings it.
        Err(Stop::Kube(e)) if is_conflict(&e) => return Ok(Action::requeue(STALE_RETRY)),
        Err(Stop::Kube(e)) => return Err(e.into()),
    };
    *st.observed_generation_mut() = obj.meta().generation;
    counted(ctx, obj, st.conditions_mut());
    // A pass that changed nothing writes nothing: no request, and no watch event waking it again.
    // Compared as written: in-memory times are finer than the whole seconds status keeps.
    if serde_json::to_value(obj.status()).ok() != serde_json::to_value(Some(&st)).ok() {
        write_status(ctx, obj, &st).await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Records that a pass judged `generation` without applying it: kstatus compares
/// `observedGeneration` with the object's generation, and what was applied before stays on record
/// for the next success to compare against.
fn judged<S: LifecycleStatus>(st: &mut S, generation: Option<i64>) {
    if st.applied_generation_mut().is_none() {
        let before = st.observed_generation_mut().unwrap_or(0);
        *st.applied_generation_mut() = Some(before);
    }
    *st.observed_generation_mut() = generation;
}

/// Records in the metrics the Ready condition a pass set.
fn counted<K: Object>(ctx: &Context, obj: &K, conditions: &[Condition]) {
    if let Some(ready) = conditions.iter().find(|c| c.type_ == "Ready") {
        ctx.metrics.outcome(
            K::KIND,
            &obj.namespace().unwrap_or_default(),
            &obj.name_any(),
            ready.status == "True",
            &ready.reason,
        );
    }
}

/// Deletion under `deletionPolicy: Retain`: say what stays at Twilio, and let go.
pub async fn retained<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, kept: &str) -> Action {
    let note = format!("deletionPolicy is Retain: {kept} stays as it is at Twilio");
    ctx.event(obj, EventType::Normal, "Retained", "Delete", note)
        .await;
    Action::await_change()
}

/// What a deletion step did, for an event.
pub struct Note {
    /// The event reason.
    pub reason: &'static str,
    /// The event text.
    pub text: String,
}

/// Credentials a deletion step may act with, in the order they are tried.
pub struct Candidates {
    /// The object's own: those its spec or TwilioAccount names.
    pub own: Option<Credentials>,
    /// The operator's own, which reach subaccounts as their parent.
    pub operator: Option<Credentials>,
}

impl Candidates {
    /// The object's own credentials, then the operator's, unless the object brings its own
    /// (`brings_own`: a credentialsRef), which never borrow the operator's, not even to clean up.
    pub fn new(ctx: &Context, own: Option<Credentials>, brings_own: bool) -> Self {
        Self {
            own,
            operator: ctx.default_credentials.clone().filter(|_| !brings_own),
        }
    }
}

/// Runs the deletion step `act`, described by `work` ("Revoking SK…"), with the object's own
/// credentials and then the operator's, until one works. `act` answers `Some(note)` for a Normal
/// event, or `None` when there was nothing to do. A retryable failure, or the object's own
/// credentials refused while its namespace lives (somebody can still correct them), stops the
/// deletion until the next try; when nothing else reaches Twilio, `failed(why)` becomes a Warning
/// event and the object is let go.
///
/// At deletion the object's own credentials are tried first and the operator's next. A deletion
/// that cannot finish yet (Twilio busy or failing, the object's own credentials refused) keeps the
/// finalizer and says why in Ready, with an event, retrying after the backoff ([`hold`]); refused
/// credentials are waited for only while the namespace lives. When nothing can reach Twilio a
/// Warning names what was left behind and the object goes anyway, so namespaces finish deleting.
pub async fn release<K, F, Fut>(
    ctx: &Context,
    obj: &K,
    candidates: Candidates,
    work: &str,
    mut act: F,
    failed: impl FnOnce(&str) -> Note,
) -> Result<Action, Stop>
where
    K: Resource<DynamicType = ()>,
    F: FnMut(Credentials) -> Fut,
    Fut: Future<Output = Result<Option<Note>, TwilioError>>,
{
    let tries = (candidates.own.into_iter().map(|c| (true, c)))
        .chain(candidates.operator.into_iter().map(|c| (false, c)));
    let (mut refused, mut last_error) = (None, None);
    for (own, creds) in tries {
        match act(creds).await {
            Ok(note) => {
                if let Some(Note { reason, text }) = note {
                    ctx.event(obj, EventType::Normal, reason, "Delete", text).await;
                }
                return Ok(Action::await_change());
            }
            Err(e) if e.is_retryable() => {
                let message = format!("{work}: {e}; trying again after a backoff");
                return Err(Problem::new(Reason::Revoking, message).into());
            }
            Err(e) => {
                if own && e.class() == ErrorClass::Credentials {
                    refused = Some(e.to_string());
                }
                last_error = Some(e);
            }
        }
    }
    if let Some(why) = refused
        && !namespace_terminating(ctx, obj)
    {
        let message = format!(
            "{work} waits: Twilio refused this object's credentials ({why}). Correct them and the deletion goes on; or set deletionPolicy: Retain to let go and leave it at Twilio"
        );
        return Err(Problem::new(Reason::AuthenticationFailed, message).into());
    }
    let why = last_error.map_or_else(
        || "no credentials can reach the account".to_owned(),
        |e| e.to_string(),
    );
    let Note { reason, text } = failed(&why);
    ctx.event(obj, EventType::Warning, reason, "Delete", text).await;
    Ok(Action::await_change())
}

/// Whether `obj`'s namespace is being deleted, as the shared Namespace cache last saw it.
fn namespace_terminating<K: Resource>(ctx: &Context, obj: &K) -> bool {
    let ns = obj.meta().namespace.as_deref().unwrap_or_default();
    ctx.cluster
        .namespaces
        .get(&ObjectRef::new(ns))
        .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_holds_only_what_was_read_unless_labels_annotations_spec_or_deletion_moved() {
        let meta = |generation: i64, annotation: Option<(&str, &str)>| ObjectMeta {
            generation: Some(generation),
            annotations: annotation.map(|(k, v)| [(k.to_owned(), v.to_owned())].into()),
            ..ObjectMeta::default()
        };
        let read = meta(1, None);
        let mut written = meta(1, Some((crate::objects::LAST_APPLIED, "{}")));
        written.finalizers = Some(vec!["twilio.operator.dev/cleanup".into()]);
        written.resource_version = Some("9".into());
        assert!(
            same_inputs(&read, &written),
            "the operator's own write, as a cache reads it"
        );
        assert!(!same_inputs(&read, &meta(2, None)), "the spec changed");
        assert!(!same_inputs(
            &read,
            &meta(1, Some(("twilio.operator.dev/rotate", "now")))
        ));
        let mut deleted = meta(1, None);
        deleted.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(!same_inputs(&read, &deleted));
    }
}
