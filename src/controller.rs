//! Wiring of the controllers: which watches feed which reconciler.
//!
//! Contract:
//! - per scope (a namespace, or the whole cluster), each kind is watched once, cached once
//!   without managedFields or kubectl's last-applied copy, and that cache and its events are
//!   shared by both controllers (wake-ups pass from one watch to the other controller directly,
//!   deletions included); the operator's Secrets are watched once, metadata only and by label,
//!   so the operator never caches a Secret it does not own, and of its own it keeps only their
//!   resourceVersions;
//! - no watched change wakes an object when it brings a version the operator wrote (holding
//!   nothing else) or wrote over, nor a key when it brings a version of its Secret its last pass
//!   wrote or read: that pass knew all of it. Lists always wake;
//! - a key wakes the subaccount it names only when it joins or leaves it ([`Membership`]), and
//!   a subaccount wakes its keys only when what they read of it changes ([`KeyViews`]), so
//!   status writes do not ripple;
//! - TwilioAccounts and Namespace metadata are cached cluster-wide for the life of the process
//!   ([`shared_caches`]), leader or not; the namespaced kinds list their objects while those
//!   caches fill, but no pass starts before they are full;
//!   a change there wakes the objects that use the account or live in the namespace;
//! - an object that cannot be read as its kind is reported with a Warning event and left out of
//!   the caches until it is repaired ([`readable`]), so it never stalls the watch of the others;
//! - keys are reconciled as the first list of them arrives, not once it is complete, so with
//!   thousands present the first pass starts within a second of start ([`reconciled_as_listed`]);
//!   subaccounts wait for their whole list, and a key that names one waits for it too;
//! - each controller runs at most a bounded number of reconciles at once, sized to the Twilio
//!   client's concurrency, so a burst holds bounded memory;
//! - the resync is the scope's: each resync interval every cached object is woken once, a slice
//!   at a time ([`resyncs`]), unless its backoff is due to bring it; an object schedules its own
//!   wake-up only for a deadline before that;
//! - an object the watch no longer shows (deleted, or relabelled out of this shard) is let go:
//!   what the process kept about it goes ([`reconcile::departed`]);
//! - with a label selector, only the namespaced objects it matches are watched: operators with
//!   disjoint selectors are disjoint shards (Twilio's limits are per account, so shard by
//!   account; a key and its subaccount share a shard). Every shard reconciles TwilioAccounts;
//! - with a namespace list, each namespace gets its own watches of the namespaced kinds (and the
//!   operator needs no cluster-wide access to Secrets); without one, the whole cluster is watched.

