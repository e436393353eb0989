//! `TwilioAccount`: a Twilio account the operator may act for, and who may use it.
//!
//! Contract: cluster-scoped, like a ClusterIssuer or a ClusterSecretStore, so only a cluster
//! admin can grant a namespace the operator's Twilio power. The spec names the credentials
//! (exactly one source) and the policy: which namespaces may use the account, which keys they
//! may mint in it, and what they may do with subaccounts. Defaults are the safe ones: no
//! namespace is admitted, and Close is not an allowed deletionPolicy.

use super::apikey::KeyType;
use super::subaccount::{BudgetAction, SubaccountDeletionPolicy};
use super::{DNS1123_LABEL, DNS1123_SUBDOMAIN, conditions_schema};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A permission pattern: a Twilio permission path, or a path ending in `/*` that admits every
/// permission under it.
pub const PERMISSION_PATTERN: &str = r"^(/\*|(/[A-Za-z0-9_-]+)+(/\*)?)$";

/// A Twilio account the operator may act for, and the policy for using it. Namespaced
/// TwilioSubaccounts and TwilioApiKeys use it through spec.accountRef (default: the TwilioAccount
/// named "default"), but only from the namespaces spec.namespaces admits, and only for what
/// spec.apiKeys and spec.subaccounts allow. Anything else gets Ready=False, reason NotPermitted,
/// and no Twilio call.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "twilio.operator.dev",
    version = "v1alpha1",
    kind = "TwilioAccount",
    status = "TwilioAccountStatus",
    shortname = "twacct",
    category = "twilio",
    doc = "A Twilio account twilio-operator may act for, and which namespaces may use it for what. Cluster-scoped: only cluster admins grant Twilio power to namespaces.",
    printcolumn(
        name = "Account SID",
        type_ = "string",
        json_path = ".status.accountSid",
        description = "SID of the account the credentials belong to"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the credentials authenticate at Twilio"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct TwilioAccountSpec {
    /// Where the account's credentials come from: exactly one of fromEnvironment and secretRef.
    pub credentials: AccountCredentials,

    /// Which namespaces may use this account. Absent or empty admits no namespace: list names,
    /// or select namespaces by label, or both (a namespace matching either is admitted).
    #[serde(default)]
    pub namespaces: NamespacePolicy,

    /// What admitted namespaces may do with API keys in this account itself (keys inside a
    /// TwilioSubaccount belong to that subaccount and are not limited here).
    #[serde(default)]
    pub api_keys: ApiKeyPolicy,

    /// What admitted namespaces may do with subaccounts of this account.
    #[serde(default)]
    pub subaccounts: SubaccountPolicy,
}

/// The account's credentials.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.fromEnvironment) && self.fromEnvironment) != has(self.secretRef)")
    .message("credentials needs exactly one source: fromEnvironment: true, or secretRef"))]
pub struct AccountCredentials {
    /// Use the operator's own environment (TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or with
    /// TWILIO_API_KEY and TWILIO_API_SECRET of a Main key), as the Helm chart sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_environment: Option<bool>,

    /// A Secret holding the same keys as the environment would. The operator must be allowed to
    /// read it (the chart grants its own namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// A Secret in a given namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    /// The Secret's namespace.
    #[schemars(length(min = 1, max = 63), pattern(crate::api::DNS1123_LABEL))]
    pub namespace: String,
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), pattern(crate::api::DNS1123_SUBDOMAIN))]
    pub name: String,
}

/// The namespaces admitted to use the account.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NamespacePolicy {
    /// Namespaces admitted by exact name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL}))]
    pub names: Vec<String>,

    /// Namespaces admitted by their labels. An empty selector ({}) admits every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// What may be done with keys in the account itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyPolicy {
    /// The key types that may be created. Defaults to both; an empty list forbids keys here.
    #[serde(default = "all_key_types")]
    pub key_types: Vec<KeyType>,

    /// When set, every permission of a Restricted key must match one of these patterns: a
    /// permission path such as "/twilio/messaging/messages/create", or a path ending in "/*"
    /// such as "/twilio/messaging/*", which admits every permission under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("items" = {"type": "string", "maxLength": 256, "pattern": PERMISSION_PATTERN}))]
    pub permissions: Option<Vec<String>>,

    /// The most TwilioApiKeys one namespace may keep in the account itself (those with
    /// accountRef, or none, naming it); the ones created after get reason QuotaExceeded before
    /// any Twilio call. Keys in a TwilioSubaccount count against that subaccount. Absent: no
    /// limit. With sharding, each shard counts its own objects: a ResourceQuota bounds the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_namespace: Option<u32>,
}

impl Default for ApiKeyPolicy {
    fn default() -> Self {
        Self {
            key_types: all_key_types(),
            permissions: None,
            max_per_namespace: None,
        }
    }
}

fn all_key_types() -> Vec<KeyType> {
    vec![KeyType::Standard, KeyType::Restricted]
}

