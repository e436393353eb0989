//! What both reconcilers share, and nothing else: the Kubernetes and Twilio clients, the
//! operator's own credentials, the event recorder, the metrics, the cluster caches of TwilioAccounts
//! and Namespaces, per-object backoff (5 s doubling to 10 min, with jitter, so nothing retries in a
//! hot loop), the operator's own recent writes, and the subaccount auth tokens both kinds act with
//! (kept until the token rotates, is refused, or its object goes). What one reconciler needs lives
//! in that reconciler.

use crate::api::TwilioAccount;
use crate::metrics::Metrics;
use crate::twilio::{Credentials, TwilioClient};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::PartialObjectMeta;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Field manager of every write the operator makes.
pub const MANAGER: &str = "twilio-operator";
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_CAP: Duration = Duration::from_secs(600);

/// A change the cluster-wide caches saw, by name.
#[derive(Clone, Debug)]
pub enum Changed {
    /// A TwilioAccount (its policy, credentials or status).
    Account(String),
    /// A Namespace (its labels, or its deletion).
    Namespace(String),
    /// A verified usage-trigger callback for TwilioSubaccount `(namespace, name)`.
    Spend(String, String),
}

/// Publishes events.k8s.io Events, one request each. Unlike kube's recorder it keeps no cache
/// for aggregating repeats: that cache is scanned on every event and grows with the number of
/// objects, and the operator's events do not repeat (a Warning is published when a Ready reason
/// changes, not on every retry).
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
}

