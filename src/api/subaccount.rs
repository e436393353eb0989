//! `TwilioSubaccount`: a Twilio subaccount held as a Kubernetes object.
//!
//! Contract: the spec says what should exist at Twilio; the status records what the operator
//! observed there. Admission rules live on the types below; [`TwilioSubaccountSpec`] carries
//! the object-level ones (immutable references, `sid` only at creation, `authTokenRotation`
//! needing `secret`).

use super::{
    AccountRef, LocalRef, at_most_one_rule, conditions_schema, duration_schema,
    grace_shorter_than_every_rule, immutable_rule, min_duration_rule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Twilio subaccount: a tenancy boundary with its own usage, billing and credentials, created
/// under (or adopted from) the parent account whose credentials the operator uses.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "twilio.operator.dev",
    version = "v1alpha1",
    kind = "TwilioSubaccount",
    namespaced,
    status = "TwilioSubaccountStatus",
    shortname = "twsub",
    category = "twilio",
    doc = "A Twilio subaccount managed by twilio-operator. Deleting the object applies spec.deletionPolicy; the default, Retain, leaves the subaccount untouched at Twilio.",
    printcolumn(
        name = "SID",
        type_ = "string",
        json_path = ".status.sid",
        description = "The subaccount's SID"
    ),
    printcolumn(
        name = "Twilio status",
        type_ = "string",
        json_path = ".status.twilioStatus",
        description = "Status as Twilio reports it"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the subaccount matches its spec"
    ),
    printcolumn(
        name = "Budget",
        type_ = "string",
        json_path = ".status.budget.state",
        description = "Month-to-date spend against spec.budget: Ok, Warning or Exceeded"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = immutable_rule("sid", "it can only be given when the TwilioSubaccount is created; to manage a different subaccount, create a new TwilioSubaccount"))]
#[x_kube(validation = at_most_one_rule(&["accountRef", "credentialsRef"], "the parent account is a TwilioAccount or the account of the credentials in a Secret"))]
#[x_kube(validation = immutable_rule("accountRef", "a subaccount cannot move between parent accounts"))]
#[x_kube(validation = immutable_rule("credentialsRef", "a subaccount cannot move between parent accounts"))]
#[x_kube(validation = Rule::new("!has(self.authTokenRotation) || !has(self.secret) || !has(self.secret.template) || self.secret.template.mergePolicy == 'Merge'")
    .message("authTokenRotation with spec.secret.template needs mergePolicy: Merge, so the Secret keeps TWILIO_AUTH_TOKEN: an interrupted rotation is recovered from it")
    .field_path(".secret.template.mergePolicy"))]
#[x_kube(validation = Rule::new("!has(self.authTokenRotation) || has(self.secret)")
    .message("spec.authTokenRotation needs spec.secret: the rotated auth token is published there")
    .field_path(".authTokenRotation")
    .reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct TwilioSubaccountSpec {
    /// Display name at Twilio, 1 to 64 characters. Defaults to "<namespace>/<name>". Changing it
    /// renames the subaccount at Twilio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub friendly_name: Option<String>,

    /// Desired status at Twilio: Active or Suspended. A suspended subaccount cannot send traffic or
    /// authenticate, but keeps its phone numbers (which are still billed).
    #[serde(default)]
    pub state: SubaccountState,

    /// SID of an existing subaccount to adopt instead of creating one (AC followed by 32 lowercase
    /// hex digits). It must be a subaccount of the parent account, and its TwilioAccount must
    /// grant this namespace its adoption (spec.subaccounts.adopt). Only at creation; immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^AC[0-9a-f]{32}$"))]
    pub sid: Option<String>,

    /// The TwilioAccount (cluster-scoped) that is the parent account. It must admit this
    /// namespace and allow what this object asks: creating (or adopting spec.sid) and
    /// deletionPolicy. When both accountRef and credentialsRef are absent, the TwilioAccount named
    /// "default" is used. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_ref: Option<AccountRef>,

    /// Secret in this namespace holding your own parent account's credentials: TWILIO_ACCOUNT_SID
    /// with TWILIO_AUTH_TOKEN, or TWILIO_ACCOUNT_SID with TWILIO_API_KEY and TWILIO_API_SECRET of a
    /// Main key. Needs no TwilioAccount. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<LocalRef>,

    /// What happens at Twilio when this object is deleted. Retain (default) leaves the subaccount
    /// as it is; Suspend suspends it; Close closes it, which is IRREVERSIBLE: Twilio releases its
    /// phone numbers, a closed subaccount can never be reopened, and its data is deleted 30 days
    /// later.
    #[serde(default)]
    pub deletion_policy: SubaccountDeletionPolicy,

    /// Publish the subaccount's own credentials (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN) in a
    /// Secret in this namespace, owned by this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SubaccountSecret>,

    /// Rotate the subaccount's auth token on a schedule, using Twilio's secondary-token flow: the
    /// new token is published in spec.secret for gracePeriod before it is promoted and the old one
    /// stops working. Requires spec.secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token_rotation: Option<AuthTokenRotation>,

    /// A monthly spend limit: the operator reports month-to-date spend against it in
    /// status.budget and the Budget condition, warns once a month at each of warnAt, and with
    /// action Suspend suspends the subaccount at Twilio when spend reaches monthly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,

    /// The subaccount's voice settings the operator keeps at Twilio. Absent: the operator leaves
    /// them as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<SubaccountVoice>,
}

