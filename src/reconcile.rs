//! What both reconcilers share: how a pass ends, how status is written, how problems are told.
//!
//! Contract:
//! - a pass ends Ready, with a [`Problem`] (reported in the Ready condition, with a Warning event
//!   when the reason changes, and retried with backoff), or with a Kubernetes API error (retried
//!   with backoff by the controller);
//! - status is written with server-side apply under the operator's field manager, whole, so a
//!   field the operator stops setting disappears.

use crate::conditions::{self, Reason};
use crate::context::{Context, MANAGER, Problem};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// What a reconcile can fail with, beyond what it reports in the object's status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Twilio: {0}")]
    Twilio(#[from] crate::twilio::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// Runs `apply` or, once the object is being deleted, `cleanup`, holding the operator's
/// finalizer in between so Twilio is always cleaned up before the object goes.
pub async fn with_finalizer<K, A, C, FA, FC>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    apply: A,
    cleanup: C,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
    A: FnOnce(Arc<K>, Arc<Context>) -> FA,
    C: FnOnce(Arc<K>, Arc<Context>) -> FC,
    FA: std::future::Future<Output = Result<Action, Error>>,
    FC: std::future::Future<Output = Result<Action, Error>>,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    kube::runtime::finalizer::finalizer(&api, crate::FINALIZER, obj, |event| async {
        match event {
            kube::runtime::finalizer::Event::Apply(obj) => apply(obj, ctx).await,
            kube::runtime::finalizer::Event::Cleanup(obj) => cleanup(obj, ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Retries a failed reconcile after the object's growing backoff.
pub fn error_policy<K: Resource>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&object_id(obj.as_ref()));
    tracing::warn!(object = %object_id(obj.as_ref()), error = %error, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Why one pass of a lifecycle stopped short of Ready.
pub enum Stop {
    Problem(Problem),
    Kube(kube::Error),
}

impl From<Problem> for Stop {
    fn from(p: Problem) -> Self {
        Stop::Problem(p)
    }
}
impl From<kube::Error> for Stop {
    fn from(e: kube::Error) -> Self {
        Stop::Kube(e)
    }
}
impl From<crate::twilio::Error> for Stop {
    fn from(e: crate::twilio::Error) -> Self {
        Stop::Problem(e.into())
    }
}

/// `namespace/name`, the key of per-object state.
pub fn object_id<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Writes `status` (which must serialize as the kind's whole status) with server-side apply.
pub async fn write_status<K>(ctx: &Context, obj: &K, status: &impl Serialize) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch =
        serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
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
        ctx.event(
            &obj.object_ref(&()),
            EventType::Warning,
            problem.reason.as_str(),
            "Reconcile",
            problem.message.clone(),
        )
        .await;
    }
    tracing::info!(object = %object_id(obj), reason = problem.reason.as_str(), message = %problem.message, "not ready");
    conditions::ready(
        conditions,
        problem.reason,
        problem.message,
        obj.meta().generation,
        now,
    )
}

/// The problem of a Secret name taken by a Secret this object does not own.
pub fn secret_conflict(secret: &str, kind: &str) -> Problem {
    Problem::new(
        Reason::SecretConflict,
        format!(
            "Secret {secret} exists and is not owned by this {kind}; the operator will not overwrite it. Delete it or set spec.secret.name to another name"
        ),
    )
}

/// A status that carries the Ready condition and observedGeneration.
pub trait Recorded: Serialize {
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn observed_generation_mut(&mut self) -> &mut Option<i64>;
}

impl Recorded for crate::api::TwilioApiKeyStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn observed_generation_mut(&mut self) -> &mut Option<i64> {
        &mut self.observed_generation
    }
}

impl Recorded for crate::api::TwilioSubaccountStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn observed_generation_mut(&mut self) -> &mut Option<i64> {
        &mut self.observed_generation
    }
}

/// Ends a pass: records its outcome (Ready with `message`, or the problem) in status, and says
/// when to look again: at the next deadline, a resync at the latest, or after the backoff.
pub async fn finish<K>(
    ctx: &Context,
    obj: &K,
    mut st: impl Recorded,
    outcome: Result<(String, Option<Timestamp>), Stop>,
    now: Timestamp,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let id = object_id(obj);
    let requeue = match outcome {
        Ok((message, deadline)) => {
            ctx.succeeded(&id);
            *st.observed_generation_mut() = obj.meta().generation;
            let ready = conditions::ready(
                st.conditions_mut(),
                Reason::Ready,
                message,
                obj.meta().generation,
                now,
            );
            *st.conditions_mut() = ready;
            // A second of slack, so the deadline has passed when we wake.
            let until = deadline.map(|t| {
                Duration::try_from(t.duration_since(now)).unwrap_or_default() + Duration::from_secs(1)
            });
            until.map_or(ctx.resync, |d| d.min(ctx.resync))
        }
        Err(Stop::Problem(problem)) => {
            let reported = report(ctx, obj, st.conditions_mut(), problem, now).await;
            *st.conditions_mut() = reported;
            ctx.backoff(&id)
        }
        Err(Stop::Kube(e)) => return Err(e.into()),
    };
    write_status(ctx, obj, &st).await?;
    Ok(Action::requeue(requeue))
}
