//! The `twilio.operator.dev/v1alpha1` API: the two custom resources and the types they share.
//!
//! Contract: every rule a user can break is enforced by the apiserver at admission, through the
//! OpenAPI schema (types, enums, patterns, lengths) or CEL (`x-kubernetes-validations`), and each
//! rule's message names the field and says how to fix it. The Rust side may therefore assume
//! admitted objects are well formed; it still parses durations itself and reports failures as
//! conditions rather than panicking, because objects can predate a schema change.

// kube's `printcolumn(...)` attributes repeat the same keys once per column by design.
#![allow(clippy::duplicated_attributes)]

pub mod account;
pub mod apikey;
pub mod duration;
pub mod schedule;
pub mod subaccount;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

pub use account::{AccountRef, TwilioAccount, TwilioAccountSpec, TwilioAccountStatus};
pub use apikey::{TwilioApiKey, TwilioApiKeySpec, TwilioApiKeyStatus};
pub use subaccount::{TwilioSubaccount, TwilioSubaccountSpec, TwilioSubaccountStatus};

/// API group of every kind.
pub const GROUP: &str = "twilio.operator.dev";
/// API version of every kind.
pub const VERSION: &str = "v1alpha1";

/// A DNS-1123 subdomain, the shape of every object name in Kubernetes.
pub(crate) const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A DNS-1123 label, the shape of a namespace name.
pub(crate) const DNS1123_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A label or annotation key: an optional DNS-subdomain prefix and "/", then a name of at most
/// 63 characters.
pub(crate) const METADATA_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// A label value: empty, or at most 63 characters.
/// A label key: an optional DNS-subdomain prefix and `/`, then a name of 1 to 63 characters.
pub(crate) const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
pub(crate) const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";

/// A field-level rule on a string map: every key is a valid label or annotation key.
pub(crate) fn metadata_keys_rule(field: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("self.all(k, size(k) <= 317 && k.matches(r'{METADATA_KEY}'))")).message(
        kube::core::Message::Message(format!(
            "{field} keys must be Kubernetes label keys: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )),
    )
}

/// The most characters a Secret template holds, keys and templates together.
pub const MAX_TEMPLATE_CHARS: usize = 4096;

/// A published Secret's type and, if templated, how its data is rendered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretForm {
    /// The Secret's type: Opaque (the default), kubernetes.io/basic-auth, or a type of your own.
    /// It cannot change.
    #[serde(rename = "type", default = "default_secret_type")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = secret_type_rule())]
    #[x_kube(validation = secret_types_rule())]
    pub type_: String,

    /// Data rendered from templates instead of (or, with mergePolicy Merge, besides) the
    /// default keys. Variables: accountSid, apiKey, apiSecret and keySid for TwilioApiKeys;
    /// accountSid and authToken for TwilioSubaccounts; friendlyName, namespace, name and
    /// createdAt for both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<SecretTemplate>,
}

impl Default for SecretForm {
    fn default() -> Self {
        Self {
            type_: default_secret_type(),
            template: None,
        }
    }
}

/// The data of a published Secret in the shape the application reads, rendered on every write.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Data key -> template, in MiniJinja (a Jinja2 dialect): `{{ apiKey }}`, filters such as
    /// `{{ apiSecret | urlencode }}`, `if` and `for` blocks. At most 32 keys, and 4096
    /// characters in all, keys and templates together; keys are Secret data keys. The variables
    /// and filters are listed in the README (Secret templates).
    #[schemars(extend("minProperties" = 1, "maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": MAX_TEMPLATE_CHARS}))]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, size(k) <= 253 && k.matches('^[-._a-zA-Z0-9]+$') && k != '.' && k != '..')")
        .message("secret.template.data keys must be Secret data keys: letters, digits, '-', '_' and '.', at most 253 characters"))]
    // Every object is cached whole, so this bounds what one object costs the operator.
    #[x_kube(validation = kube::core::Rule::new(format!("self.map(k, size(k) + size(self[k])).sum() <= {MAX_TEMPLATE_CHARS}"))
        .message(kube::core::Message::Message(format!("secret.template.data holds at most {MAX_TEMPLATE_CHARS} characters in all, keys and templates together: shorten the templates"))))]
    pub data: std::collections::BTreeMap<String, String>,
    /// Replace (default): the Secret holds only the template's keys. Merge: the keys the Secret
    /// holds without a template, plus the template's (which win on a clash).
    #[serde(default)]
    pub merge_policy: MergePolicy,
}

/// How a template's keys combine with the Secret's default keys.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MergePolicy {
    /// Only the template's keys.
    #[default]
    Replace,
    /// The default keys, then the template's.
    Merge,
}

/// The type of a published Secret: Opaque by default; Kubernetes checks what a type requires
/// (`kubernetes.io/basic-auth` needs `username` and `password`).
pub(crate) fn default_secret_type() -> String {
    "Opaque".to_owned()
}

/// A field-level rule on a Secret's type: Kubernetes cannot change the type of a Secret.
pub(crate) fn secret_type_rule() -> kube::core::Rule {
    kube::core::Rule::new("self == oldSelf").message(kube::core::Message::Message(
        "secret.type cannot change, as a Secret's type cannot: recreate the object to publish another type"
            .into(),
    ))
}

