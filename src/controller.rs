//! Wiring of the controllers: which streams wake which reconciler.
//!
//! Contract:
//! - TwilioApiKey objects are cached whole but without managedFields; their Secrets are watched
//!   metadata-only and by label, so the operator never caches a Secret it does not own;
//! - TwilioSubaccount changes wake the keys that reference them;
//! - with a namespace list, each namespace gets its own watches (and the operator needs no
//!   cluster-wide read access); without one, the whole cluster is watched.

use crate::api::{TwilioApiKey, TwilioSubaccount};
use crate::context::Context;
use crate::secret::MANAGED_SELECTOR;
use crate::{apikey, reconcile, subaccount};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

fn scoped<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs both controllers over `namespace` (or all) until `stop` turns true; in-flight
/// reconciles finish first.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, stop: tokio::sync::watch::Receiver<bool>) {
    tokio::join!(
        run_apikeys(ctx.clone(), namespace.clone(), until(stop.clone())),
        run_subaccounts(ctx, namespace, until(stop))
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

async fn run_apikeys(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let (reader, keys) = cached::<TwilioApiKey>(&client, ns);
    let subaccounts = watcher(
        scoped::<PartialObjectMeta<TwilioSubaccount>>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let store = reader.clone();
    let keys_of = move |sub: PartialObjectMeta<TwilioSubaccount>| {
        let (sub_ns, sub_name) = (sub.namespace(), sub.name_any());
        store
            .state()
            .into_iter()
            .filter(|k| {
                k.namespace() == sub_ns && k.spec.subaccount_ref.as_ref().is_some_and(|r| r.name == sub_name)
            })
            .map(|k| ObjectRef::from_obj(&*k))
            .collect::<Vec<_>>()
    };
    let results = Controller::for_stream(keys, reader)
        .owns_stream(owned_secrets(&client, ns))
        .watches_stream(subaccounts, keys_of)
        .graceful_shutdown_on(shutdown)
        .run(
            timed("TwilioApiKey", apikey::reconcile),
            reconcile::error_policy,
            ctx,
        );
    drain(results).await;
}

async fn run_subaccounts(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let (reader, subaccounts) = cached::<TwilioSubaccount>(&client, ns);
    // Keys come and go: the subaccounts of their namespace recount them.
    let keys = watcher(
        scoped::<PartialObjectMeta<TwilioApiKey>>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let store = reader.clone();
    let subaccounts_of = move |key: PartialObjectMeta<TwilioApiKey>| {
        let key_ns = key.namespace();
        store
            .state()
            .into_iter()
            .filter(|s| s.namespace() == key_ns)
            .map(|s| ObjectRef::from_obj(&*s))
            .collect::<Vec<_>>()
    };
    let results = Controller::for_stream(subaccounts, reader)
        .owns_stream(owned_secrets(&client, ns))
        .watches_stream(keys, subaccounts_of)
        .graceful_shutdown_on(shutdown)
        .run(
            timed("TwilioSubaccount", subaccount::reconcile),
            reconcile::error_policy,
            ctx,
        );
    drain(results).await;
}

/// A watch of `K` feeding a store, with managedFields dropped before anything keeps them.
fn cached<K>(
    client: &kube::Client,
    ns: Option<&str>,
) -> (
    reflector::Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = watcher(scoped::<K>(client, ns), watcher::Config::default())
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    (reader, stream)
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

/// `reconcile`, counted and timed in the metrics.
fn timed<K, F, Fut>(
    kind: &'static str,
    reconcile: F,
) -> impl Fn(Arc<K>, Arc<Context>) -> futures::future::BoxFuture<'static, Result<Action, reconcile::Error>>
where
    K: Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, reconcile::Error>> + Send + 'static,
{
    move |obj, ctx| {
        let reconcile = reconcile.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let result = reconcile(obj, ctx.clone()).await;
            ctx.metrics.reconciled(kind, result.is_ok(), started.elapsed());
            result
        })
    }
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