impl Recorder {
    /// A recorder publishing as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// Publishes `ev` about the object `reference` names, in that object's namespace.
    pub async fn publish(&self, ev: &Event, reference: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let controller = &self.reporter.controller;
        let event = K8sEvent {
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                name: Some(format!(
                    "{}.{:x}",
                    reference.name.as_deref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..Default::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        Ok(())
    }
}

/// The cluster-wide caches and the operator's own namespace.
pub struct Cluster {
    /// Every TwilioAccount, as the shared watch sees it.
    pub accounts: Store<TwilioAccount>,
    /// Every Namespace's metadata, for the account policies' label selectors.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// What those caches see change, for the controllers that are running to subscribe to; the
    /// caches never wait for a subscriber.
    pub changes: tokio::sync::broadcast::Sender<Changed>,
    /// The operator's own namespace, where the claims on subaccount SIDs live.
    pub own_namespace: String,
    /// Turns true once both caches hold their first full list.
    pub filled: tokio::sync::watch::Receiver<bool>,
}

impl Cluster {
    /// Completes once both caches hold their first full list: policy decisions need them, and
    /// empty ones would refuse everything.
    pub async fn ready(&self) {
        let _ = self.filled.clone().wait_for(|filled| *filled).await;
    }
}

/// The clients and state every reconcile shares.
pub struct Context {
    /// The Kubernetes client, as the operator's identity.
    pub client: kube::Client,
    /// The Twilio client, with its per-account limits.
    pub twilio: TwilioClient,
    /// The operator's own credentials, from its environment; `None` when it has none.
    pub default_credentials: Option<Credentials>,
    /// Publishes events on the objects.
    pub recorder: Recorder,
    /// How often drift at Twilio is looked for.
    pub resync: Duration,
    /// The Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// What the operator reads of the cluster besides the objects it reconciles.
    pub cluster: Cluster,
    failures: Mutex<HashMap<String, u32>>,
    subaccount_tokens: Mutex<HashMap<String, SecretString>>,
    /// When each tenant's credentials (by [`Credentials::identity`]) last authenticated.
    proven: Mutex<HashMap<String, Instant>>,
    writes: Mutex<Recent>,
    /// Whether this process runs the controllers (it leads, or no election is held).
    leading: std::sync::atomic::AtomicBool,
}

/// The operator's recent status writes, by object UID.
#[derive(Default)]
struct Recent {
    by_uid: HashMap<String, Writes>,
    /// Writes since records past [`STALE_WAIT`] were last dropped.
    since_pruned: usize,
}

impl Recent {
    fn wrote(&mut self, uid: &str, read: Option<String>, written: Option<String>) {
        // Records past STALE_WAIT mean nothing any more: dropped once per as many writes as
        // there are records, so each write costs O(1) on average.
        self.since_pruned += 1;
        if self.since_pruned > self.by_uid.len().max(64) {
            self.by_uid.retain(|_, w| w.at.elapsed() < STALE_WAIT);
            self.since_pruned = 0;
        }
        let entry = self.by_uid.entry(uid.to_owned()).or_insert_with(|| Writes {
            at: Instant::now(),
            superseded: Vec::new(),
            newest: None,
        });
        if let Some(previous) = std::mem::replace(&mut entry.newest, written) {
            entry.superseded.push(previous);
        }
        entry.superseded.extend(read);
        let newest = entry.newest.clone();
        entry.superseded.retain(|rv| Some(rv) != newest.as_ref());
        // Only the latest few matter: a cache is never further behind than a pass or two.
        let excess = entry.superseded.len().saturating_sub(8);
        entry.superseded.drain(..excess);
        entry.at = Instant::now();
    }

    fn is_stale(&self, uid: &str, version: Option<&str>) -> bool {
        self.lately(uid, version, |w, v| w.superseded.iter().any(|rv| rv == v))
    }

    fn acted_on(&self, uid: &str, version: Option<&str>) -> bool {
        self.lately(uid, version, |w, v| {
            w.newest.as_deref() == Some(v) || w.superseded.iter().any(|rv| rv == v)
        })
    }

    /// Whether `uid` was written within [`STALE_WAIT`] and `version` meets `test` against
    /// those writes.
    fn lately(&self, uid: &str, version: Option<&str>, test: impl Fn(&Writes, &str) -> bool) -> bool {
        let (Some(entry), Some(version)) = (self.by_uid.get(uid), version) else {
            return false;
        };
        entry.at.elapsed() < STALE_WAIT && test(entry, version)
    }
}

/// The status writes of the latest pass over one object, to tell a stale cached copy.
struct Writes {
    /// When the newest was made.
    at: Instant,
    /// The resourceVersions this process has written over: the one each pass read, and each of
    /// its writes but the newest.
    superseded: Vec<String>,
    /// The resourceVersion of the newest write.
    newest: Option<String>,
}

/// How long a cached copy older than the operator's own write is waited for: beyond this the
/// watch is assumed behind for good and the copy is acted on.
const STALE_WAIT: Duration = Duration::from_secs(5);

impl Context {
    /// A context with no failures and no tokens remembered yet.
    pub fn new(
        client: kube::Client,
        twilio: TwilioClient,
        default_credentials: Option<Credentials>,
        recorder: Recorder,
        resync: Duration,
        metrics: Arc<Metrics>,
        cluster: Cluster,
    ) -> Self {
        Self {
            client,
            twilio,
            default_credentials,
            recorder,
            resync,
            metrics,
            cluster,
            failures: Mutex::default(),
            subaccount_tokens: Mutex::default(),
            proven: Mutex::default(),
            writes: Mutex::default(),
            leading: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Marks whether this process runs the controllers.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, std::sync::atomic::Ordering::Relaxed);
        self.metrics.leading(leading);
    }

    /// Whether this process runs the controllers.
    pub fn is_leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The labels of `namespace`, as the shared watch last saw them.
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let found = self.cluster.namespaces.get(&ObjectRef::new(namespace));
        found
            .and_then(|ns| ns.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// The delay before the next attempt for `object`, growing with each failure.
    pub fn backoff(&self, object: &str) -> Duration {
        let mut failures = self.failures.lock().expect("failure map");
        let n = failures.entry(object.to_owned()).or_default();
        *n = n.saturating_add(1);
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << (*n - 1).min(16))
            .min(BACKOFF_CAP);
        // Up to 10% jitter, so objects that failed together do not retry together.
        let jitter = exp.mul_f64(f64::from(rand_fraction(object, *n)) * 0.1);
        exp + jitter
    }

    /// Whether `object`'s last pass failed: its backoff, not the resync, brings the next.
    pub fn failing(&self, object: &str) -> bool {
        self.failures.lock().expect("failure map").contains_key(object)
    }

    /// How long what a pass read (an account's keys, a Secret, a subaccount at Twilio) counts as
    /// fresh: a little less than the resync interval, so the next resync round, which comes a
    /// resync interval after the last give or take how long that read took, reads anew.
    pub fn fresh_for(&self) -> Duration {
        self.resync - self.resync / 8
    }

    /// Forgets the failures of `object`: its next failure backs off from the start.
    pub fn succeeded(&self, object: &str) {
        self.failures.lock().expect("failure map").remove(object);
    }

    /// Records that object `uid`, read at resourceVersion `read`, was written to become `written`.
    pub fn wrote(&self, uid: &str, read: Option<String>, written: Option<String>) {
        self.writes
            .lock()
            .expect("write memory")
            .wrote(uid, read, written);
    }

    /// Whether the copy of object `uid` at resourceVersion `version` predates a status this
    /// process wrote since, and the cache can be expected to catch up soon.
    pub fn is_stale(&self, uid: &str, version: Option<&str>) -> bool {
        self.writes.lock().expect("write memory").is_stale(uid, version)
    }

    /// Whether object `uid` at resourceVersion `version` is a state this process has lately
    /// acted on: one of its own writes made it, or was made over it. A watch event bringing it
    /// needs no pass, since the pass that wrote knew all it holds.
    pub fn acted_on(&self, uid: &str, version: Option<&str>) -> bool {
        self.writes.lock().expect("write memory").acted_on(uid, version)
    }

    /// Forgets every write and failure: a new term as leader starts from what the cluster says,
    /// its first list must reach every object whatever the last term wrote, and backoff starts
    /// afresh (objects may have gone or come back meanwhile, unseen).
    pub fn new_term(&self) {
        *self.writes.lock().expect("write memory") = Recent::default();
        self.failures.lock().expect("failure map").clear();
    }

    /// Forgets the writes of object `uid`: it is gone.
    pub fn forget_writes(&self, uid: &str) {
        self.writes.lock().expect("write memory").by_uid.remove(uid);
    }

    /// The auth token of subaccount `sid`, if this process has read it.
    pub fn subaccount_token(&self, sid: &str) -> Option<SecretString> {
        self.subaccount_tokens
            .lock()
            .expect("token cache")
            .get(sid)
            .cloned()
    }

    /// Keeps the auth token of subaccount `sid` for later passes.
    pub fn remember_subaccount_token(&self, sid: &str, token: SecretString) {
        self.subaccount_tokens
            .lock()
            .expect("token cache")
            .insert(sid.to_owned(), token);
    }

    /// Drops the auth token of subaccount `sid`: it changed, was refused, or its object went.
    pub fn forget_subaccount_token(&self, sid: &str) {
        self.subaccount_tokens.lock().expect("token cache").remove(sid);
    }

    /// Whether `creds` authenticated at Twilio within [`Context::fresh_for`].
    pub fn is_proven(&self, creds: &Credentials) -> bool {
        let proven = self.proven.lock().expect("proof cache");
        proven
            .get(&creds.identity())
            .is_some_and(|at| at.elapsed() < self.fresh_for())
    }

    /// Records that `creds` just authenticated at Twilio.
    pub fn proved(&self, creds: &Credentials) {
        let mut proven = self.proven.lock().expect("proof cache");
        let fresh_for = self.fresh_for();
        proven.retain(|_, at| at.elapsed() < fresh_for);
        proven.insert(creds.identity(), Instant::now());
    }

    /// Publishes an event about `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        publish(&self.recorder, obj, type_, reason, action, note).await;
    }
}

/// Publishes an event about `obj` through `recorder`; a failure to publish is logged, never
/// fatal. For the watches that run before a [`Context`] exists; everything else uses
/// [`Context::event`].
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish event");
    }
}