/// Voice settings of a subaccount.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubaccountVoice {
    /// Which countries calls may be made to (Twilio's voice dialing geo permissions), kept as
    /// declared: a change made at Twilio is put back within one resync interval.
    pub dialing_permissions: DialingPermissions,
}

/// Voice dialing geo permissions: the strongest guard against toll fraud, since a leaked
/// credential cannot call a country or a premium range that is not enabled.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.inherit || size(self.countries) == 0")
    .message("spec.voice.dialingPermissions.countries is only allowed with inherit: false; with inherit: true the parent account's permissions apply")
    .field_path(".countries"))]
pub struct DialingPermissions {
    /// Use the parent account's permissions instead of this subaccount's own (Twilio's
    /// DialingPermissionsInheritance). Defaults to false.
    #[serde(default)]
    pub inherit: bool,

    /// The countries that may be dialled, with inherit: false. Every country not listed is
    /// disabled: deny by default. ISO 3166-1 alpha-2 codes, each at most once.
    #[serde(default)]
    #[schemars(length(max = 250), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["isoCode"]))]
    pub countries: Vec<CountryPermission>,
}

/// What may be dialled in one country.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountryPermission {
    /// The country, as an ISO 3166-1 alpha-2 code such as US.
    #[schemars(pattern(r"^[A-Z]{2}$"))]
    pub iso_code: String,

    /// Its ordinary (low-risk) numbers. Defaults to true.
    #[serde(default = "yes")]
    pub low_risk: bool,

    /// Its high-risk special numbers (premium and shared-cost ranges). Defaults to false.
    #[serde(default)]
    pub high_risk_special: bool,

    /// Its high-risk toll-fraud numbers, the ranges Twilio sees used for revenue-share fraud.
    /// Defaults to false.
    #[serde(default)]
    pub high_risk_toll_fraud: bool,
}

fn yes() -> bool {
    true
}

/// A monthly spend limit of a subaccount.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// The limit per calendar month (GMT, as Twilio's usage periods are), as a decimal string
    /// such as "50.00", in the subaccount's billing currency as Twilio reports it.
    #[schemars(length(min = 1, max = 16), pattern(r"^[0-9]{1,10}(\.[0-9]{1,4})?$"))]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')")
        .message("spec.budget.monthly must be more than zero, such as \"50.00\""))]
    pub monthly: String,

    /// Percentages of monthly at which a Warning event is published, once a month each, such as
    /// [50, 80]. Each from 1 to 99. Defaults to [80].
    #[serde(default = "default_warn_at")]
    #[schemars(length(max = 5), extend("x-kubernetes-list-type" = "set", "items" = {"type": "integer", "minimum": 1, "maximum": 99}))]
    pub warn_at: Vec<u8>,

    /// What happens when spend reaches monthly: Alert (default) only reports it; Suspend also
    /// suspends the subaccount at Twilio until the next month or until monthly is raised above
    /// the spend.
    #[serde(default)]
    pub action: BudgetAction,
}

fn default_warn_at() -> Vec<u8> {
    vec![80]
}

/// What reaching a budget does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BudgetAction {
    /// Report it: status, the Budget condition, a Warning event and the metric.
    #[default]
    Alert,
    /// Report it, and suspend the subaccount at Twilio.
    Suspend,
}

/// Where spend stands against the budget.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BudgetState {
    /// Below every warnAt threshold.
    #[default]
    Ok,
    /// At or above a warnAt threshold, below monthly.
    Warning,
    /// At or above monthly.
    Exceeded,
}

/// Desired status of the subaccount at Twilio.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SubaccountState {
    /// Usable.
    #[default]
    Active,
    /// Suspended at Twilio: its credentials stop working until reactivated.
    Suspended,
}

/// What to do at Twilio when the TwilioSubaccount is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SubaccountDeletionPolicy {
    /// Leave the subaccount as it is.
    #[default]
    Retain,
    /// Suspend it.
    Suspend,
    /// Close it, which cannot be undone.
    Close,
}

