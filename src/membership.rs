//! Which TwilioApiKeys live in which TwilioSubaccount ([`Membership`], from the key watch), and
//! what keys read of their subaccount ([`KeyViews`], from the subaccount watch). Pure. A key wakes
//! its subaccount only when it joins or leaves it, and a subaccount its keys only when their SID,
//! state at Twilio, Ready condition or deletion changed; a relist replaces the whole index. Counts
//! and lookups cost O(1) and O(keys of that subaccount), whatever the cluster holds.

use crate::api::{TwilioApiKey, TwilioSubaccount};
use crate::objects::{Unlisted, reference};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

type Key = ObjectRef<TwilioApiKey>;
type Sub = ObjectRef<TwilioSubaccount>;

/// The index of keys by subaccount.
#[derive(Default)]
pub struct Membership {
    inner: Mutex<Index>,
}

#[derive(Default)]
struct Index {
    /// The subaccount each key lives in.
    of_key: HashMap<Key, Sub>,
    /// The keys of each subaccount.
    keys: HashMap<Sub, HashSet<Key>>,
    unlisted: Unlisted<Key>,
}

impl Membership {
    /// Applies one event of the key watch; answers the subaccounts that gained or lost a key.
    pub fn observe(&self, event: &Event<TwilioApiKey>) -> Vec<Sub> {
        let mut index = self.inner.lock().expect("membership");
        match event {
            Event::Apply(key) => index.place(key).into_iter().collect(),
            Event::Delete(key) => index.remove(&reference(key)).into_iter().collect(),
            Event::Init => {
                let Index { of_key, unlisted, .. } = &mut *index;
                unlisted.start(of_key.keys());
                Vec::new()
            }
            Event::InitApply(key) => {
                index.unlisted.listed(&reference(key));
                index.place(key).into_iter().collect()
            }
            Event::InitDone => {
                let gone = index.unlisted.finish();
                gone.iter().filter_map(|key| index.remove(key)).collect()
            }
        }
    }

    /// How many keys live in `sub`.
    pub fn count(&self, sub: &Sub) -> usize {
        let index = self.inner.lock().expect("membership");
        index.keys.get(sub).map_or(0, HashSet::len)
    }

