//! The Secrets the operator publishes credentials in: pure builders and readers.
//!
//! Contract:
//! - a published Secret is Opaque, labelled `app.kubernetes.io/managed-by: twilio-operator`,
//!   controlled (ownerReference) by its object, and annotated with what it holds (key SID,
//!   creation time, a short SHA-256 of the secret value) so the operator can tell, without
//!   reading Twilio, whether the data is intact and which key it carries;
//! - [`observe`] classifies an existing Secret: ours and intact, ours but edited, or somebody
//!   else's (a conflict the operator never overwrites).

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The label every published Secret carries, with [`MANAGED_BY`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "twilio-operator";
/// Label selector for the Secrets this operator owns; the only Secrets it watches.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=twilio-operator";
/// The SID of the credential the Secret holds.
pub const CREDENTIAL_SID_ANNOTATION: &str = "twilio.operator.dev/credential-sid";
/// When the credential was published (RFC 3339).
pub const CREATED_AT_ANNOTATION: &str = "twilio.operator.dev/created-at";
/// A short digest of the secret value, to notice edits.
pub const DIGEST_ANNOTATION: &str = "twilio.operator.dev/secret-digest";
/// The rotate-annotation value the credential answered, so a restart never answers it twice.
pub const REQUEST_ANNOTATION: &str = "twilio.operator.dev/rotation-request";

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
    /// Data key -> value; exactly one of them is the secret, named by `secret_key`.
    pub data: Vec<(&'a str, &'a str)>,
    /// The data key whose value is the secret, for the digest.
    pub secret_key: &'a str,
}

/// A short digest of a secret value: enough to notice an edit, useless to an attacker, since
/// the value is 32 random characters.
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Secret to apply for `p`.
pub fn build(p: &Published<'_>) -> Secret {
    let mut labels = p.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let mut annotations = p.annotations.clone();
    annotations.insert(CREDENTIAL_SID_ANNOTATION.into(), p.credential_sid.into());
    annotations.insert(CREATED_AT_ANNOTATION.into(), p.created_at.to_string());
    if let Some(request) = p.request {
        annotations.insert(REQUEST_ANNOTATION.into(), request.into());
    }
    let secret_value = p
        .data
        .iter()
        .find(|(k, _)| *k == p.secret_key)
        .map(|(_, v)| *v)
        .unwrap_or_default();
    annotations.insert(DIGEST_ANNOTATION.into(), digest(secret_value));
    Secret {
        metadata: ObjectMeta {
            name: Some(p.name.into()),
            namespace: Some(p.namespace.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![p.owner.clone()]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            p.data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
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

/// Classifies `secret` for the object with `owner_uid`, checking each data key in `expected`.
pub fn observe(secret: Option<&Secret>, owner_uid: &str, expected: &[(&str, Expect<'_>)]) -> Observed {
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
    let intact = expected.iter().all(|(key, want)| match (text(key), want) {
        (Some(have), Expect::Equals(want)) => have == *want,
        (Some(have), Expect::CredentialSid) => credential_sid.as_ref() == Some(&have),
        (Some(have), Expect::Secret) => recorded_digest.as_ref() == Some(&digest(&have)),
        (None, _) => false,
    });
    Observed::Ours(Record {
        credential_sid,
        created_at: annotations
            .get(CREATED_AT_ANNOTATION)
            .and_then(|t| t.parse().ok()),
        request: annotations.get(REQUEST_ANNOTATION).cloned(),
        digest: recorded_digest,
        intact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            data: vec![("SID", "SK1"), ("SECRET", "value")],
            secret_key: "SECRET",
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
            matches!(observe(Some(&s), "uid-1", &expect), Observed::Ours(Record { intact: true, ref request, .. }) if request.as_deref() == Some("r1"))
        );
        assert_eq!(observe(Some(&s), "other", &expect), Observed::Conflict);
        assert_eq!(observe(None, "uid-1", &expect), Observed::Missing);
        let mut edited = s.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("SECRET".into(), ByteString(b"changed".to_vec()));
        assert!(matches!(
            observe(Some(&edited), "uid-1", &expect),
            Observed::Ours(Record { intact: false, .. })
        ));
        let mut renamed = s.clone();
        renamed.data.as_mut().unwrap().remove("SID");
        assert!(matches!(
            observe(Some(&renamed), "uid-1", &expect),
            Observed::Ours(Record { intact: false, .. })
        ));
        let fixed = [("SID", Expect::Equals("SK2"))];
        assert!(matches!(
            observe(Some(&s), "uid-1", &fixed),
            Observed::Ours(Record { intact: false, .. })
        ));
    }
}
