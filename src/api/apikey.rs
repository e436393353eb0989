//! `TwilioApiKey`: a Twilio API key whose credentials the operator keeps in a Secret.
//!
//! Contract: the spec says which key should exist, where its credentials go and when it rotates;
//! the status is the operator's record of the live key, the retiring ones and the schedule, so
//! that a restarted operator reaches the same decisions. Admission rules live on the types below.

use super::{
    AccountRef, LocalRef, at_most_one_rule, conditions_schema, duration_schema,
    grace_shorter_than_every_rule, immutable_rule, min_duration_rule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Twilio API key, written to a Secret in this namespace and rotated without downtime.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "twilio.operator.dev",
    version = "v1alpha1",
    kind = "TwilioApiKey",
    namespaced,
    status = "TwilioApiKeyStatus",
    shortname = "twkey",
    category = "twilio",
    doc = "A Twilio API key managed by twilio-operator. Its SID and secret are written to a Secret; annotate the object with twilio.operator.dev/rotate=<any new value> to rotate it now.",
    printcolumn(
        name = "Key SID",
        type_ = "string",
        json_path = ".status.keySid",
        description = "SID of the current key"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.secretName",
        description = "Secret holding the credentials"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the key is live and published"
    ),
    printcolumn(
        name = "Next rotation",
        type_ = "string",
        json_path = ".status.nextRotationAt",
        description = "When the key rotates next"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = at_most_one_rule(&["accountRef", "subaccountRef", "credentialsRef"], "a key lives in a TwilioAccount, in a TwilioSubaccount, or in the account of the credentials in a Secret"))]
#[x_kube(validation = immutable_rule("subaccountRef", "a key cannot move between accounts; create a new TwilioApiKey instead"))]
#[x_kube(validation = immutable_rule("accountRef", "a key cannot move between accounts; create a new TwilioApiKey instead"))]
#[x_kube(validation = immutable_rule("credentialsRef", "a key cannot move between accounts; create a new TwilioApiKey instead"))]
#[x_kube(validation = Rule::new("self.keyType == 'Restricted' ? has(self.permissions) : !has(self.permissions)")
    .message("spec.permissions is required when keyType is Restricted (1 to 100 entries) and must be omitted when keyType is Standard")
    .field_path(".permissions"))]
#[serde(rename_all = "camelCase")]
pub struct TwilioApiKeySpec {
    /// Display name of the key at Twilio, 1 to 64 characters. Defaults to "<namespace>/<name>".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub friendly_name: Option<String>,

    /// A TwilioSubaccount in this namespace to create the key in. The key waits (condition
    /// SubaccountNotReady) until that subaccount is Ready. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subaccount_ref: Option<LocalRef>,

    /// The TwilioAccount (cluster-scoped) to create the key in, which must admit this namespace
    /// and allow the key's type and permissions. When accountRef, subaccountRef and
    /// credentialsRef are all absent, the TwilioAccount named "default" is used. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_ref: Option<AccountRef>,

    /// Secret in this namespace holding the credentials of your own account to create the key
    /// in: TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or TWILIO_ACCOUNT_SID with TWILIO_API_KEY and
    /// TWILIO_API_SECRET of a Main key. Needs no TwilioAccount. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<LocalRef>,

    /// Standard (default) keys can use every Twilio API except account and key management.
    /// Restricted keys can use only the APIs listed in permissions. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("spec.keyType is immutable: create a new TwilioApiKey to change the key type"))]
    pub key_type: KeyType,

    /// Twilio permissions of a Restricted key, such as /twilio/messaging/messages/create. Required
    /// (1 to 100 entries, 4096 characters in all) when keyType is Restricted, forbidden otherwise. Changing the list
    /// updates the key's policy in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 100),
        inner(length(min = 8, max = 256), pattern(r"^/twilio/[^\s]+$"))
    )]
    #[x_kube(validation = Rule::new("self.map(p, size(p)).sum() <= 4096")
        .message("spec.permissions holds at most 4096 characters in all"))]
    pub permissions: Option<Vec<String>>,

    /// The Secret the key's credentials are written to. Defaults to a Secret named after this
    /// object with the keys TWILIO_ACCOUNT_SID, TWILIO_API_KEY and TWILIO_API_SECRET.
    // Boxed: every cached key carries its spec, and most name no Secret settings at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Box<ApiKeySecret>>,

    /// Scheduled rotation. When absent the key rotates only on demand (annotation
    /// twilio.operator.dev/rotate) or when its Secret is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,

    /// Workloads in this namespace to roll whenever the key changes, so that pods reading the
    /// Secret through environment variables pick up the new key. Each rolls once per new key:
    /// a pod-template annotation set to the key SID (for a Rollout, that annotation on the
    /// Rollout and spec.restartAt), which a GitOps tool re-applying the workload leaves alone.
    /// At most 100 workloads in all are restarted per key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.map(w, has(w.name) ? size(w.name) : 0).sum() <= 2048")
        .message("spec.restartWorkloads names hold at most 2048 characters in all"))]
    #[x_kube(validation = Rule::new("self.all(w, !has(w.name) || self.exists_one(x, x.kind == w.kind && has(x.name) && x.name == w.name))")
        .message("spec.restartWorkloads names each workload once"))]
    pub restart_workloads: Vec<WorkloadRef>,

    /// What happens at Twilio when this object is deleted. Delete (default) revokes the current
    /// and retiring keys; Retain leaves them valid.
    #[serde(default)]
    pub deletion_policy: KeyDeletionPolicy,
}

