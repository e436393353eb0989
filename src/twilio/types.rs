//! Twilio's resources as this client reads and writes them.
//!
//! Contract: tolerant reading, as Twilio adds fields and declares nearly all of them nullable:
//! every field is optional, unknown fields are ignored, dates accept RFC 2822 and RFC 3339,
//! decimals accept strings or numbers. Secrets (auth tokens, key secrets) are [`SecretString`].
//!
//! Each field bears the name Twilio's API reference gives it and means what it says there, so
//! only the fields whose use here is not plain from that name carry a doc comment.
#![allow(missing_docs)]

use k8s_openapi::jiff::Timestamp;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

/// Status of an account at Twilio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    Suspended,
    Closed,
    #[serde(other)]
    Unknown,
}

impl AccountStatus {
    /// The status as Twilio spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Closed => "closed",
            Self::Unknown => "unknown",
        }
    }
}

/// An account (main or subaccount) as fetch, list and update return it.
#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub sid: String,
    #[serde(default)]
    pub owner_account_sid: Option<String>,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub status: Option<AccountStatus>,
    /// The account's primary auth token, which Twilio returns in clear.
    #[serde(default)]
    pub auth_token: Option<SecretString>,
    #[serde(default, deserialize_with = "twilio_time")]
    pub date_created: Option<Timestamp>,
}

/// A key as fetch and list return it: no secret.
#[derive(Debug, Clone, Deserialize)]
pub struct Key {
    pub sid: String,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default, deserialize_with = "twilio_time")]
    pub date_created: Option<Timestamp>,
    /// IAM list items only.
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    /// IAM fetch and update only: the Restricted key's permissions.
    #[serde(default)]
    pub policy: Option<Policy>,
}

/// A key as create returns it: the one time the secret is visible.
#[derive(Debug, Clone, Deserialize)]
pub struct NewKey {
    pub sid: String,
    pub secret: SecretString,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default, deserialize_with = "twilio_time")]
    pub date_created: Option<Timestamp>,
}

/// An IAM key policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Policy {
    pub allow: Vec<String>,
}

/// A secondary auth token, as Twilio returns it once, on create.
#[derive(Debug, Clone, Deserialize)]
pub struct SecondaryAuthToken {
    #[serde(default)]
    pub account_sid: Option<String>,
    pub secondary_auth_token: SecretString,
}

/// The account's auth token after the secondary was promoted.
#[derive(Debug, Clone, Deserialize)]
pub struct PromotedAuthToken {
    #[serde(default)]
    pub account_sid: Option<String>,
    pub auth_token: SecretString,
}

/// An account's balance.
#[derive(Debug, Clone, Deserialize)]
pub struct Balance {
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default, deserialize_with = "decimal")]
    pub balance: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
}

/// What may be dialled in one country (Voice v1 DialingPermissions), as Twilio reports it and
/// as a bulk update sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct DialingCountry {
    pub iso_code: String,
    pub low_risk_numbers_enabled: bool,
    pub high_risk_special_numbers_enabled: bool,
    pub high_risk_tollfraud_numbers_enabled: bool,
}

/// A subaccount's voice settings (Voice v1 Settings).
#[derive(Debug, Clone, Deserialize)]
pub struct DialingSettings {
    pub dialing_permissions_inheritance: bool,
}

/// One usage record: a category's count and price over a period.
#[derive(Debug, Clone, Deserialize)]
pub struct UsageRecord {
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default, deserialize_with = "decimal")]
    pub price: Option<String>,
    #[serde(default)]
    pub price_unit: Option<String>,
    /// The first day of the period, `YYYY-MM-DD` (GMT).
    #[serde(default)]
    pub start_date: Option<String>,
}

/// A usage trigger: Twilio calls back when usage crosses a value.
#[derive(Debug, Clone, Deserialize)]
pub struct UsageTrigger {
    pub sid: String,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub usage_category: Option<String>,
    #[serde(default)]
    pub trigger_value: Option<String>,
    #[serde(default)]
    pub callback_url: Option<String>,
}

/// The fields of a usage trigger to create.
#[derive(Debug, Clone, Default)]
pub struct NewUsageTrigger {
    pub callback_url: String,
    pub trigger_value: String,
    pub usage_category: String,
    pub friendly_name: Option<String>,
    pub recurring: Option<String>,
    pub trigger_by: Option<String>,
}

/// Filters of the account list; `FriendlyName` is an exact match at Twilio.
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    pub friendly_name: Option<String>,
    pub status: Option<AccountStatus>,
}

/// Changes to an account; absent fields are left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountUpdate {
    pub friendly_name: Option<String>,
    pub status: Option<AccountStatus>,
}

/// RFC 2822 (v2010, IAM) or RFC 3339 (accounts v1); anything else reads as absent.
fn twilio_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    Ok(text.and_then(|t| {
        k8s_openapi::jiff::fmt::rfc2822::parse(&t)
            .map(|z| z.timestamp())
            .ok()
            .or_else(|| t.parse::<Timestamp>().ok())
    }))
}

/// A decimal Twilio sends as a string or a number, kept as its decimal text.
fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_twilio_shapes_tolerantly() {
        let account: Account = serde_json::from_value(serde_json::json!({
            "sid": "AC1", "status": "closed", "auth_token": "s3cr3t-value", "date_created": "Mon, 13 Jun 2016 22:50:08 +0000",
            "type": "Full", "brand_new_field": 1
        }))
        .unwrap();
        assert_eq!(account.status, Some(AccountStatus::Closed));
        assert_eq!(account.date_created.unwrap().to_string(), "2016-06-13T22:50:08Z");
        assert!(!format!("{account:?}").contains("s3cr3t-value"));
        let odd: Account = serde_json::from_value(
            serde_json::json!({"sid": "AC1", "status": "frozen", "date_created": null}),
        )
        .unwrap();
        assert_eq!(odd.status, Some(AccountStatus::Unknown));
        let record: UsageRecord = serde_json::from_value(serde_json::json!({"price": 12.5})).unwrap();
        assert_eq!(record.price.as_deref(), Some("12.5"));
        let record: UsageRecord = serde_json::from_value(serde_json::json!({"price": "2192.84855"})).unwrap();
        assert_eq!(record.price.as_deref(), Some("2192.84855"));
    }
}
