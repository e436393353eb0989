//! How many objects of one kind each namespace holds in each TwilioAccount, in creation order
//! ([`Quota`], from the kind's watch), so `spec.*.maxPerNamespace` is judged before any Twilio
//! call. Pure. The first `max` objects by creation (then name) are within the limit; the others
//! wait with `QuotaExceeded`, and the first of them is woken when an object ahead goes. A check
//! costs O(min(max, objects of that namespace in that account)), whatever the cluster holds.

use crate::objects::{Unlisted, reference};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// The TwilioAccount and namespace an object counts in.
type Group = (String, String);
/// An object's place in its group: its creation time (seconds) and name.
type Place = (i64, String);

/// The objects of kind `K`, by TwilioAccount and namespace.
pub struct Quota<K: Resource<DynamicType = ()>> {
    inner: Mutex<Index<K>>,
}

impl<K: Resource<DynamicType = ()>> Default for Quota<K> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Index {
                of: HashMap::new(),
                groups: HashMap::new(),
                unlisted: Unlisted::default(),
            }),
        }
    }
}

struct Index<K: Resource<DynamicType = ()>> {
    of: HashMap<ObjectRef<K>, (Group, Place)>,
    groups: HashMap<Group, Members>,
    unlisted: Unlisted<ObjectRef<K>>,
}

#[derive(Default)]
struct Members {
    all: BTreeSet<Place>,
    /// Those refused for the limit, woken in order as places free up.
    waiting: BTreeSet<Place>,
}

impl<K: Resource<DynamicType = ()>> Quota<K> {
    /// Applies one event of the kind's watch, where `account` names the TwilioAccount an object
    /// counts in (`None`: it counts in none). Answers the object to wake: the first one waiting
    /// in a group an object left.
    pub fn observe(&self, event: &Event<K>, account: impl Fn(&K) -> Option<&str>) -> Option<ObjectRef<K>> {
        let mut index = self.inner.lock().expect("quota index");
        match event {
            Event::Apply(obj) => index.place(obj, account(obj)),
            Event::InitApply(obj) => {
                index.unlisted.listed(&reference(obj));
                index.place(obj, account(obj))
            }
            Event::Delete(obj) => index.remove(&reference(obj)),
            Event::Init => {
                let Index { of, unlisted, .. } = &mut *index;
                unlisted.start(of.keys());
                None
            }
            Event::InitDone => {
                let gone = index.unlisted.finish();
                gone.iter().filter_map(|id| index.remove(id)).last()
            }
        }
    }

    /// Whether `obj`, counted in `account`, is among the first `max` objects of its namespace
    /// there. One that is not is remembered as waiting, to be woken when a place frees up.
    pub fn admits(&self, obj: &K, account: &str, max: u32) -> bool {
        let mut index = self.inner.lock().expect("quota index");
        let group = (
            account.to_owned(),
            obj.meta().namespace.clone().unwrap_or_default(),
        );
        let place = place_of(obj);
        let members = index.groups.entry(group).or_default();
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let ahead = members.all.range(..&place).take(max).count();
        let within = ahead < max;
        if within {
            members.waiting.remove(&place);
        } else {
            members.waiting.insert(place);
        }
        within
    }
}

impl<K: Resource<DynamicType = ()>> Index<K> {
    /// Records where `obj` counts now; answers whom its move woke.
    fn place(&mut self, obj: &K, account: Option<&str>) -> Option<ObjectRef<K>> {
        let id = reference(obj);
        let now = account.map(|a| {
            let group = (a.to_owned(), obj.meta().namespace.clone().unwrap_or_default());
            (group, place_of(obj))
        });
        if self.of.get(&id) == now.as_ref() {
            return None;
        }
        let woken = self.remove(&id);
        if let Some((group, place)) = now {
            self.groups
                .entry(group.clone())
                .or_default()
                .all
                .insert(place.clone());
            self.of.insert(id, (group, place));
        }
        woken
    }

    /// Takes `id` out of its group; answers the first object waiting there.
    fn remove(&mut self, id: &ObjectRef<K>) -> Option<ObjectRef<K>> {
        let (group, place) = self.of.remove(id)?;
        let members = self.groups.get_mut(&group)?;
        members.all.remove(&place);
        members.waiting.remove(&place);
        let first = members.waiting.pop_first();
        if members.all.is_empty() {
            self.groups.remove(&group);
        }
        first.map(|(_, name)| ObjectRef::new(&name).within(&group.1))
    }
}

fn place_of<K: Resource>(obj: &K) -> Place {
    let meta = obj.meta();
    let created = meta
        .creation_timestamp
        .as_ref()
        .map_or(i64::MAX, |t| t.0.as_second());
    (created, meta.name.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TwilioApiKey;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn key(ns: &str, name: &str, created: i64) -> TwilioApiKey {
        let mut key = TwilioApiKey::new(name, Default::default());
        key.metadata.namespace = Some(ns.into());
        key.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        key
    }

    fn in_default(_: &TwilioApiKey) -> Option<&str> {
        Some("default")
    }

    #[test]
    fn the_first_by_creation_are_within_and_the_first_waiting_is_woken_when_one_goes() {
        let quota = Quota::default();
        let (a, b, c) = (key("t", "a", 1), key("t", "b", 2), key("t", "c", 3));
        let other = key("u", "z", 0);
        for k in [&c, &a, &b, &other] {
            assert_eq!(quota.observe(&Event::Apply(k.clone()), in_default), None);
        }
        assert!(quota.admits(&a, "default", 2) && quota.admits(&b, "default", 2));
        assert!(!quota.admits(&c, "default", 2), "third in its namespace");
        assert!(
            quota.admits(&other, "default", 1),
            "another namespace counts apart"
        );
        assert!(
            quota.admits(&c, "other-account", 2),
            "another account counts apart"
        );
        assert!(!quota.admits(&c, "default", 2));

        let woken = quota.observe(&Event::Delete(a), in_default);
        assert_eq!(woken, Some(ObjectRef::new("c").within("t")));
        assert!(quota.admits(&c, "default", 2));
        assert!(!quota.admits(&c, "default", 0), "zero admits none");
    }

    #[test]
    fn a_relist_forgets_what_it_no_longer_lists() {
        let quota = Quota::default();
        let (a, b) = (key("t", "a", 1), key("t", "b", 2));
        quota.observe(&Event::Apply(a.clone()), in_default);
        quota.observe(&Event::Apply(b.clone()), in_default);
        assert!(!quota.admits(&b, "default", 1));
        quota.observe(&Event::Init, in_default);
        quota.observe(&Event::InitApply(b.clone()), in_default);
        let woken = quota.observe(&Event::InitDone, in_default);
        assert_eq!(woken, Some(ObjectRef::new("b").within("t")));
        assert!(quota.admits(&b, "default", 1));
    }
}