/// A stable pseudo-random fraction in [0, 1) for (object, attempt).
fn rand_fraction(object: &str, attempt: u32) -> f32 {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(format!("{object}/{attempt}").as_bytes());
    f32::from(u16::from_be_bytes([hash[0], hash[1]])) / 65536.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_process_wrote_or_wrote_over_need_no_pass_and_only_older_ones_are_stale() {
        let mut recent = Recent::default();
        let rv = |v: &str| Some(v.to_owned());
        // A create: the finalizer, the intent, then the final status; "4" is somebody else's.
        recent.wrote("u", rv("1"), rv("2"));
        recent.wrote("u", rv("2"), rv("3"));
        recent.wrote("u", rv("3"), rv("5"));
        for (version, stale, acted_on) in [
            ("1", true, true),
            ("3", true, true),
            ("4", false, false),
            ("5", false, true),
        ] {
            assert_eq!(recent.is_stale("u", Some(version)), stale, "{version} stale");
            assert_eq!(
                recent.acted_on("u", Some(version)),
                acted_on,
                "{version} acted on"
            );
        }
        assert!(!recent.acted_on("other", Some("5")) && !recent.acted_on("u", None));
        // A conflict: the copy read was stale, and nothing new was written.
        recent.wrote("u", rv("5"), None);
        assert!(recent.is_stale("u", Some("5")) && recent.acted_on("u", Some("5")));
    }
}
