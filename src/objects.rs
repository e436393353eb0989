//! How the operator names and remembers the objects it keeps state about: by kind, namespace
//! and name only, never by a version, so one entry serves every copy of an object; a
//! reconciler's [`Memory`], one record per object by UID, so forgetting an object is one call;
//! and, during a relist, which objects the relist has not listed yet. No I/O.
//!
//! See ARCHITECTURE.md for what is kept per object and why it stays small.

use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::collections::{HashMap, HashSet};
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
