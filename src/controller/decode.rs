//! Reading watched objects: each one's JSON is read once as its kind, and one that cannot be
//! is reported with a Warning event and left out of the cache until it is repaired, so it never
//! stalls the watch of the others. (kube's `DeserializeGuard` buffers every object as a generic
//! value tree and copies it: a quarter of the operator's CPU under a burst of status writes.)

use crate::context::{Recorder, publish};
use crate::objects;
use futures::{Stream, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt::Debug;

/// Watches `api`, leaving out every object that cannot be read as `K`: each is reported with a
/// Warning event and leaves `cache` (the store this stream feeds) until it is repaired. Without
/// this, one such object fails every list and watch of its kind, and nothing of that kind is
/// reconciled any more.
pub(super) fn readable<K>(
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
pub(super) struct Readable<K>(Result<K, Unreadable>);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TwilioApiKey;
    use kube::ResourceExt;

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
}