use crate::account::{self, Accounts};
use crate::api::{TwilioAccount, TwilioApiKey, TwilioSubaccount};
use crate::apikey::ApiKeys;
use crate::budget::callbacks::Callbacks;
use crate::context::Recorder;
use crate::context::{Changed, Context, publish};
use crate::membership::{KeyViews, Membership};
use crate::objects;
use crate::reconcile::{self, Lifecycle};
use crate::secret::{self, MANAGED_SELECTOR};
use crate::subaccount::Subaccounts;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt::Debug;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Changes of TwilioAccounts and Namespaces held for a controller that is behind (a relist sends
/// one per object); one further behind is told it missed some.
const CHANGES_BUFFER: usize = 4096;

/// The cluster-wide caches: every TwilioAccount, every Namespace's metadata, the sender of what
/// changes in them, and whether both hold their first full list yet.
pub type Caches = (
    Store<TwilioAccount>,
    Store<PartialObjectMeta<Namespace>>,
    broadcast::Sender<Changed>,
    tokio::sync::watch::Receiver<bool>,
);

/// The cluster-wide caches, and the future that keeps them current (run it for the life of the
/// process).
pub fn shared_caches(
    client: &kube::Client,
    recorder: &Recorder,
) -> (Caches, impl Future<Output = ()> + Send + 'static) {
    let (accounts, accounts_writer) = reflector::store::<TwilioAccount>();
    let (namespaces, namespaces_writer) = reflector::store();
    let (changes, _) = broadcast::channel(CHANGES_BUFFER);
    let (account_changes, namespace_changes) = (changes.clone(), changes.clone());
    let accounts_watch = readable(
        Api::all(client.clone()),
        watcher::Config::default(),
        &accounts,
        recorder,
    )
    .modify(slim)
    .reflect(accounts_writer)
    .touched_objects()
    .for_each(move |touched| {
        if let Ok(account) = touched {
            // Nobody listens while this process is not the leader.
            let _ = account_changes.send(Changed::Account(account.name_any()));
        }
        futures::future::ready(())
    });
    let namespaces_watch = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(slim)
    .reflect(namespaces_writer)
    .touched_objects()
    .for_each(move |touched| {
        if let Ok(namespace) = touched {
            let _ = namespace_changes.send(Changed::Namespace(namespace.name_any()));
        }
        futures::future::ready(())
    });
    let (accounts_ready, namespaces_ready) = (accounts.clone(), namespaces.clone());
    let (filled, announce) = flag_once(async move {
        let _ = tokio::join!(
            accounts_ready.wait_until_ready(),
            namespaces_ready.wait_until_ready()
        );
    });
    let run = async move {
        tokio::join!(accounts_watch, namespaces_watch, announce);
    };
    ((accounts, namespaces, changes, filled), run)
}

/// A flag that turns true once `done` completes, and the future that turns it (run it). Any
/// number of tasks can wait on the flag; a Store's own `wait_until_ready` wakes only the last of
/// several that wait on it at once (kube-runtime keeps a single waker), leaving the others
/// stuck until something else polls them.
fn flag_once(
    done: impl Future<Output = ()> + Send + 'static,
) -> (
    tokio::sync::watch::Receiver<bool>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (rx, async move {
        done.await;
        let _ = tx.send(true);
    })
}

/// What this operator reconciles of the namespaced kinds.
pub struct Watch {
    /// The namespaces, each its own scope; `None` for the whole cluster.
    pub scopes: Vec<Option<String>>,
    /// The label selector of this operator's shard; `None` for every object.
    pub selector: Option<String>,
}

/// Runs every controller until `stop` turns true: the namespaced kinds over each scope of
/// `watch`, TwilioAccounts once, and, with `default_account` (a ConfigMap in the operator's
/// namespace), the account the chart describes. In-flight reconciles finish first.
pub async fn run(
    ctx: Arc<Context>,
    callbacks: Arc<Callbacks>,
    watch: &Watch,
    default_account: Option<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    // Initial lists come in pages: keys are reconciled as their page arrives, and the operator
    // never holds the whole list of ten thousand objects (as text, then parsed) at once, a peak
    // its memory would otherwise keep.
    let listed = watcher::Config::default();
    let selected = watch
        .selector
        .as_deref()
        .map_or_else(|| listed.clone(), |s| listed.clone().labels(s));
    let namespaced = watch.scopes.iter().map(|scope| {
        let (ctx, callbacks) = (ctx.clone(), callbacks.clone());
        run_scope(ctx, callbacks, scope.as_deref(), selected.clone(), stop.clone())
    });
    // The scopes list their objects meanwhile; each of their passes waits for the caches too.
    let accounts = async {
        ctx.cluster.ready().await;
        run_accounts(ctx.clone(), until(stop.clone())).await;
    };
    let chart_account = async {
        ctx.cluster.ready().await;
        if let Some(configmap) = default_account {
            account::keep_applied(ctx.clone(), configmap, until(stop.clone())).await;
        }
    };
    tokio::join!(futures::future::join_all(namespaced), accounts, chart_account);
}

/// Runs the TwilioAccount controller over the shared cache: every account once at start, then
/// each change.
async fn run_accounts(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let store = ctx.cluster.accounts.clone();
    let all = |store: &Store<TwilioAccount>| -> Vec<ObjectRef<TwilioAccount>> {
        store.state().iter().map(|a| ObjectRef::from_obj(&**a)).collect()
    };
    // Subscribed before the snapshot is taken, so an account made in between is not missed.
    let changed = changes(&ctx);
    let existing = all(&store);
    let snapshot = store.clone();
    let accounts = Arc::new(Accounts::new(ctx.clone()));
    let memory = accounts.clone();
    let changed = changed.flat_map(move |change| {
        let refs = match change {
            // A deleted account is not reconciled: what is kept for it goes now.
            Some(Changed::Account(name)) if snapshot.get(&ObjectRef::new(&name)).is_none() => {
                memory.forget(&name);
                Vec::new()
            }
            Some(Changed::Account(name)) => vec![ObjectRef::new(&name)],
            Some(Changed::Namespace(_) | Changed::Spend(..)) => Vec::new(),
            // Some changes were missed: there are few accounts, so look at each again.
            None => all(&snapshot),
        };
        futures::stream::iter(refs)
    });
    let results = Controller::for_stream(futures::stream::empty(), store)
        .reconcile_on(futures::stream::iter(existing).chain(changed))
        .with_config(bounded(&ctx))
        .graceful_shutdown_on(shutdown)
        .run(account::reconcile, account::error_policy, accounts);
    drain(results).await;
}

/// The changes of the cluster-wide caches from now on; `None` stands for changes missed by
/// falling behind.
fn changes(ctx: &Context) -> impl Stream<Item = Option<Changed>> + Send + 'static + use<> {
    futures::stream::unfold(ctx.cluster.changes.subscribe(), |mut rx| async move {
        match rx.recv().await {
            Ok(change) => Some((Some(change), rx)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "fell behind the cache changes");
                Some((None, rx))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// A controller configuration with reconcile concurrency sized to Twilio's: enough to keep every
/// Twilio slot busy while other passes write to Kubernetes, and no more.
fn bounded(ctx: &Context) -> controller::Config {
    controller::Config::default().concurrency((2 * ctx.twilio.max_concurrency()).max(4) as u16)
}

/// Both namespaced controllers over one scope: one watch and one cache of each kind, and one
/// watch of the operator's Secrets, whose events wake the objects they concern. The wake-ups go
/// straight from one watch to the other controller, deletions included (kube's shared streams
/// would drop those: they hand out what the cache still holds).
async fn run_scope(
    ctx: Arc<Context>,
    callbacks: Arc<Callbacks>,
    ns: Option<&str>,
    selected: watcher::Config,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = &ctx.client;
    let membership = Arc::new(Membership::default());
    let (keys, keys_writer) = reflector::store::<TwilioApiKey>();
    let (subs, subs_writer) = reflector::store::<TwilioSubaccount>();
    let (wake_keys, keys_to_wake) = mpsc::unbounded_channel();
    let (wake_subs, subs_to_wake) = mpsc::unbounded_channel();

    let versions = Arc::new(secret::Versions::default());
    let subs_ready = subs.clone();
    let (subs_listed, announce_listed) = flag_once(async move {
        let _ = subs_ready.wait_until_ready().await;
    });
    let apikeys = Arc::new(ApiKeys::new(
        ctx.clone(),
        (subs.clone(), subs_listed),
        versions.clone(),
    ));
    let subaccounts = Arc::new(Subaccounts::new(ctx.clone(), membership.clone(), callbacks));

    // A key joining or leaving a subaccount wakes that subaccount, and nothing else does.
    let (index, wake, lifecycle) = (membership.clone(), wake_subs.clone(), apikeys.clone());
    let key_events = readable(scoped(client, ns), selected.clone(), &keys, &ctx.recorder)
        .modify(slim)
        .inspect_ok(move |event| {
            for sub in index.observe(event) {
                let _ = wake.send(sub);
            }
            forget_departed(lifecycle.as_ref(), event);
        });
    let key_events = reconciled_as_listed(key_events)
        .reflect(keys_writer)
        .try_filter(not_acted_on(ctx.clone()))
        .touched_objects();
    // A subaccount wakes its keys when what they read of it changes.
    let (index, wake, mut views) = (membership.clone(), wake_keys.clone(), KeyViews::default());
    let lifecycle = subaccounts.clone();
    let sub_events = readable(scoped(client, ns), selected, &subs, &ctx.recorder)
        .modify(slim)
        .inspect_ok(move |event| {
            for sub in views.observe(event) {
                for key in index.keys_of(&sub) {
                    let _ = wake.send(key);
                }
            }
            forget_departed(lifecycle.as_ref(), event);
        })
        .reflect(subs_writer)
        .try_filter(not_acted_on(ctx.clone()))
        .touched_objects();
    // An owned Secret that changes or goes wakes its owner, once its version is known, unless
    // the owner's last pass wrote or read that very version.
    let known = versions;
    let secret_owners = apikeys.clone();
    let secrets = watcher(
        scoped::<PartialObjectMeta<Secret>>(client, ns),
        watcher::Config::default().any_semantic().labels(MANAGED_SELECTOR),
    )
    .default_backoff()
    .inspect_ok(move |event| known.observe(event))
    .touched_objects()
    .for_each(move |secret| {
        if let Ok(secret) = secret {
            let namespace = secret.namespace().unwrap_or_default();
            for owner in secret
                .owner_references()
                .iter()
                .filter(|o| o.controller == Some(true))
            {
                if !owner.api_version.starts_with(crate::api::GROUP) {
                    continue;
                }
                // A send fails only once its controller has stopped.
                match owner.kind.as_str() {
                    "TwilioApiKey"
                        if secret_owners
                            .has_seen_secret(&owner.uid, secret.resource_version().as_deref()) => {}
                    "TwilioApiKey" => drop(wake_keys.send(ObjectRef::new(&owner.name).within(&namespace))),
                    "TwilioSubaccount" => {
                        drop(wake_subs.send(ObjectRef::new(&owner.name).within(&namespace)))
                    }
                    _ => {}
                }
            }
        }
        futures::future::ready(())
    });

    let key_controller = Controller::for_stream(futures::stream::empty(), keys.clone()).reconcile_on(
        futures::stream::select(references(key_events), receiver_stream(keys_to_wake)),
    );
    let keys_done = run_kind(apikeys, key_controller, &keys, ns, until(stop.clone()));
    let sub_controller = Controller::for_stream(futures::stream::empty(), subs.clone()).reconcile_on(
        futures::stream::select(references(sub_events), receiver_stream(subs_to_wake)),
    );
    let subs_done = run_kind(subaccounts, sub_controller, &subs, ns, until(stop.clone()));
    // The Secret watch ends when both controllers have: nobody is woken any more.
    tokio::select! {
        _ = async { tokio::join!(keys_done, subs_done, announce_listed) } => {}
        _ = secrets => {}
    }
}

/// Whether a watch event is other than a change to a version this process wrote or wrote over:
/// the pass that made such a version knew all of it, so another would only repeat it (about two
/// passes per created key, before). Lists always pass: a relist after the watch fell behind may
/// carry, in the operator's own unconditional write, a change somebody made meanwhile whose own
/// event it never delivers.
fn not_acted_on<K: Resource>(
    ctx: Arc<Context>,
) -> impl FnMut(&watcher::Event<K>) -> futures::future::Ready<bool> {
    move |event| futures::future::ready(!own_change(event, |uid, version| ctx.acted_on(uid, version)))
}

/// Whether `event` reports a change to a version that `acted_on` (by UID and resourceVersion)
/// knows; a list's objects never count.
fn own_change<K: Resource>(event: &watcher::Event<K>, acted_on: impl Fn(&str, Option<&str>) -> bool) -> bool {
    match event {
        watcher::Event::Apply(o) => acted_on(
            o.meta().uid.as_deref().unwrap_or_default(),
            o.meta().resource_version.as_deref(),
        ),
        _ => false,
    }
}

/// Lets go of an object the watch no longer shows: deleted, or no longer selected by this
/// shard's label selector.
fn forget_departed<L: Lifecycle>(lifecycle: &L, event: &watcher::Event<L::Kind>) {
    if let watcher::Event::Delete(obj) = event {
        reconcile::departed(lifecycle, obj);
    }
}

/// A [`objects::reference`] to each object of `touched`: the controller keeps one for every
/// object it has scheduled, that is each object until its next deadline, retry or resync.
fn references<K: Resource<DynamicType = ()> + 'static>(
    touched: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static {
    touched.filter_map(|object| {
        let reference = match object {
            Ok(object) => Some(objects::reference(&object)),
            Err(e) => {
                tracing::debug!(error = %e, "watch");
                None
            }
        };
        futures::future::ready(reference)
    })
}

/// The receiving end of `rx` as a stream.
fn receiver_stream<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// Runs `controller` (of `L`'s kind, fed by the scope's shared watches) until `shutdown`, also
/// woken by the cluster-wide changes that concern its objects: the TwilioAccount they use, the
/// Namespace they live in.
async fn run_kind<L: Lifecycle>(
    lifecycle: Arc<L>,
    controller: Controller<L::Kind>,
    store: &Store<L::Kind>,
    ns: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = lifecycle.context();
    let metrics = ctx.metrics.clone();
    let (cache, scope) = (store.clone(), ns.map(str::to_owned));
    // Subscribed once the caches are full: their first fill concerns nobody, and each change of
    // it would scan the scope's objects.
    let filled = lifecycle.clone();
    let after_fill = futures::stream::once(async move {
        let ctx = filled.context();
        ctx.cluster.ready().await;
        changes(ctx)
    })
    .flatten();
    let concerned = after_fill.flat_map(move |change| {
        let store = &cache;
        let refs = match change {
            Some(Changed::Account(name)) => {
                objects_where(store, |o| L::account_name(o).is_some_and(|n| n == name))
            }
            Some(Changed::Namespace(name)) if scope.as_ref().is_none_or(|s| *s == name) => {
                objects_where(store, |o| o.namespace().as_deref() == Some(name.as_str()))
            }
            // Missed changes: each object looks again at its next deadline or resync.
            Some(Changed::Spend(namespace, name))
                if L::KIND == "TwilioSubaccount" && scope.as_ref().is_none_or(|s| *s == namespace) =>
            {
                vec![ObjectRef::new(&name).within(&namespace)]
            }
            Some(Changed::Namespace(_) | Changed::Spend(..)) | None => Vec::new(),
        };
        futures::stream::iter(refs)
    });
    let results = controller
        .reconcile_on(futures::stream::select(
            concerned,
            resyncs(lifecycle.clone(), store.clone()),
        ))
        .with_config(bounded(ctx))
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, lifecycle| {
                let metrics = metrics.clone();
                async move {
                    // Policy decisions need the cluster caches: the scope's lists load while
                    // they fill, and no pass decides before they are full.
                    lifecycle.context().cluster.ready().await;
                    let started = std::time::Instant::now();
                    let result = reconcile::reconcile(obj, lifecycle).await;
                    let unreported = result.as_ref().is_err_and(|e| !e.is_reported());
                    metrics.reconciled(L::KIND, unreported, started.elapsed());
                    result
                }
            },
            reconcile::error_policy,
            lifecycle,
        );
    drain(results).await;
}

/// What a cached object needs of its metadata: not its managedFields, nor the copy of the whole
/// object `kubectl apply` keeps in an annotation, which together are most of a small object.
/// Both go with their allocations: a cleared list keeps its room, and a map left empty its node.
fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(reconcile::LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The watch's first list as it arrives: the cache it feeds counts as filled at once, and each
/// listed object enters it (and is reconciled) as soon as it is read, not all together once
/// the list of thousands is complete. Later relists pass unchanged, so objects that went while
/// the watch was down still leave the cache.
fn reconciled_as_listed<K: Send + 'static, E: Send + 'static>(
    events: impl Stream<Item = Result<watcher::Event<K>, E>> + Send,
) -> impl Stream<Item = Result<watcher::Event<K>, E>> + Send {
    use watcher::Event::{Apply, Init, InitApply, InitDone};
    let (mut first, mut started) = (true, false);
    events.flat_map(move |event| {
        // A first list that failed part way starts over with another Init: that one is a relist,
        // which must replace what the cache holds only once it is whole.
        if matches!(event, Ok(Init)) {
            first &= !std::mem::replace(&mut started, true);
        }
        let events = match event {
            Ok(Init) if first => vec![Ok(Init), Ok(InitDone)],
            Ok(InitApply(o)) if first => vec![Ok(Apply(o))],
            Ok(InitDone) if first => {
                first = false;
                Vec::new()
            }
            other => vec![other],
        };
        futures::stream::iter(events)
    })
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

/// Watches `api`, leaving out every object that cannot be read as `K`: each is reported with a
/// Warning event and leaves `cache` (the store this stream feeds) until it is repaired. Without
/// this, one such object fails every list and watch of its kind, and nothing of that kind is
/// reconciled any more.
fn readable<K>(
    api: Api<Readable<K>>,
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
    event: watcher::Event<Readable<K>>,
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
        InitApply(Readable(Ok(o))) => Some(InitApply(o)),
        Apply(Readable(Ok(o))) => Some(Apply(o)),
        Delete(Readable(Ok(o))) => Some(Delete(o)),
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
async fn report_unreadable<K: Resource<DynamicType = ()>>(bad: &Readable<K>, recorder: &Recorder) {
    let Err(invalid) = &bad.0 else { return };
    let invalid = &invalid.error;
    let id = objects::object_id(bad);
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
    bad: &Readable<K>,
) -> Option<watcher::Event<K>> {
    let mut key = ObjectRef::new(bad.meta().name.as_deref()?);
    if let Some(ns) = &bad.meta().namespace {
        key = key.within(ns);
    }
    cache
        .get(&key)
        .map(|last| watcher::Event::Delete((*last).clone()))
}

/// An object as a watch delivers it: readable as `K`, or only its metadata and why not.
#[derive(Clone, Debug)]
struct Readable<K>(Result<K, Unreadable>);

#[derive(Clone, Debug)]
struct Unreadable {
    error: String,
    metadata: ObjectMeta,
}

/// Reads the object's JSON once as `K`, and only when that fails a second time for its
/// metadata. (kube's `DeserializeGuard` buffers every object as a generic value tree, copies it
/// and reads `K` from the copy: a quarter of the operator's CPU under a burst of status writes.)
impl<'de, K: DeserializeOwned + Resource> Deserialize<'de> for Readable<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        match serde_json::from_str::<K>(raw.get()) {
            Ok(object) => Ok(Self(Ok(object))),
            Err(error) => {
                let PartialObjectMeta::<K> { metadata, .. } =
                    serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
                let error = error.to_string();
                Ok(Self(Err(Unreadable { error, metadata })))
            }
        }
    }
}

impl<K: Resource> Resource for Readable<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.as_ref().map_or_else(|bad| &bad.metadata, K::meta)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.as_mut().map_or_else(|bad| &mut bad.metadata, K::meta_mut)
    }
}

/// The objects in `store` that `keep` selects. A scan, so only for changes that are rare and
/// concern many objects at once (a TwilioAccount's policy, a Namespace's labels), and for the
/// resync, a slice at a time.
fn objects_where<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    keep: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|o| keep(o))
        .map(|o| objects::reference(&**o))
        .collect()
}