/// What may be done with subaccounts of the account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubaccountPolicy {
    /// Whether admitted namespaces may create subaccounts. Defaults to true.
    #[serde(default = "yes")]
    pub create: bool,

    /// Grants to adopt an existing subaccount: a TwilioSubaccount may set spec.sid only to a SID
    /// granted to its namespace here. None by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopt: Vec<AdoptGrant>,

    /// The deletionPolicies TwilioSubaccounts may use. Defaults to [Retain, Suspend]; list Close
    /// to allow closing subaccounts, which is irreversible. An object deleted with a policy that
    /// is not allowed gets the mildest allowed one (Retain, then Suspend, then Close).
    #[serde(default = "safe_deletion_policies")]
    pub deletion_policies: Vec<SubaccountDeletionPolicy>,

    /// What spec.budget of the subaccounts must say. By default a budget is optional and
    /// unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetPolicy>,

    /// The most TwilioSubaccounts one namespace may keep under the account; the ones created
    /// after get reason QuotaExceeded before any Twilio call. Absent: no limit. With sharding,
    /// each shard counts its own objects: a ResourceQuota bounds the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_namespace: Option<u32>,

    /// What the subaccounts' voice dialing permissions may allow. By default high-risk ranges
    /// are forbidden (and so is inheriting the parent's permissions), any country may be
    /// enabled, and declaring permissions is optional.
    #[serde(default)]
    pub voice: VoicePolicy,
}

/// What the voice dialing permissions of an account's subaccounts may allow. A subaccount whose
/// spec.voice asks for more gets NotPermitted before any Twilio call; one that already exists is
/// narrowed at Twilio to what this allows, with a Warning event.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoicePolicy {
    /// The countries (ISO 3166-1 alpha-2 codes) subaccounts may enable. Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 250), extend("x-kubernetes-list-type" = "set", "items" = {"type": "string", "pattern": "^[A-Z]{2}$"}))]
    pub countries: Option<Vec<String>>,

    /// Whether subaccounts may enable high-risk special and toll-fraud ranges: Forbid
    /// (default) or Allow.
    #[serde(default)]
    pub high_risk: HighRiskPolicy,

    /// Whether every TwilioSubaccount of this account must declare
    /// spec.voice.dialingPermissions with inherit: false. Defaults to false.
    #[serde(default)]
    pub required: bool,
}

/// Whether high-risk number ranges may be enabled.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HighRiskPolicy {
    /// No subaccount may enable them.
    #[default]
    Forbid,
    /// Subaccounts may enable them.
    Allow,
}

/// What the budgets of an account's subaccounts must say.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetPolicy {
    /// Whether every TwilioSubaccount must set spec.budget. Defaults to false.
    #[serde(default)]
    pub required: bool,

    /// The largest spec.budget.monthly allowed, as a decimal string such as "100.00".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), pattern(r"^[0-9]{1,10}(\.[0-9]{1,4})?$"))]
    pub max_monthly: Option<String>,

    /// The spec.budget.actions allowed. Defaults to both; [Suspend] makes every budget stop
    /// the spend, so a namespace cannot turn its own limit into a mere alert.
    #[serde(default = "all_budget_actions")]
    #[schemars(length(min = 1))]
    pub actions: Vec<BudgetAction>,
}

fn all_budget_actions() -> Vec<BudgetAction> {
    vec![BudgetAction::Alert, BudgetAction::Suspend]
}

impl Default for SubaccountPolicy {
    fn default() -> Self {
        Self {
            create: true,
            adopt: Vec::new(),
            deletion_policies: safe_deletion_policies(),
            budget: None,
            max_per_namespace: None,
            voice: VoicePolicy::default(),
        }
    }
}

fn yes() -> bool {
    true
}

fn safe_deletion_policies() -> Vec<SubaccountDeletionPolicy> {
    vec![
        SubaccountDeletionPolicy::Retain,
        SubaccountDeletionPolicy::Suspend,
    ]
}

/// A grant to adopt one existing subaccount from one namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct AdoptGrant {
    /// The subaccount's SID.
    #[schemars(pattern(r"^AC[0-9a-f]{32}$"))]
    pub sid: String,
    /// The namespace whose TwilioSubaccount may adopt it.
    #[schemars(length(min = 1, max = 63), pattern(crate::api::DNS1123_LABEL))]
    pub namespace: String,
}

/// What the operator observed of the account.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TwilioAccountStatus {
    /// SID of the account the credentials belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,

    /// Ready is True when the credentials authenticate at Twilio.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The metadata.generation the operator last judged, whether or not the account worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The account's balance, read once per resync interval. Absent when Twilio gives none
    /// (a subaccount's credentials) or it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<AccountBalance>,
}

/// An account's balance as Twilio reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountBalance {
    /// The balance, as the decimal string Twilio reports, such as "123.45".
    pub amount: String,
    /// Its currency, as Twilio reports it (for example USD).
    pub currency: String,
    /// When it was read.
    pub observed_at: Time,
}

/// A reference to a TwilioAccount.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct AccountRef {
    /// Name of the TwilioAccount (cluster-scoped).
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN))]
    pub name: String,
}
