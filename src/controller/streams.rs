//! The streams the controllers are wired from: flags set once, the cluster caches' changes,
//! watch events filtered and turned into references, the first list as it arrives, and the
//! scope's resync, a slice at a time. No decision about an object is made here.

use crate::context::{Changed, Context};
use crate::objects;
use crate::reconcile::{self, Lifecycle};
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// A flag that turns true once `done` completes, and the future that turns it (run it). Any
/// number of tasks can wait on the flag; a Store's own `wait_until_ready` wakes only the last of
/// several that wait on it at once (kube-runtime keeps a single waker), leaving the others
/// stuck until something else polls them.
pub(super) fn flag_once(
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

/// The changes of the cluster-wide caches from now on; `None` stands for changes missed by
/// falling behind.
pub(super) fn changes(ctx: &Context) -> impl Stream<Item = Option<Changed>> + Send + 'static + use<> {
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
pub(super) fn bounded(ctx: &Context) -> controller::Config {
    controller::Config::default().concurrency((2 * ctx.twilio.max_concurrency()).max(4) as u16)
}

/// Whether a watch event is other than a change to a version this process wrote or wrote over:
/// the pass that made such a version knew all of it, so another would only repeat it (about two
/// passes per created key, before). Lists always pass: a relist after the watch fell behind may
/// carry, in the operator's own unconditional write, a change somebody made meanwhile whose own
/// event it never delivers.
pub(super) fn not_acted_on<K: Resource>(
    ctx: Arc<Context>,
) -> impl FnMut(&watcher::Event<K>) -> futures::future::Ready<bool> {
    move |event| futures::future::ready(!own_change(event, |uid, version| ctx.acted_on(uid, version)))
}

/// Whether `event` reports a change to a version that `acted_on` (by UID and resourceVersion)
/// knows; a list's objects never count.
pub(super) fn own_change<K: Resource>(
    event: &watcher::Event<K>,
    acted_on: impl Fn(&str, Option<&str>) -> bool,
) -> bool {
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
pub(super) fn forget_departed<L: Lifecycle>(lifecycle: &L, event: &watcher::Event<L::Kind>) {
    if let watcher::Event::Delete(obj) = event {
        reconcile::departed(lifecycle, obj);
    }
}

/// A [`objects::reference`] to each object of `touched`: the controller keeps one for every
/// object it has scheduled, that is each object until its next deadline, retry or resync.
pub(super) fn references<K: Resource<DynamicType = ()> + 'static>(
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
pub(super) fn receiver_stream<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// What a cached object needs of its metadata ([`objects::slim_meta`]).
pub(super) fn slim<K: Resource>(object: &mut K) {
    objects::slim_meta(object.meta_mut());
}

/// What a cached tenant's object needs of its metadata ([`objects::slim_tenant_meta`]): what a
/// tenant adds as annotations or labels could be far more than its spec.
pub(super) fn slim_tenant<K: Resource>(object: &mut K) {
    objects::slim_tenant_meta(object.meta_mut());
}

/// The watch's first list as it arrives: the cache it feeds counts as filled at once, and each
/// listed object enters it (and is reconciled) as soon as it is read, not all together once
/// the list of thousands is complete. Later relists pass unchanged, so objects that went while
/// the watch was down still leave the cache.
pub(super) fn reconciled_as_listed<K: Send + 'static, E: Send + 'static>(
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

/// The objects in `store` that `keep` selects. A scan, so only for changes that are rare and
/// concern many objects at once (a TwilioAccount's policy, a Namespace's labels), and for the
/// resync, a slice at a time.
pub(super) fn objects_where<K: Resource<DynamicType = ()> + Clone>(
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
pub(super) fn resyncs<L: Lifecycle>(
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

pub(super) fn scoped<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

pub(super) async fn drain<T, E: std::fmt::Display>(results: impl Stream<Item = Result<T, E>>) {
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
    use crate::api::TwilioApiKey;
    use kube::runtime::reflector;
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