/// A field-level rule on a Secret's type: Opaque, basic-auth, or a type of the user's own. The
/// other built-in types make Kubernetes fill in or demand data the operator does not write.
pub(crate) fn secret_types_rule() -> kube::core::Rule {
    kube::core::Rule::new(
        "self == 'Opaque' || self == 'kubernetes.io/basic-auth' || !(self.startsWith('kubernetes.io/') || self.startsWith('bootstrap.kubernetes.io/'))",
    )
    .message(kube::core::Message::Message(
        "secret.type must be Opaque, kubernetes.io/basic-auth, or a type of your own (not under kubernetes.io/)".into(),
    ))
}

/// A reference to another object in the same namespace. Cross-namespace references are not
/// offered on purpose: they would let one tenant borrow another tenant's Twilio credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalRef {
    /// Name of the object, in the same namespace as this one.
    #[schemars(length(min = 1, max = 253), pattern(crate::api::DNS1123_SUBDOMAIN))]
    pub name: String,
}

/// Status conditions, merged by `type` so server-side apply keeps one entry per type.
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    let map = schema.ensure_object();
    map.insert("x-kubernetes-list-type".into(), "map".into());
    map.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

/// A Go-style duration string (`"720h"`, `"90m"`, `"1h30m"`), as used across Kubernetes APIs.
/// The pattern admits only non-negative durations, which is what every duration here means.
pub(crate) fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 64,
        "pattern": duration::PATTERN,
    })
}

/// CEL that is true when `expr` is a well-formed duration. Rules guard `duration()` with it so a
/// malformed string is reported once, by the schema pattern, instead of as a CEL runtime error.
fn cel_is_duration(expr: &str) -> String {
    format!("{expr}.matches(r'{}')", duration::PATTERN)
}

/// A field-level rule: the duration is at least `min`.
pub(crate) fn min_duration_rule(field: &str, min: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!(
        "!{} || duration(self) >= duration('{min}')",
        cel_is_duration("self")
    ))
    .message(kube::core::Message::Message(format!(
        "{field} must be at least {min}"
    )))
}

/// A rule for a five-field cron schedule, each field within its range. What it cannot see (a
/// reversed range such as FRI-MON, a date that never comes) the operator reports as InvalidSpec
/// without holding up anything but scheduled rotations.
pub(crate) fn schedule_rule() -> kube::core::Rule {
    // A field is a list of items: a value, or `*` or a range, optionally stepped by 1 to 99.
    // (A reversed range or a date that never comes passes; the operator reports those.)
    let field = |value: &str| {
        let item = format!(r"((\*|({value})-({value}))(/[1-9][0-9]?)?|({value}))");
        format!("{item}(,{item})*")
    };
    let months = "0?[1-9]|1[0-2]|JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC";
    let days = "[0-7]|SUN|MON|TUE|WED|THU|FRI|SAT";
    let fields = [
        field("[0-5]?[0-9]"),
        field("[01]?[0-9]|2[0-3]"),
        field("0?[1-9]|[12][0-9]|3[01]"),
        field(months),
        field(days),
    ];
    kube::core::Rule::new(format!("self.matches(r'^{}$')", fields.join(" +")))
        .message("rotation.window.schedule must be a cron schedule of five fields (minute hour day-of-month month day-of-week), each in range, such as \"0 2 * * SAT\"")
}

/// A rule admitting only the IANA time zone names the operator bundles.
pub(crate) fn time_zone_rule() -> kube::core::Rule {
    let names: Vec<String> = schedule::time_zone_names()
        .iter()
        .map(|n| format!("'{n}'"))
        .collect();
    kube::core::Rule::new(format!("self in [{}]", names.join(",")))
        .message("rotation.window.timeZone must be an IANA time zone name, such as UTC or Europe/Berlin")
}

/// An object-level rule for `{every, gracePeriod}` schedules: the grace period is shorter.
pub(crate) fn grace_shorter_than_every_rule() -> kube::core::Rule {
    kube::core::Rule::new(format!(
        "!{} || !{} || duration(self.gracePeriod) < duration(self.every)",
        cel_is_duration("self.every"),
        cel_is_duration("self.gracePeriod")
    ))
    .message(
        "gracePeriod must be shorter than every: the old credential must be gone before the next rotation",
    )
    .field_path(".gracePeriod")
}

/// An object-level rule: `spec.<field>` can be neither added, removed nor changed after the
/// object is created.
pub(crate) fn immutable_rule(field: &str, why: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!(
        "has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"
    ))
    .message(kube::core::Message::Message(format!(
        "spec.{field} is immutable: {why}"
    )))
    .field_path(format!(".{field}"))
    .reason(kube::core::Reason::FieldValueForbidden)
}

/// An object-level rule: at most one of `spec.<fields>` is set.
pub(crate) fn at_most_one_rule(fields: &[&str], why: &str) -> kube::core::Rule {
    let set: Vec<String> = fields.iter().map(|f| format!("has(self.{f})")).collect();
    let named: Vec<String> = fields.iter().map(|f| format!("spec.{f}")).collect();
    kube::core::Rule::new(format!("[{}].filter(x, x).size() <= 1", set.join(", ")))
        .message(kube::core::Message::Message(format!(
            "{} are mutually exclusive: {why}",
            named.join(", ")
        )))
        .field_path(format!(".{}", fields[fields.len() - 1]))
        .reason(kube::core::Reason::FieldValueForbidden)
}
