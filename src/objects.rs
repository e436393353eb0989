//! How the operator names and remembers the objects it keeps state about: by kind, namespace
//! and name only, never by a version, so one entry serves every copy of an object; a
//! reconciler's [`Memory`], one record per object by UID, so forgetting an object is one call;
//! during a relist, which objects the relist has not listed yet; and what of an object's
//! metadata is worth caching ([`slim_meta`], [`slim_tenant_meta`]). No I/O.
//!
//! See ARCHITECTURE.md for what is kept per object and why it stays small.

use crate::fingerprint::data_digest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Mutex;

/// `Kind/namespace/name`, the key of per-object state shared by both kinds.
pub fn object_id<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    id_of::<K>(&obj.namespace().unwrap_or_default(), &obj.name_any())
}

/// A reference to `obj` by namespace and name only, for what is kept per object: one made by
/// [`ObjectRef::from_obj`] also carries the object's resourceVersion and UID.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectRef<K> {
    let named = ObjectRef::new(&obj.name_any());
    match obj.namespace() {
        Some(ns) => named.within(&ns),
        None => named,
    }
}

/// [`object_id`] of the `K` named `name` in `namespace` (empty for a cluster-scoped kind), for
/// an object no longer at hand.
pub fn id_of<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", K::kind(&()))
}

/// The annotation in which `kubectl apply` keeps a copy of the whole object.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The annotations a pass reads, kept as they are when their value is short enough to mean
/// what they are for.
const READ_ANNOTATIONS: [&str; 1] = ["twilio.operator.dev/rotate"];
/// The longest value of a [`READ_ANNOTATIONS`] entry kept as it is.
const MAX_READ_VALUE: usize = 1024;
/// Where the digest of an object's other annotations, or of its labels, stands in for them.
pub const FOLDED: &str = "twilio.operator.dev/folded-digest";

/// An object's metadata as it is worth caching: no managedFields, no [`LAST_APPLIED`] copy,
/// which together are most of a small object.
pub fn slim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A tenant's object's metadata as it is worth caching: [`slim_meta`], and every annotation a
/// pass does not read, and every label, folded into one [`FOLDED`] digest each. A namespace
/// editor may add up to 256 KiB of annotations and labels to an object; cached, it costs what
/// its spec does, and a change to them still shows (the digest changes, so an annotation still
/// forces a look). Namespaces and TwilioAccounts keep theirs: policies read their labels.
pub fn slim_tenant_meta(meta: &mut ObjectMeta) {
    slim_meta(meta);
    // No pass reads them.
    meta.owner_references = None;
    for (map, keep) in [(&mut meta.annotations, true), (&mut meta.labels, false)] {
        let Some(entries) = map.as_mut() else { continue };
        let read = |k: &str, v: &str| keep && READ_ANNOTATIONS.contains(&k) && v.len() <= MAX_READ_VALUE;
        let folded: BTreeMap<String, String> = std::mem::take(entries)
            .into_iter()
            .filter_map(|(k, v)| {
                if read(&k, &v) {
                    entries.insert(k, v);
                    None
                } else {
                    Some((k, v))
                }
            })
            .collect();
        if !folded.is_empty() {
            let digest = data_digest(folded.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
            entries.insert(FOLDED.to_owned(), digest);
        }
        if entries.is_empty() {
            *map = None;
        }
    }
}

/// During a relist, the entries known before it that it has not listed yet: whatever is left
/// when it is done went while the watch was down.
pub struct Unlisted<T>(Option<HashSet<T>>);

impl<T> Default for Unlisted<T> {
    fn default() -> Self {
        Unlisted(None)
    }
}

impl<T: Hash + Eq + Clone> Unlisted<T> {
    /// A relist starts: everything known so far is unlisted.
    pub fn start<'a>(&mut self, known: impl Iterator<Item = &'a T>)
    where
        T: 'a,
    {
        self.0 = Some(known.cloned().collect());
    }

    /// The relist listed `id`.
    pub fn listed(&mut self, id: &T) {
        if let Some(unlisted) = self.0.as_mut() {
            unlisted.remove(id);
        }
    }

    /// The relist is done: what it never listed.
    pub fn finish(&mut self) -> HashSet<T> {
        self.0.take().unwrap_or_default()
    }
}

/// What a reconciler remembers between passes: one record `R` per object, by UID. It only saves
/// calls a stale read or a wake-up would repeat; correctness never depends on it.
pub struct Memory<R> {
    by_uid: Mutex<HashMap<String, R>>,
}

impl<R> Default for Memory<R> {
    fn default() -> Self {
        Self {
            by_uid: Mutex::default(),
        }
    }
}

impl<R: Default> Memory<R> {
    /// Changes what is remembered of object `uid`, starting from nothing, and answers what
    /// `change` does.
    pub fn note<T>(&self, uid: &str, change: impl FnOnce(&mut R) -> T) -> T {
        let mut by_uid = self.by_uid.lock().expect("object memory");
        match by_uid.get_mut(uid) {
            Some(record) => change(record),
            None => change(by_uid.entry(uid.to_owned()).or_default()),
        }
    }

    /// What `read` makes of what is remembered of object `uid`, if anything is.
    pub fn recall<T>(&self, uid: &str, read: impl FnOnce(&R) -> Option<T>) -> Option<T> {
        self.by_uid.lock().expect("object memory").get(uid).and_then(read)
    }

    /// Forgets object `uid`: it went.
    pub fn forget(&self, uid: &str) {
        self.by_uid.lock().expect("object memory").remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> ObjectMeta {
        let map = |pairs: &[(&str, &str)]| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        };
        ObjectMeta {
            annotations: map(annotations),
            labels: map(labels),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_cached_object_keeps_what_passes_read_and_a_digest_of_the_rest() {
        let bulk = "x".repeat(200 * 1024);
        let mut m = meta(
            &[
                ("twilio.operator.dev/rotate", "r1"),
                ("example.com/bulk", &bulk),
                (LAST_APPLIED, "{}"),
            ],
            &[("twilio.operator.dev/shard", "a"), ("team", "blue")],
        );
        slim_tenant_meta(&mut m);
        let annotations = m.annotations.clone().unwrap();
        assert_eq!(annotations.len(), 2);
        assert_eq!(annotations["twilio.operator.dev/rotate"], "r1");
        assert!(annotations[FOLDED].len() < 64, "the bulk is gone");
        assert_eq!(m.labels.clone().unwrap().len(), 1);

        let mut edited = meta(
            &[("twilio.operator.dev/rotate", "r1"), ("example.com/bulk", "y")],
            &[],
        );
        slim_tenant_meta(&mut edited);
        assert_ne!(
            edited.annotations.unwrap()[FOLDED],
            annotations[FOLDED],
            "an edit still shows"
        );

        let mut oversized = meta(&[("twilio.operator.dev/rotate", &bulk)], &[]);
        slim_tenant_meta(&mut oversized);
        assert!(
            !oversized
                .annotations
                .unwrap()
                .contains_key("twilio.operator.dev/rotate")
        );

        let mut plain = meta(&[(LAST_APPLIED, "{}")], &[]);
        slim_tenant_meta(&mut plain);
        assert_eq!(plain.annotations, None);
    }
}