/// Each object of `store` once per `period`, a slice at a time: the periodic look that catches
/// what no watch reports (drift at Twilio, a missed event). An object's slice follows from its
/// namespace and name, so nothing is kept per object between slices; a requeue held for each
/// object by the controller's scheduler until its resync cost some 600 bytes apiece. An object
/// whose last pass failed is left to its backoff, which the resync must not cut short.
fn resyncs<L: Lifecycle>(
    lifecycle: Arc<L>,
    store: Store<L::Kind>,
) -> impl Stream<Item = ObjectRef<L::Kind>> + Send + 'static {
    const SLICES: u64 = 64;
    let hasher = std::hash::RandomState::new();
    // Never a busy loop, whatever the interval.
    let tick = (lifecycle.context().resync / SLICES as u32).max(Duration::from_millis(10));
    let rounds = futures::stream::unfold(0, move |slice| {
        let (lifecycle, store, hasher) = (lifecycle.clone(), store.clone(), hasher.clone());
        async move {
            tokio::time::sleep(tick).await;
            let ctx = lifecycle.context();
            let due = objects_where(&store, |o| {
                hasher.hash_one((&o.meta().namespace, &o.meta().name)) % SLICES == slice
                    && !ctx.failing(&objects::object_id(o))
            });
            Some((futures::stream::iter(due), (slice + 1) % SLICES))
        }
    });
    rounds.flatten()
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

