//! Wiring of the controllers: which streams wake which reconciler.
//!
//! Contract:
//! - each kind is cached whole but without managedFields; the Secrets are watched metadata-only
//!   and by label, so the operator never caches a Secret it does not own;
//! - TwilioSubaccount changes wake the keys that reference them, and key changes wake the
//!   subaccounts of their namespace (which count them);
//! - a TwilioAccount change wakes the objects that use it, and a Namespace change (its labels)
//!   the objects in it, so policy edits take effect without a restart;
//! - an object that cannot be read as its kind is reported with a Warning event and left out of
//!   the caches until it is repaired ([`readable`]), so it never stalls the watch of the others;
//! - TwilioAccounts and Namespace metadata are cached cluster-wide for the life of the process
//!   ([`shared_caches`]), leader or not, and the controllers start once those caches are full;
//! - with a namespace list, each namespace gets its own watches of the namespaced kinds (and the
//!   operator needs no cluster-wide access to Secrets); without one, the whole cluster is watched.

use crate::account::{self, Accounts};
use crate::api::{TwilioAccount, TwilioApiKey, TwilioSubaccount};
use crate::apikey::ApiKeys;
use crate::context::Context;
use crate::context::publish;
use crate::reconcile::{self, Lifecycle, Object};
use crate::secret::MANAGED_SELECTOR;
use crate::subaccount::Subaccounts;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

/// The caches of every TwilioAccount and every Namespace's metadata, and the future that keeps
/// them current (run it for the life of the process).
pub fn shared_caches(
    client: &kube::Client,
    recorder: &Recorder,
) -> (
    (Store<TwilioAccount>, Store<PartialObjectMeta<Namespace>>),
    impl Future<Output = ()> + Send + 'static,
) {
    let (accounts, accounts_writer) = reflector::store::<TwilioAccount>();
    let (namespaces, namespaces_writer) = reflector::store();
    let accounts_watch = readable(
        Api::all(client.clone()),
        watcher::Config::default(),
        &accounts,
        recorder,
    )
    .modify(|o| o.managed_fields_mut().clear())
    .reflect(accounts_writer)
    .for_each(|_| futures::future::ready(()));
    let namespaces_watch = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|o| o.managed_fields_mut().clear())
    .reflect(namespaces_writer)
    .for_each(|_| futures::future::ready(()));
    let run = async move {
        tokio::join!(accounts_watch, namespaces_watch);
    };
    ((accounts, namespaces), run)
}

