//! Wiring of the controllers: which watch wakes which reconciler, per scope (a namespace, or
//! the whole cluster), and the cluster-wide caches of TwilioAccounts and Namespaces. Each kind is
//! watched and cached once per scope; a key wakes its subaccount only when it joins or leaves it,
//! a subaccount its keys only when what they read of it changes, an owned Secret its owner, and a
//! change the operator itself wrote nobody. `decode` reads watched objects, `streams` holds
//! the stream plumbing. ARCHITECTURE.md ("One object's path") tells the story.

mod decode;
mod streams;

use crate::account::{self, Accounts};
use crate::api::{TwilioAccount, TwilioApiKey, TwilioSubaccount};
use crate::apikey::ApiKeys;
use crate::budget::callbacks::Callbacks;
use crate::context::{Changed, Context, Recorder};
use crate::membership::{KeyViews, Membership};
use crate::quota::Quota;
use crate::reconcile::{self, Lifecycle};
use crate::secret::{self, MANAGED_SELECTOR};
use crate::subaccount::Subaccounts;
use decode::readable;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use streams::{
    bounded, changes, drain, flag_once, forget_departed, not_acted_on, objects_where, receiver_stream,
    reconciled_as_listed, references, resyncs, scoped, slim, slim_tenant,
};
use tokio::sync::{broadcast, mpsc};

pub use streams::until;

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
    .for_each({
        // Objects read an account's spec, never its status, which each check rewrites (the
        // balance): only a new generation of the account, a new account under the same name
        // (its UID), or the account's going wakes its objects.
        let mut generations: HashMap<String, (Option<String>, Option<i64>)> = HashMap::new();
        move |event| {
            let changed = match event {
                Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)) => {
                    let seen = (a.metadata.uid.clone(), a.metadata.generation);
                    (generations.insert(a.name_any(), seen.clone()) != Some(seen)).then(|| a.name_any())
                }
                Ok(watcher::Event::Delete(a)) => {
                    generations.remove(&a.name_any());
                    Some(a.name_any())
                }
                _ => None,
            };
            if let Some(name) = changed {
                // Nobody listens while this process is not the leader.
                let _ = account_changes.send(Changed::Account(name));
            }
            futures::future::ready(())
        }
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
    // its memory would otherwise keep. Pages of 100 bound that peak with the largest objects
    // admission allows (each may carry 256 KiB of annotations before they are folded).
    let listed = watcher::Config::default().page_size(100);
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
    let (key_quota, sub_quota) = (Arc::new(Quota::default()), Arc::new(Quota::default()));
    let apikeys = Arc::new(ApiKeys::new(
        ctx.clone(),
        (subs.clone(), subs_listed),
        versions.clone(),
        key_quota.clone(),
    ));
    let subaccounts = Arc::new(Subaccounts::new(
        ctx.clone(),
        membership.clone(),
        callbacks,
        sub_quota.clone(),
    ));

    // A key joining or leaving a subaccount wakes that subaccount, and nothing else does; a key
    // leaving its namespace's quota wakes the first key waiting for a place.
    let (index, wake, lifecycle) = (membership.clone(), wake_subs.clone(), apikeys.clone());
    let wake_waiting = wake_keys.clone();
    let key_events = readable(scoped(client, ns), selected.clone(), &keys, &ctx.recorder)
        .modify(slim_tenant)
        .inspect_ok(move |event| {
            for sub in index.observe(event) {
                let _ = wake.send(sub);
            }
            if let Some(key) = key_quota.observe(event, ApiKeys::account_name) {
                let _ = wake_waiting.send(key);
            }
            forget_departed(lifecycle.as_ref(), event);
        });
    let key_events = reconciled_as_listed(key_events)
        .reflect(keys_writer)
        .try_filter(not_acted_on(ctx.clone()))
        .touched_objects();
    // A subaccount wakes its keys when what they read of it changes.
    let (index, wake, mut views) = (membership.clone(), wake_keys.clone(), KeyViews::default());
    let (lifecycle, wake_waiting) = (subaccounts.clone(), wake_subs.clone());
    let sub_events = readable(scoped(client, ns), selected, &subs, &ctx.recorder)
        .modify(slim_tenant)
        .inspect_ok(move |event| {
            for sub in views.observe(event) {
                for key in index.keys_of(&sub) {
                    let _ = wake.send(key);
                }
            }
            if let Some(sub) = sub_quota.observe(event, Subaccounts::account_name) {
                let _ = wake_waiting.send(sub);
            }
            forget_departed(lifecycle.as_ref(), event);
        })
        .reflect(subs_writer)
        .try_filter(not_acted_on(ctx.clone()))
        .touched_objects();
    // An owned Secret that changes or goes wakes its owner, once its version is known, unless
    // the owner's last pass wrote or read that very version.
    let secrets = secret_wakes(client, ns, versions, apikeys.clone(), wake_keys, wake_subs);

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

/// The watch of the operator's Secrets in scope `ns`: it keeps `versions` current and wakes
/// the owner of each Secret that changes or goes, except a key whose last pass wrote or read
/// that very version.
fn secret_wakes(
    client: &kube::Client,
    ns: Option<&str>,
    versions: Arc<secret::Versions>,
    keys: Arc<ApiKeys>,
    wake_keys: mpsc::UnboundedSender<ObjectRef<TwilioApiKey>>,
    wake_subs: mpsc::UnboundedSender<ObjectRef<TwilioSubaccount>>,
) -> impl Future<Output = ()> + Send + 'static + use<> {
    watcher(
        scoped::<PartialObjectMeta<Secret>>(client, ns),
        watcher::Config::default().any_semantic().labels(MANAGED_SELECTOR),
    )
    .default_backoff()
    .inspect_ok(move |event| versions.observe(event))
    .touched_objects()
    .for_each(move |secret| {
        if let Ok(secret) = secret {
            let namespace = secret.namespace().unwrap_or_default();
            let owners = secret
                .owner_references()
                .iter()
                .filter(|o| o.controller == Some(true));
            for owner in owners.filter(|o| o.api_version.starts_with(crate::api::GROUP)) {
                let version = secret.resource_version();
                // A send fails only once its controller has stopped.
                match owner.kind.as_str() {
                    "TwilioApiKey" if keys.has_seen_secret(&owner.uid, version.as_deref()) => {}
                    "TwilioApiKey" => drop(wake_keys.send(ObjectRef::new(&owner.name).within(&namespace))),
                    "TwilioSubaccount" => {
                        drop(wake_subs.send(ObjectRef::new(&owner.name).within(&namespace)))
                    }
                    _ => {}
                }
            }
        }
        futures::future::ready(())
    })
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