/// Kind of Twilio API key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum KeyType {
    /// A key with the account's full access, except managing accounts and keys.
    #[default]
    Standard,
    /// A key limited to spec.permissions.
    Restricted,
}

/// What to do at Twilio when the TwilioApiKey is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum KeyDeletionPolicy {
    /// Revoke every key of the object at Twilio.
    #[default]
    Delete,
    /// Leave the keys valid at Twilio.
    Retain,
}

/// The Secret that receives the key's credentials.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySecret {
    /// Name of the Secret, a DNS-1123 subdomain. Defaults to metadata.name. The operator creates
    /// and owns it; it never overwrites a Secret it did not create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(crate::api::DNS1123_SUBDOMAIN))]
    pub name: Option<String>,

    /// Labels copied onto the Secret, at most 64 and 1024 characters in all, with Kubernetes
    /// label syntax (keys like "team" or "example.com/team", values of at most 63 characters). app.kubernetes.io/managed-by
    /// is always set by the operator.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": super::LABEL_VALUE}))]
    #[x_kube(validation = Rule::new("!('app.kubernetes.io/managed-by' in self)")
        .message("secret.labels must not set app.kubernetes.io/managed-by: the operator sets it to mark the Secrets it owns"))]
    #[x_kube(validation = super::metadata_keys_rule("secret.labels"))]
    #[x_kube(validation = Rule::new("self.map(k, size(k) + size(self[k])).sum() <= 1024")
        .message("secret.labels hold at most 1024 characters in all, keys and values together"))]
    pub labels: BTreeMap<String, String>,

    /// Annotations copied onto the Secret, at most 64 and 2048 characters in all, keys with
    /// Kubernetes annotation syntax.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    #[x_kube(validation = super::metadata_keys_rule("secret.annotations"))]
    #[x_kube(validation = Rule::new("self.map(k, size(k) + size(self[k])).sum() <= 2048")
        .message("secret.annotations hold at most 2048 characters in all, keys and values together"))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('twilio.operator.dev/'))")
        .message("secret.annotations must not use the twilio.operator.dev/ prefix: the operator records what the Secret holds there"))]
    pub annotations: BTreeMap<String, String>,

    /// Names of the Secret's data keys, to match what the consuming application reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<SecretKeys>,

    /// The Secret's type and template. Template variables: accountSid, apiKey, apiSecret,
    /// keySid, friendlyName, namespace, name, createdAt.
    #[serde(flatten)]
    pub form: super::SecretForm,
}

/// Names of the data keys in the key's Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.accountSid != self.apiKey && self.accountSid != self.apiSecret && self.apiKey != self.apiSecret")
    .message("secret.keys must name three different data keys"))]
pub struct SecretKeys {
    /// Data key holding the account SID. Defaults to TWILIO_ACCOUNT_SID.
    #[serde(default = "default_account_sid_key")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub account_sid: String,
    /// Data key holding the API key SID. Defaults to TWILIO_API_KEY.
    #[serde(default = "default_api_key_key")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub api_key: String,
    /// Data key holding the API key secret. Defaults to TWILIO_API_SECRET.
    #[serde(default = "default_api_secret_key")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub api_secret: String,
}

impl Default for SecretKeys {
    fn default() -> Self {
        Self {
            account_sid: default_account_sid_key(),
            api_key: default_api_key_key(),
            api_secret: default_api_secret_key(),
        }
    }
}

fn default_account_sid_key() -> String {
    "TWILIO_ACCOUNT_SID".to_owned()
}
fn default_api_key_key() -> String {
    "TWILIO_API_KEY".to_owned()
}
fn default_api_secret_key() -> String {
    "TWILIO_API_SECRET".to_owned()
}

/// Scheduled rotation of the key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = grace_shorter_than_every_rule())]
pub struct Rotation {
    /// How often to rotate, counted from the key's creation, as a duration such as "720h"
    /// (30 days). At least 1h. A small per-object jitter spreads keys that share a period.
    #[schemars(schema_with = "duration_schema")]
    #[x_kube(validation = min_duration_rule("rotation.every", "1h"))]
    pub every: String,

