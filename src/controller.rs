//! Wiring of the controllers: which streams wake which reconciler.
//!
//! Contract:
//! - each kind is cached whole but without managedFields; the Secrets are watched metadata-only
//!   and by label, so the operator never caches a Secret it does not own;
//! - TwilioSubaccount changes wake the keys that reference them, and key changes wake the
//!   subaccounts of their namespace (which count them);
//! - with a namespace list, each namespace gets its own watches (and the operator needs no
//!   cluster-wide read access); without one, the whole cluster is watched.

use crate::api::{TwilioApiKey, TwilioSubaccount};
use crate::apikey::ApiKeys;
use crate::context::Context;
use crate::reconcile::{self, Lifecycle, Object};
use crate::secret::MANAGED_SELECTOR;
use crate::subaccount::Subaccounts;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::future::Future;
use std::sync::Arc;

/// Runs both controllers over `namespace` (or all) until `stop` turns true; in-flight
/// reconciles finish first.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, stop: tokio::sync::watch::Receiver<bool>) {
    let ns = namespace.as_deref();
    tokio::join!(
        run_kind(
            Arc::new(ApiKeys::new(ctx.clone())),
            ns,
            until(stop.clone()),
            keys_of_subaccount
        ),
        run_kind(
            Arc::new(Subaccounts::new(ctx)),
            ns,
            until(stop),
            subaccounts_of_key
        ),
    );
}

/// Completes once `stop` turns true (or its sender is gone).
// Not an `async fn`: graceful_shutdown_on needs the future to be Sync, which only a written-out
// signature promises.
#[allow(clippy::manual_async_fn)]
pub fn until(
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + Sync + 'static {
    async move {
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// The keys that live in the subaccount `sub`.
fn keys_of_subaccount(
    keys: &Store<TwilioApiKey>,
    sub: PartialObjectMeta<TwilioSubaccount>,
) -> Vec<ObjectRef<TwilioApiKey>> {
    let (ns, name) = (sub.namespace(), sub.name_any());
    keys.state()
        .iter()
        .filter(|k| k.namespace() == ns && k.spec.subaccount_ref.as_ref().is_some_and(|r| r.name == name))
        .map(|k| ObjectRef::from_obj(&**k))
        .collect()
}

/// The subaccounts of `key`'s namespace: they count the keys, so keys coming and going wake them.
fn subaccounts_of_key(
    subaccounts: &Store<TwilioSubaccount>,
    key: PartialObjectMeta<TwilioApiKey>,
) -> Vec<ObjectRef<TwilioSubaccount>> {
    let ns = key.namespace();
    subaccounts
        .state()
        .iter()
        .filter(|s| s.namespace() == ns)
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

/// Maps an object of another kind to the objects of kind `K` it concerns.
type Related<K, R> = fn(&Store<K>, PartialObjectMeta<R>) -> Vec<ObjectRef<K>>;

/// Runs the controller of `L`'s kind: its own objects, the Secrets it owns, and the objects of
/// kind `R` that `related` maps to objects of this kind.
async fn run_kind<L, R>(
    lifecycle: Arc<L>,
    ns: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    related: Related<L::Kind, R>,
) where
    L: Lifecycle,
    R: Object,
{
    let ctx = lifecycle.context();
    let client = ctx.client.clone();
    let metrics = ctx.metrics.clone();
    let (reader, writer) = reflector::store::<L::Kind>();
    let objects = watcher(scoped::<L::Kind>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    let others = watcher(
        scoped::<PartialObjectMeta<R>>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let store = reader.clone();
    let results = Controller::for_stream(objects, reader)
        .owns_stream(owned_secrets(&client, ns))
        .watches_stream(others, move |other| related(&store, other))
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, lifecycle| {
                let metrics = metrics.clone();
                async move {
                    let started = std::time::Instant::now();
                    let result = reconcile::reconcile(obj, lifecycle).await;
                    metrics.reconciled(L::KIND, result.is_ok(), started.elapsed());
                    result
                }
            },
            reconcile::error_policy,
            lifecycle,
        );
    drain(results).await;
}

fn scoped<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The Secrets this operator owns, metadata only: the only Secrets it ever watches.
fn owned_secrets(
    client: &kube::Client,
    ns: Option<&str>,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    watcher(
        scoped::<PartialObjectMeta<Secret>>(client, ns),
        watcher::Config::default().labels(MANAGED_SELECTOR),
    )
    .default_backoff()
    .modify(|s| s.managed_fields_mut().clear())
    .touched_objects()
}

async fn drain<T, E: std::fmt::Display>(results: impl Stream<Item = Result<T, E>>) {
    results
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
