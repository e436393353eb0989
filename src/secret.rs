//! The Secrets the operator publishes credentials in: pure builders ([`build`]) and readers
//! ([`observe`]: ours and intact, ours but edited, or somebody else's, which is never
//! overwritten), and the resourceVersion of each owned Secret from their watch ([`Versions`]). A
//! published Secret carries annotations saying what it holds, so the operator can tell without
//! Twilio whether it is intact; whoever edits the Secret can forge them, so they are weighed,
//! never trusted.

use crate::fingerprint;
use crate::objects::Unlisted;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// The label every published Secret carries, with [`MANAGED_BY`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "twilio-operator";
/// Label selector for the Secrets this operator owns; the only Secrets it watches.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=twilio-operator";
/// The prefix of every annotation the operator writes on a Secret.
const OWN_PREFIX: &str = "twilio.operator.dev/";
/// The SID of the credential the Secret holds.
pub const CREDENTIAL_SID_ANNOTATION: &str = "twilio.operator.dev/credential-sid";
/// When the credential was published (RFC 3339).
pub const CREATED_AT_ANNOTATION: &str = "twilio.operator.dev/created-at";
/// A short digest of the secret value, to notice edits.
pub const DIGEST_ANNOTATION: &str = "twilio.operator.dev/secret-digest";
/// A digest of the template the data was rendered from (templated Secrets only).
pub const TEMPLATE_DIGEST_ANNOTATION: &str = "twilio.operator.dev/template-digest";
/// A digest of all the data as written (templated Secrets only), to notice edits.
pub const DATA_DIGEST_ANNOTATION: &str = "twilio.operator.dev/data-digest";
/// The rotate-annotation value the credential answered, so a restart never answers it twice.
pub const REQUEST_ANNOTATION: &str = "twilio.operator.dev/rotation-request";
/// The generation of the owner the Secret was built for: a Secret Kubernetes accepted for this
/// generation needs no dry run before the next credential is asked for, even after a restart.
pub const GENERATION_ANNOTATION: &str = "twilio.operator.dev/owner-generation";

/// What goes into a published Secret.
pub struct Published<'a> {
    /// The Secret's name.
    pub name: &'a str,
    /// The Secret's namespace.
    pub namespace: &'a str,
    /// The object controlling it.
    pub owner: OwnerReference,
    /// Labels from the spec, beside the managed-by label.
    pub labels: &'a BTreeMap<String, String>,
    /// Annotations from the spec, beside the operator's own.
    pub annotations: &'a BTreeMap<String, String>,
    /// The SID the credential belongs to (a key SID, or the account SID for auth tokens).
    pub credential_sid: &'a str,
    /// When the credential was created.
    pub created_at: Timestamp,
    /// The rotation request this credential answered, if any.
    pub request: Option<&'a str>,
    /// The Secret's type.
    pub type_: &'a str,
    /// Data key -> value.
    pub data: Vec<(&'a str, &'a str)>,
    /// The secret value (key secret or auth token), for the digest.
    pub secret_value: &'a str,
    /// The digest of the template `data` was rendered from, if any.
    pub template_digest: Option<String>,
    /// The owner's generation the Secret was built for.
    pub generation: Option<i64>,
}