    /// The keys that live in `sub`.
    pub fn keys_of(&self, sub: &Sub) -> Vec<Key> {
        let index = self.inner.lock().expect("membership");
        index
            .keys
            .get(sub)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Index {
    /// Records where `key` lives now; answers the subaccounts it joined or left.
    fn place(&mut self, key: &TwilioApiKey) -> Vec<Sub> {
        let id = reference(key);
        let now = subaccount_of(key);
        if self.of_key.get(&id) == now.as_ref() {
            return Vec::new();
        }
        let mut changed: Vec<Sub> = self.remove(&id).into_iter().collect();
        if let Some(sub) = now {
            self.keys.entry(sub.clone()).or_default().insert(id.clone());
            self.of_key.insert(id, sub.clone());
            changed.push(sub);
        }
        changed
    }

    /// Takes `key` out of its subaccount; answers that subaccount.
    fn remove(&mut self, key: &Key) -> Option<Sub> {
        let sub = self.of_key.remove(key)?;
        if let Some(keys) = self.keys.get_mut(&sub) {
            keys.remove(key);
            if keys.is_empty() {
                self.keys.remove(&sub);
            }
        }
        Some(sub)
    }
}

/// What keys read of each subaccount, as last seen on the subaccount watch.
#[derive(Default)]
pub struct KeyViews {
    seen: HashMap<Sub, u64>,
    unlisted: Unlisted<Sub>,
}

impl KeyViews {
    /// Applies one event of the subaccount watch; answers the subaccounts whose keys must look
    /// again.
    pub fn observe(&mut self, event: &Event<TwilioSubaccount>) -> Vec<Sub> {
        let sub = match event {
            Event::Apply(sub) => sub,
            Event::InitApply(sub) => {
                self.unlisted.listed(&reference(sub));
                sub
            }
            Event::Delete(sub) => {
                let id = reference(sub);
                self.seen.remove(&id);
                return vec![id];
            }
            Event::Init => {
                self.unlisted.start(self.seen.keys());
                return Vec::new();
            }
            Event::InitDone => {
                let gone: Vec<Sub> = self.unlisted.finish().into_iter().collect();
                for id in &gone {
                    self.seen.remove(id);
                }
                return gone;
            }
        };
        let id = reference(sub);
        let view = what_keys_read(sub);
        if self.seen.insert(id.clone(), view) == Some(view) {
            Vec::new()
        } else {
            vec![id]
        }
    }
}

/// What a key reads of its subaccount, as a hash: its generation and deletion, its SID, its
/// state at Twilio and its Ready condition.
fn what_keys_read(sub: &TwilioSubaccount) -> u64 {
    let mut hash = DefaultHasher::new();
    (sub.metadata.generation, sub.metadata.deletion_timestamp.is_some()).hash(&mut hash);
    if let Some(st) = &sub.status {
        (&st.sid, &st.twilio_status).hash(&mut hash);
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
        ready.map(|c| (&c.status, &c.reason)).hash(&mut hash);
    }
    hash.finish()
}

/// The subaccount `key` lives in, unless it is being deleted.
fn subaccount_of(key: &TwilioApiKey) -> Option<Sub> {
    if key.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let name = &key.spec.subaccount_ref.as_ref()?.name;
    Some(ObjectRef::new(name).within(&key.namespace().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str, sub: Option<&str>) -> TwilioApiKey {
        let spec = match sub {
            Some(s) => json!({"subaccountRef": {"name": s}}),
            None => json!({}),
        };
        serde_json::from_value(json!({
            "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
            "metadata": {"name": name, "namespace": "team"}, "spec": spec
        }))
        .unwrap()
    }
    fn sub(name: &str) -> Sub {
        ObjectRef::new(name).within("team")
    }

    #[test]
    fn keys_wake_only_the_subaccounts_they_join_or_leave() {
        let m = Membership::default();
        assert_eq!(m.observe(&Event::Apply(key("a", Some("s1")))), vec![sub("s1")]);
        assert_eq!(
            m.observe(&Event::Apply(key("a", Some("s1")))),
            vec![],
            "a status write"
        );
        assert_eq!(m.observe(&Event::Apply(key("b", None))), vec![]);
        assert_eq!(
            m.observe(&Event::Apply(key("a", Some("s2")))),
            vec![sub("s1"), sub("s2")]
        );
        assert_eq!((m.count(&sub("s1")), m.count(&sub("s2"))), (0, 1));
        let mut deleting = key("a", Some("s2"));
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert_eq!(m.observe(&Event::Apply(deleting)), vec![sub("s2")]);
        assert_eq!(m.count(&sub("s2")), 0);
    }

    fn subaccount(name: &str, sid: Option<&str>) -> TwilioSubaccount {
        serde_json::from_value(json!({
            "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount",
            "metadata": {"name": name, "namespace": "team", "generation": 1}, "spec": {},
            "status": {"sid": sid}
        }))
        .unwrap()
    }

    #[test]
    fn subaccounts_wake_their_keys_only_when_what_keys_read_changes() {
        let mut views = KeyViews::default();
        assert_eq!(
            views.observe(&Event::Apply(subaccount("s1", None))),
            vec![sub("s1")]
        );
        assert_eq!(
            views.observe(&Event::Apply(subaccount("s1", None))),
            vec![],
            "unchanged"
        );
        let mut usage_only = subaccount("s1", None);
        usage_only.status.as_mut().unwrap().api_keys = Some(3);
        assert_eq!(
            views.observe(&Event::Apply(usage_only)),
            vec![],
            "a count is not read"
        );
        assert_eq!(
            views.observe(&Event::Apply(subaccount("s1", Some("AC1")))),
            vec![sub("s1")]
        );
        views.observe(&Event::Apply(subaccount("s2", None)));
        assert_eq!(views.observe(&Event::Init), vec![]);
        assert_eq!(
            views.observe(&Event::InitApply(subaccount("s1", Some("AC1")))),
            vec![]
        );
        assert_eq!(
            views.observe(&Event::InitDone),
            vec![sub("s2")],
            "gone while down"
        );
        assert_eq!(
            views.observe(&Event::Delete(subaccount("s1", None))),
            vec![sub("s1")]
        );
    }

    #[test]
    fn a_relist_drops_the_keys_it_no_longer_lists() {
        let m = Membership::default();
        m.observe(&Event::Apply(key("a", Some("s1"))));
        m.observe(&Event::Apply(key("b", Some("s1"))));
        assert_eq!(m.observe(&Event::Init), vec![]);
        assert_eq!(m.observe(&Event::InitApply(key("a", Some("s1")))), vec![]);
        assert_eq!(m.observe(&Event::InitDone), vec![sub("s1")]);
        assert_eq!(m.keys_of(&sub("s1")), vec![ObjectRef::new("a").within("team")]);
        assert_eq!(m.observe(&Event::Delete(key("a", Some("s1")))), vec![sub("s1")]);
        assert_eq!(m.count(&sub("s1")), 0);
    }
}