    /// How long the previous key stays valid after a rotation, so that every consumer has picked
    /// up the new one, such as "1h". Defaults to 1h; 0s revokes at once; must be shorter than
    /// every.
    #[serde(default = "super::subaccount::default_grace_period")]
    #[schemars(schema_with = "duration_schema")]
    pub grace_period: String,

    /// When scheduled rotations may happen, such as outside business hours. A rotation due
    /// outside a window waits for the next one to open; one asked for (the rotate annotation) or
    /// needed to repair a lost, edited or revoked key happens at once, window or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<RotationWindow>,
}

/// When scheduled rotations may happen.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationWindow {
    /// When the window opens, as a cron schedule of five fields (minute, hour, day of month,
    /// month, day of week), such as "0 2 * * SAT" for 02:00 every Saturday. Lists, ranges, steps
    /// and names (JAN, SAT) are allowed.
    #[schemars(length(min = 9, max = 128))]
    #[x_kube(validation = super::schedule_rule())]
    pub schedule: String,

    /// The IANA time zone the schedule is read in, such as "Europe/Berlin"; the window follows
    /// its daylight saving time. Defaults to UTC.
    #[serde(default = "utc")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = super::time_zone_rule())]
    pub time_zone: String,

    /// How long the window stays open once it opens, such as "4h". At least 10m.
    #[schemars(schema_with = "duration_schema")]
    #[x_kube(validation = min_duration_rule("rotation.window.duration", "10m"))]
    pub duration: String,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A workload to roll when the key changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) != has(self.selector)")
    .message("each spec.restartWorkloads entry names a workload (name) or selects them (selector), not both"))]
pub struct WorkloadRef {
    /// Kind of the workload: Deployment, StatefulSet, DaemonSet, or an Argo Rollouts Rollout.
    pub kind: WorkloadKind,
    /// Name of the workload, in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(crate::api::DNS1123_SUBDOMAIN))]
    pub name: Option<String>,
    /// Instead of a name: every workload of this kind in this namespace carrying these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
}

/// Workloads chosen by their labels.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels a workload must all carry, such as {app: checkout}: 1 to 8, as in a LabelSelector.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 8, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": crate::api::LABEL_VALUE}))]
    #[x_kube(validation = Rule::new(format!("self.all(k, size(k) <= 317 && k.matches(r'{}'))", crate::api::LABEL_KEY))
        .message("selector.matchLabels keys must be label keys, such as app or example.com/tier"))]
    pub match_labels: BTreeMap<String, String>,
}

/// Kinds of workload the operator can roll.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    /// An apps/v1 Deployment.
    Deployment,
    /// An apps/v1 StatefulSet.
    StatefulSet,
    /// An apps/v1 DaemonSet.
    DaemonSet,
    /// An Argo Rollouts (argoproj.io/v1alpha1) Rollout, restarted through its spec.restartAt:
    /// its pods restart in place, without a new revision.
    Rollout,
}

/// The operator's record of the key at Twilio.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TwilioApiKeyStatus {
    /// SID of the account the key belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,

    /// SID of the current key, the one in the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sid: Option<String>,

    /// Name of the Secret holding the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// When the current key was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_created_at: Option<Time>,

    /// When the current key is due to rotate, if rotation is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<Time>,

    /// Previous keys that still work until their revokeAt, so consumers can move over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring_keys: Vec<RetiringKey>,

    /// The window in which the next scheduled rotation happens, when spec.rotation.window is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_window: Option<WindowStatus>,

    /// The value of the twilio.operator.dev/rotate annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_request: Option<String>,

    /// Set just before the operator asks Twilio for a new key and cleared once that key is
    /// recorded; if the operator stops in between, the next reconcile looks for the key it may
    /// have left at Twilio and revokes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<Time>,

    /// The key SID the restartWorkloads were last rolled for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads_rolled_for: Option<String>,

    /// A digest of spec.restartWorkloads as last rolled: a change to the list rolls again, and no
    /// other edit does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads_rolled_digest: Option<String>,

    /// Current state of the object; the Ready condition summarises it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The metadata.generation the operator last judged, whether or not it could apply it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The metadata.generation the operator last applied in full (0: none yet). Absent on objects
    /// written before it existed, where observedGeneration has that meaning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,
}

/// One opening of a rotation window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowStatus {
    /// When it opens.
    pub opens_at: Time,
    /// When it closes.
    pub closes_at: Time,
}

/// A previous key that stays valid until revokeAt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetiringKey {
    /// SID of the previous key.
    pub sid: String,
    /// When the operator revokes it.
    pub revoke_at: Time,
    /// The account the key lives in, where it is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,
}