/// The Secret to apply for `p`.
///
/// The Secret has the spec's type (Opaque by default), is labelled
/// `app.kubernetes.io/managed-by: twilio-operator`, controlled (ownerReference) by its object, and
/// annotated with the key SID, creation time, a short digest of the secret value and, on a key's
/// Secret, the owner's generation it was built for. A templated Secret also records digests of its
/// template and of all its data, since its keys hold rendered text.
pub fn build(p: &Published<'_>) -> Secret {
    let mut labels = p.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    // The operator's own annotations say what the Secret holds: never taken from the spec.
    let mut annotations = p.annotations.clone();
    annotations.retain(|k, _| !k.starts_with(OWN_PREFIX));
    annotations.insert(CREDENTIAL_SID_ANNOTATION.into(), p.credential_sid.into());
    annotations.insert(CREATED_AT_ANNOTATION.into(), p.created_at.to_string());
    if let Some(request) = p.request {
        annotations.insert(REQUEST_ANNOTATION.into(), request.into());
    }
    annotations.insert(DIGEST_ANNOTATION.into(), fingerprint::digest(p.secret_value));
    if let Some(generation) = p.generation {
        annotations.insert(GENERATION_ANNOTATION.into(), generation.to_string());
    }
    if let Some(template) = &p.template_digest {
        annotations.insert(TEMPLATE_DIGEST_ANNOTATION.into(), template.clone());
        annotations.insert(
            DATA_DIGEST_ANNOTATION.into(),
            fingerprint::data_digest(p.data.iter().map(|(k, v)| (*k, v.as_bytes()))),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(p.name.into()),
            namespace: Some(p.namespace.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![p.owner.clone()]),
            ..Default::default()
        },
        type_: Some(p.type_.into()),
        data: Some(
            p.data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The resourceVersion of each Secret the operator owns, as its watch last saw it.
#[derive(Default)]
pub struct Versions {
    inner: Mutex<VersionIndex>,
}

#[derive(Default)]
struct VersionIndex {
    current: HashMap<ObjectRef<Secret>, String>,
    unlisted: Unlisted<ObjectRef<Secret>>,
}

impl Versions {
    /// Applies one event of the watch of the operator's Secrets, in order.
    pub fn observe(&self, event: &Event<PartialObjectMeta<Secret>>) {
        let mut index = self.inner.lock().expect("Secret versions");
        let id = |meta: &ObjectMeta| {
            ObjectRef::new(meta.name.as_deref().unwrap_or_default())
                .within(meta.namespace.as_deref().unwrap_or_default())
        };
        match event {
            Event::Init => {
                let VersionIndex { current, unlisted } = &mut *index;
                unlisted.start(current.keys());
            }
            Event::InitApply(secret) | Event::Apply(secret) => {
                let id = id(&secret.metadata);
                index.unlisted.listed(&id);
                let version = secret.metadata.resource_version.clone().unwrap_or_default();
                index.current.insert(id, version);
            }
            Event::Delete(secret) => {
                index.current.remove(&id(&secret.metadata));
            }
            Event::InitDone => {
                for gone in index.unlisted.finish() {
                    index.current.remove(&gone);
                }
            }
        }
    }

    /// The resourceVersion the Secret `namespace/name` is at, if the operator owns it.
    pub fn current(&self, namespace: &str, name: &str) -> Option<String> {
        let id = ObjectRef::new(name).within(namespace);
        self.inner
            .lock()
            .expect("Secret versions")
            .current
            .get(&id)
            .cloned()
    }
}

/// An existing Secret, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// No Secret by that name.
    Missing,
    /// Exists but is not controlled by this object: never touched.
    Conflict,
    /// Controlled by this object; what it holds.
    Ours(Record),
}

/// What an owned Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The SID the credential-SID annotation names.
    pub credential_sid: Option<String>,
    /// When the credential was published.
    pub created_at: Option<Timestamp>,
    /// The rotation request the credential answered.
    pub request: Option<String>,
    /// The short digest of the secret value, as written.
    pub digest: Option<String>,
    /// The owner's generation it was written for.
    pub generation: Option<i64>,
    /// The data still matches what the operator wrote: every expected key present and holding
    /// what [`Expect`] says.
    pub intact: bool,
}

/// What one data key of an owned Secret must hold.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// Exactly this value.
    Equals(&'a str),
    /// The SID recorded in the credential-SID annotation.
    CredentialSid,
    /// A value matching the recorded digest: the secret itself.
    Secret,
}

/// What a Secret's data must be: the credentials under their keys, or the rendering of a
/// template (whose digest is given).
#[derive(Debug, Clone)]
pub enum Shape<'a> {
    /// Each data key holds what [`Expect`] says.
    Keys(&'a [(&'a str, Expect<'a>)]),
    /// The data the operator wrote under `keys` is as written from the template with this
    /// digest; keys somebody else added are no concern.
    Template {
        /// The template's digest.
        digest: &'a str,
        /// The keys the rendering writes.
        keys: Vec<&'a str>,
    },
}

impl<'a> Shape<'a> {
    /// The shape of a Secret rendered from `template`, or without one holding `expected`.
    pub fn of(
        template: Option<&'a crate::template::Template>,
        expected: &'a [(&'a str, Expect<'a>)],
    ) -> Self {
        match template {
            Some(t) => Shape::Template {
                digest: t.digest(),
                keys: t.keys(expected.iter().map(|(k, _)| *k)),
            },
            None => Shape::Keys(expected),
        }
    }
}

/// Classifies `secret` for the object with `owner_uid`, checking its data has `shape`.
pub fn observe(secret: Option<&Secret>, owner_uid: &str, shape: Shape<'_>) -> Observed {
    let Some(secret) = secret else {
        return Observed::Missing;
    };
    let controlled = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == owner_uid && o.controller == Some(true));
    if !controlled {
        return Observed::Conflict;
    }
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| data.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok());
    let credential_sid = annotations.get(CREDENTIAL_SID_ANNOTATION).cloned();
    let recorded_digest = annotations.get(DIGEST_ANNOTATION).cloned();
    let written_template = annotations.get(TEMPLATE_DIGEST_ANNOTATION);
    let intact = match shape {
        Shape::Keys(expected) => {
            written_template.is_none()
                && expected.iter().all(|(key, want)| match (text(key), want) {
                    (Some(have), Expect::Equals(want)) => have == *want,
                    (Some(have), Expect::CredentialSid) => credential_sid.as_ref() == Some(&have),
                    (Some(have), Expect::Secret) => {
                        recorded_digest.as_ref() == Some(&fingerprint::digest(&have))
                    }
                    (None, _) => false,
                })
        }
        Shape::Template {
            digest: template,
            keys,
        } => {
            let written: Option<Vec<(&str, &[u8])>> = keys
                .iter()
                .map(|k| data.get(*k).map(|v| (*k, v.0.as_slice())))
                .collect();
            written_template.map(String::as_str) == Some(template)
                && written.is_some_and(|w| {
                    annotations.get(DATA_DIGEST_ANNOTATION) == Some(&fingerprint::data_digest(w.into_iter()))
                })
        }
    };
    Observed::Ours(Record {
        credential_sid,
        created_at: annotations
            .get(CREATED_AT_ANNOTATION)
            .and_then(|t| t.parse().ok()),
        request: annotations.get(REQUEST_ANNOTATION).cloned(),
        digest: recorded_digest,
        generation: annotations
            .get(GENERATION_ANNOTATION)
            .and_then(|g| g.parse().ok()),
        intact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str, version: &str) -> PartialObjectMeta<Secret> {
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.name = Some(name.into());
        secret.metadata.namespace = Some("ns".into());
        secret.metadata.resource_version = Some(version.into());
        secret
    }

    #[test]
    fn versions_follow_the_watch_and_a_relist_drops_what_went() {
        let versions = Versions::default();
        versions.observe(&Event::Apply(seen("a", "1")));
        versions.observe(&Event::Apply(seen("b", "2")));
        versions.observe(&Event::Apply(seen("a", "3")));
        assert_eq!(versions.current("ns", "a").as_deref(), Some("3"));
        assert_eq!(versions.current("other", "a"), None);
        versions.observe(&Event::Delete(seen("a", "4")));
        assert_eq!(versions.current("ns", "a"), None);
        // b went while the watch was down: the relist does not list it.
        versions.observe(&Event::Apply(seen("a", "5")));
        versions.observe(&Event::Init);
        versions.observe(&Event::InitApply(seen("a", "6")));
        assert_eq!(
            versions.current("ns", "b").as_deref(),
            Some("2"),
            "known until the relist is done"
        );
        versions.observe(&Event::InitDone);
        assert_eq!(versions.current("ns", "a").as_deref(), Some("6"));
        assert_eq!(versions.current("ns", "b"), None);
    }

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "K".into(),
            name: "o".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn published(labels: &BTreeMap<String, String>) -> Secret {
        build(&Published {
            name: "s",
            namespace: "ns",
            owner: owner("uid-1"),
            labels,
            annotations: labels,
            credential_sid: "SK1",
            created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            request: Some("r1"),
            type_: "Opaque",
            data: vec![("SID", "SK1"), ("SECRET", "value")],
            secret_value: "value",
            template_digest: None,
            generation: Some(1),
        })
    }

    #[test]
    fn builds_an_owned_labelled_secret_without_secret_in_metadata() {
        let labels = BTreeMap::from([("team".to_owned(), "a".to_owned())]);
        let s = published(&labels);
        let meta = &s.metadata;
        assert_eq!(meta.labels.as_ref().unwrap()[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(meta.labels.as_ref().unwrap()["team"], "a");
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert!(!serde_json::to_string(meta).unwrap().contains("value"));
    }

    #[test]
    fn tells_intact_from_edited_from_foreign() {
        let s = published(&BTreeMap::new());
        let expect = [("SID", Expect::CredentialSid), ("SECRET", Expect::Secret)];
        assert!(
            matches!(observe(Some(&s), "uid-1", Shape::Keys(&expect)), Observed::Ours(Record { intact: true, ref request, generation: Some(1), .. }) if request.as_deref() == Some("r1"))
        );
        assert_eq!(
            observe(Some(&s), "other", Shape::Keys(&expect)),
            Observed::Conflict
        );
        assert_eq!(observe(None, "uid-1", Shape::Keys(&expect)), Observed::Missing);
        let mut edited = s.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("SECRET".into(), ByteString(b"changed".to_vec()));
        assert!(matches!(
            observe(Some(&edited), "uid-1", Shape::Keys(&expect)),
            Observed::Ours(Record { intact: false, .. })
        ));
        let mut renamed = s.clone();
        renamed.data.as_mut().unwrap().remove("SID");
        assert!(matches!(
            observe(Some(&renamed), "uid-1", Shape::Keys(&expect)),
            Observed::Ours(Record { intact: false, .. })
        ));
        let fixed = [("SID", Expect::Equals("SK2"))];
        assert!(matches!(
            observe(Some(&s), "uid-1", Shape::Keys(&fixed)),
            Observed::Ours(Record { intact: false, .. })
        ));
    }

    #[test]
    fn a_templated_secret_is_intact_only_as_written_from_the_same_template() {
        let mut p = Published {
            name: "s",
            namespace: "ns",
            owner: owner("uid-1"),
            labels: &BTreeMap::new(),
            annotations: &BTreeMap::new(),
            credential_sid: "SK1",
            created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            request: None,
            type_: "kubernetes.io/basic-auth",
            data: vec![("username", "SK1"), ("password", "value")],
            secret_value: "value",
            template_digest: Some("t1".into()),
            generation: None,
        };
        let s = build(&p);
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        let intact = |s: &Secret, template: &str| {
            matches!(
                observe(
                    Some(s),
                    "uid-1",
                    Shape::Template {
                        digest: template,
                        keys: vec!["username", "password"]
                    }
                ),
                Observed::Ours(Record { intact: true, .. })
            )
        };
        assert!(intact(&s, "t1"));
        assert!(!intact(&s, "t2"), "another template");
        let mut edited = s.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("password".into(), ByteString(b"x".to_vec()));
        assert!(!intact(&edited, "t1"), "edited data");
        let mut added = s.clone();
        added
            .data
            .as_mut()
            .unwrap()
            .insert("token".into(), ByteString(b"x".to_vec()));
        assert!(
            intact(&added, "t1"),
            "a key somebody else added is no edit of ours"
        );
        let keys = [("username", Expect::CredentialSid)];
        assert!(
            matches!(
                observe(Some(&s), "uid-1", Shape::Keys(&keys)),
                Observed::Ours(Record { intact: false, .. })
            ),
            "a templated Secret is not what an untemplated spec wants"
        );
        p.template_digest = None;
        assert!(
            !intact(&build(&p), "t1"),
            "an untemplated Secret is not what a template wants"
        );
        let forged = BTreeMap::from([(TEMPLATE_DIGEST_ANNOTATION.to_owned(), "x".to_owned())]);
        p.annotations = &forged;
        let plain = build(&p);
        assert!(
            !plain
                .metadata
                .annotations
                .unwrap()
                .contains_key(TEMPLATE_DIGEST_ANNOTATION),
            "the spec cannot set the operator's annotations"
        );
    }
}