/// Where to publish the subaccount's own credentials.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubaccountSecret {
    /// Name of the Secret, a DNS-1123 subdomain. The operator creates it and owns it; it never
    /// overwrites a Secret it did not create.
    #[schemars(length(min = 1, max = 253), pattern(crate::api::DNS1123_SUBDOMAIN))]
    pub name: String,

    /// The Secret's type and template. Template variables: accountSid, authToken,
    /// friendlyName, namespace, name, createdAt.
    #[serde(flatten)]
    pub form: super::SecretForm,
}

/// Schedule for auth token rotation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = grace_shorter_than_every_rule())]
pub struct AuthTokenRotation {
    /// How often to rotate, as a duration such as "2160h" (90 days). At least 24h.
    #[schemars(schema_with = "duration_schema")]
    #[x_kube(validation = min_duration_rule("authTokenRotation.every", "24h"))]
    pub every: String,

    /// How long the new token is published before it is promoted and the old token stops
    /// working, such as "1h". Defaults to 1h; must be shorter than every.
    #[serde(default = "default_grace_period")]
    #[schemars(schema_with = "duration_schema")]
    pub grace_period: String,
}

pub(crate) fn default_grace_period() -> String {
    "1h".to_owned()
}

/// What the operator observed at Twilio.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TwilioSubaccountStatus {
    /// SID of the subaccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,

    /// SID of the parent account that owns the subaccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_account_sid: Option<String>,

    /// Display name as Twilio reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,

    /// Status as Twilio reports it: active, suspended or closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twilio_status: Option<String>,

    /// Month-to-date spend of the subaccount, refreshed at most every 15 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<SubaccountUsage>,

    /// Month-to-date spend against spec.budget, when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,

    /// Number of TwilioApiKeys in this namespace whose spec.subaccountRef names this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<i32>,

    /// Where the auth token rotation stands, when spec.authTokenRotation is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<AuthTokenStatus>,

    /// The voice dialing permissions in force at Twilio, when spec.voice is set (or the
    /// TwilioAccount requires it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<VoiceStatus>,

    /// Set just before the operator asks Twilio to create the subaccount and cleared once its SID
    /// is recorded; if the operator stops in between, the next reconcile finds the subaccount by
    /// its unique creation name instead of creating a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<Time>,

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

/// The auth token rotation's record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthTokenStatus {
    /// When the token in the Secret last became the primary (or was first published).
    pub rotated_at: Time,
    /// When a secondary token was published in the Secret, pending promotion; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_published_at: Option<Time>,
    /// When the next rotation starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<Time>,
}

/// Month-to-date usage from Twilio's usage records (category totalprice).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubaccountUsage {
    /// Total price so far this month, as the decimal string Twilio reports.
    pub month_to_date: String,
    /// Currency of monthToDate, lowercase as Twilio reports it (for example usd).
    pub currency: String,
    /// When the figure was read from Twilio.
    pub observed_at: Time,
    /// The usage month the figure belongs to, as Twilio reports it (YYYY-MM, GMT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
}

/// Month-to-date spend against the budget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// Spend so far this month, as the decimal string Twilio reports.
    pub spent: String,
    /// Currency of spent, lowercase as Twilio reports it (for example usd).
    pub currency: String,
    /// spent as a whole percentage of spec.budget.monthly, rounded down.
    pub percent: i64,
    /// Ok, Warning (a warnAt threshold is reached) or Exceeded (monthly is reached).
    pub state: BudgetState,
    /// Whether the operator suspended the subaccount because of the budget; it reactivates it
    /// when the next month starts or monthly is raised above the spend.
    pub suspended_by_budget: bool,
    /// The usage month the figures belong to, as Twilio reports it (YYYY-MM, GMT).
    pub period: String,
    /// The thresholds (percentages, 100 for monthly) already announced by an event this period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub announced: Vec<u8>,
    /// When spend was read from Twilio.
    pub observed_at: Time,
    /// Spend per hour between the last two reads of this month at least a minute apart, when
    /// known; the schedule reads sooner the sooner this rate reaches the next threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_hour: Option<String>,
    /// When spend is read again at the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_read_at: Option<Time>,
    /// The usage triggers at Twilio that call the operator as spend crosses each threshold,
    /// when the operator has a public webhook URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<BudgetTrigger>,
}

/// A usage trigger the operator keeps at Twilio for one budget threshold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetTrigger {
    /// The threshold, a percentage of monthly (100 for monthly itself).
    pub percent: u8,
    /// The trigger's SID (UT…).
    pub sid: String,
    /// The spend at which it fires.
    pub value: String,
    /// Where Twilio calls when it fires.
    pub callback_url: String,
}

/// The voice dialing permissions Twilio last reported for the subaccount.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoiceStatus {
    /// Whether the subaccount uses its parent account's permissions.
    pub inherit: bool,
    /// How many countries may be dialled.
    pub countries_enabled: u32,
    /// The countries (ISO codes) with a high-risk range enabled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub high_risk: Vec<String>,
    /// When Twilio was last read.
    pub observed_at: Time,
}