async fn drain<T, E: std::fmt::Display>(results: impl Stream<Item = Result<T, E>>) {
    results
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};

    #[tokio::test]
    async fn every_task_waiting_for_a_first_list_is_woken() {
        let (store, mut writer) = reflector::store::<TwilioApiKey>();
        let (listed, announce) = flag_once(async move {
            let _ = store.wait_until_ready().await;
        });
        let announce = tokio::spawn(announce);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let mut listed = listed.clone();
                tokio::spawn(async move { listed.wait_for(|l| *l).await.is_ok() })
            })
            .collect();
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&Init);
        writer.apply_watcher_event(&InitDone);
        for waiter in waiters {
            let woken = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert!(woken.expect("woken").expect("joined"));
        }
        announce.await.unwrap();
    }

    #[test]
    fn only_a_watched_change_to_a_version_the_operator_wrote_is_its_own() {
        let key = |version: &str| {
            let mut key = TwilioApiKey::new("k", Default::default());
            key.metadata.uid = Some("u".into());
            key.metadata.resource_version = Some(version.into());
            key
        };
        let ours = |uid: &str, version: Option<&str>| uid == "u" && version == Some("5");
        assert!(own_change(&Apply(key("5")), ours));
        assert!(!own_change(&Apply(key("6")), ours), "somebody else's change");
        assert!(
            !own_change(&InitApply(key("5")), ours),
            "a relist may hide a change in it"
        );
        assert!(!own_change(&Delete(key("5")), ours));
    }

    #[test]
    fn an_object_is_read_as_its_kind_or_else_as_its_metadata_and_the_reason() {
        let object = |pending: &str| {
            serde_json::json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
                "metadata": {"name": "k", "namespace": "team"}, "spec": {},
                "status": {"pendingSince": pending}})
            .to_string()
        };
        let good: Readable<TwilioApiKey> = serde_json::from_str(&object("2026-01-01T00:00:00Z")).unwrap();
        assert!(good.0.is_ok());
        let bad: Readable<TwilioApiKey> = serde_json::from_str(&object("yesterday")).unwrap();
        assert_eq!(
            (bad.name_any(), bad.namespace()),
            ("k".into(), Some("team".into()))
        );
        let Err(unreadable) = bad.0 else {
            panic!("read a bad timestamp")
        };
        assert!(unreadable.error.contains("line 1"), "{}", unreadable.error);
        let no_metadata = serde_json::from_str::<Readable<TwilioApiKey>>(r#"{"metadata": 7}"#);
        assert!(no_metadata.is_err(), "without metadata nothing can be reported");
    }

    /// What `reconciled_as_listed` makes of `events`, each written out.
    async fn as_listed(events: Vec<watcher::Event<&'static str>>) -> Vec<String> {
        reconciled_as_listed(futures::stream::iter(events.into_iter().map(Ok::<_, ()>)))
            .map(|e| format!("{:?}", e.unwrap()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn the_first_list_is_reconciled_as_it_arrives_and_relists_are_kept_whole() {
        let events = vec![
            Init,
            InitApply("a"),
            InitApply("b"),
            InitDone,
            Apply("c"),
            Delete("b"),
            Init,
            InitApply("a"),
            InitDone,
        ];
        let seen = as_listed(events).await;
        let want = [
            Init,
            InitDone,
            Apply("a"),
            Apply("b"),
            Apply("c"),
            Delete("b"),
            Init,
            InitApply("a"),
            InitDone,
        ]
        .map(|e| format!("{e:?}"));
        assert_eq!(seen, want);
    }

    #[tokio::test]
    async fn a_first_list_that_starts_over_is_kept_whole() {
        let events = vec![Init, InitApply("a"), Init, InitApply("b"), InitDone, Apply("c")];
        let seen = as_listed(events).await;
        let want = [
            Init,
            InitDone,
            Apply("a"),
            Init,
            InitApply("b"),
            InitDone,
            Apply("c"),
        ]
        .map(|e| format!("{e:?}"));
        assert_eq!(seen, want);
    }
}