/// Runs every controller until `stop` turns true: the namespaced kinds over each of `scopes`
/// (`None` for the whole cluster), TwilioAccounts once, and, with `default_account` (a ConfigMap
/// in the operator's namespace), the account the chart describes. In-flight reconciles finish
/// first.
pub async fn run(
    ctx: Arc<Context>,
    scopes: &[Option<String>],
    default_account: Option<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    // Policy decisions need the caches: deciding from empty ones would refuse everything.
    let _ = tokio::join!(
        ctx.cluster.accounts.wait_until_ready(),
        ctx.cluster.namespaces.wait_until_ready()
    );
    let namespaced = scopes.iter().map(|scope| {
        let (ctx, stop, ns) = (ctx.clone(), stop.clone(), scope.as_deref());
        async move {
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
    });
    let chart_account = async {
        if let Some(configmap) = default_account {
            account::keep_applied(ctx.clone(), configmap, until(stop.clone())).await;
        }
    };
    tokio::join!(
        futures::future::join_all(namespaced),
        run_accounts(ctx.clone(), until(stop.clone())),
        chart_account
    );
}

/// Runs the TwilioAccount controller.
async fn run_accounts(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (reader, writer) = reflector::store::<TwilioAccount>();
    let objects = readable(
        Api::all(ctx.client.clone()),
        watcher::Config::default(),
        &reader,
        &ctx.recorder,
    )
    .modify(|o| o.managed_fields_mut().clear())
    .reflect(writer)
    .touched_objects();
    let results = Controller::for_stream(objects, reader)
        .graceful_shutdown_on(shutdown)
        .run(
            account::reconcile,
            account::error_policy,
            Arc::new(Accounts::new(ctx)),
        );
    drain(results).await;
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
    objects_where(keys, |k| {
        k.namespace() == ns && k.spec.subaccount_ref.as_ref().is_some_and(|r| r.name == name)
    })
}

/// The subaccounts of `key`'s namespace: they count the keys, so keys coming and going wake them.
fn subaccounts_of_key(
    subaccounts: &Store<TwilioSubaccount>,
    key: PartialObjectMeta<TwilioApiKey>,
) -> Vec<ObjectRef<TwilioSubaccount>> {
    let ns = key.namespace();
    objects_where(subaccounts, |s| s.namespace() == ns)
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
    let objects = readable(
        scoped(&client, ns),
        watcher::Config::default(),
        &reader,
        &ctx.recorder,
    )
    .modify(|o| o.managed_fields_mut().clear())
    .reflect(writer)
    .touched_objects();
    let others = watcher(
        scoped::<PartialObjectMeta<R>>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let accounts = watcher(
        Api::<PartialObjectMeta<TwilioAccount>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    // Only the namespace this scope watches, when it watches one.
    let scope = ns.map_or_else(watcher::Config::default, |n| {
        watcher::Config::default().fields(&format!("metadata.name={n}"))
    });
    let namespaces = watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), scope)
        .default_backoff()
        .touched_objects();
    let (store, users, residents) = (reader.clone(), reader.clone(), reader.clone());
    let results = Controller::for_stream(objects, reader)
        .owns_stream(owned_secrets(&client, ns))
        .watches_stream(others, move |other| related(&store, other))
        .watches_stream(accounts, move |account: PartialObjectMeta<TwilioAccount>| {
            let name = account.name_any();
            objects_where(&users, |o| L::account_name(o).is_some_and(|n| n == name))
        })
        .watches_stream(namespaces, move |namespace: PartialObjectMeta<Namespace>| {
            let name = Some(namespace.name_any());
            objects_where(&residents, |o| o.namespace() == name)
        })
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

/// Watches `api`, leaving out every object that cannot be read as `K`: each is reported with a
/// Warning event and leaves `cache` (the store this stream feeds) until it is repaired. Without
/// this, one such object fails every list and watch of its kind, and nothing of that kind is
/// reconciled any more.
fn readable<K>(
    api: Api<DeserializeGuard<K>>,
    config: watcher::Config,
    cache: &Store<K>,
    recorder: &Recorder,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (cache, recorder) = (cache.clone(), recorder.clone());
    watcher(api, config)
        .default_backoff()
        .try_filter_map(move |event| {
            let (cache, recorder) = (cache.clone(), recorder.clone());
            async move { Ok(read(event, &cache, &recorder).await) }
        })
}

/// One watch event as `K`, or `None` when it carries nothing `K`'s cache can use.
async fn read<K>(
    event: watcher::Event<DeserializeGuard<K>>,
    cache: &Store<K>,
    recorder: &Recorder,
) -> Option<watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
    match event {
        Init => Some(Init),
        InitDone => Some(InitDone),
        InitApply(DeserializeGuard(Ok(o))) => Some(InitApply(o)),
        Apply(DeserializeGuard(Ok(o))) => Some(Apply(o)),
        Delete(DeserializeGuard(Ok(o))) => Some(Delete(o)),
        // A relist rebuilds the cache from what it reads, so leaving the object out is enough.
        InitApply(bad) => {
            report_unreadable(&bad, recorder).await;
            None
        }
        Apply(bad) => {
            report_unreadable(&bad, recorder).await;
            forget(cache, &bad)
        }
        Delete(bad) => forget(cache, &bad),
    }
}

/// Tells the object's owners why the operator ignores it.
async fn report_unreadable<K: Resource<DynamicType = ()>>(bad: &DeserializeGuard<K>, recorder: &Recorder) {
    let Err(invalid) = &bad.0 else { return };
    let id = reconcile::object_id(bad);
    tracing::warn!(object = %id, error = %invalid, "cannot read object; it is not reconciled until repaired");
    let note = format!(
        "The operator cannot read this object ({invalid}), so it does not reconcile it; correct the \
         field, for example with kubectl edit, and it is reconciled again."
    );
    publish(recorder, bad, EventType::Warning, "InvalidObject", "Read", note).await;
}

/// A deletion of the last readable version of `bad` from `cache`, if the cache holds one: an
/// object that can no longer be read is not reconciled from a stale copy.
fn forget<K: Resource<DynamicType = ()> + Clone>(
    cache: &Store<K>,
    bad: &DeserializeGuard<K>,
) -> Option<watcher::Event<K>> {
    let mut key = ObjectRef::new(bad.meta().name.as_deref()?);
    if let Some(ns) = &bad.meta().namespace {
        key = key.within(ns);
    }
    cache
        .get(&key)
        .map(|last| watcher::Event::Delete((*last).clone()))
}

/// The objects in `store` that `keep` selects.
fn objects_where<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    keep: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|o| keep(o))
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
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
