//! Typed Twilio operations: Accounts, v2010 Keys, IAM v1 Keys, AuthTokens, Balance, Usage
//! Records, Usage Triggers and Voice dialing permissions.
//!
//! Contract: every SID is checked for shape before it enters a URL; every call goes through the
//! transport's limits and retry policy; lists are followed to their end; deletes of something
//! already gone succeed.

use super::client::{Call, Host, TwilioClient};
use super::credentials::{Credentials, is_sid};
use super::error::Error;
use super::types::*;
use reqwest::Method;

fn sid<'a>(what: &'static str, prefix: &'static str, value: &'a str) -> Result<&'a str, Error> {
    if is_sid(prefix, value) {
        Ok(value)
    } else {
        Err(Error::InvalidSid {
            what,
            prefix,
            value: value.to_owned(),
        })
    }
}

fn account_path(account_sid: &str, rest: &str) -> Result<String, Error> {
    Ok(format!(
        "/2010-04-01/Accounts/{}{rest}",
        sid("account SID", "AC", account_sid)?
    ))
}

/// The path of usage trigger `trigger_sid` of `account_sid`, both checked.
fn trigger_path(account_sid: &str, trigger_sid: &str) -> Result<String, Error> {
    account_path(
        account_sid,
        &format!(
            "/Usage/Triggers/{}.json",
            sid("usage trigger SID", "UT", trigger_sid)?
        ),
    )
}

fn policy_json(permissions: &[String]) -> String {
    serde_json::to_string(&Policy {
        allow: permissions.to_vec(),
    })
    .expect("a policy serializes")
}

impl TwilioClient {
    /// Creates a subaccount under the credentials' account.
    pub async fn create_account(
        &self,
        creds: &Credentials,
        friendly_name: Option<&str>,
    ) -> Result<Account, Error> {
        let call = Call::new(
            "CreateAccount",
            Method::POST,
            Host::Api,
            "/2010-04-01/Accounts.json".into(),
        )
        .form("FriendlyName", friendly_name)
        .creating();
        self.json(creds, &call).await
    }

    /// The credentials' account and its subaccounts, filtered.
    pub async fn list_accounts(
        &self,
        creds: &Credentials,
        filter: &AccountFilter,
    ) -> Result<Vec<Account>, Error> {
        let call = Call::new(
            "ListAccount",
            Method::GET,
            Host::Api,
            "/2010-04-01/Accounts.json".into(),
        )
        .query("FriendlyName", filter.friendly_name.as_deref())
        .query("Status", filter.status.map(AccountStatus::as_str));
        self.list(creds, call, "accounts").await
    }

    /// Reads an account (the caller's own or a subaccount), with its auth token.
    pub async fn fetch_account(&self, creds: &Credentials, account_sid: &str) -> Result<Account, Error> {
        let call = Call::new(
            "FetchAccount",
            Method::GET,
            Host::Api,
            account_path(account_sid, ".json")?,
        );
        self.json(creds, &call).await
    }

    /// Renames an account or changes its status.
    pub async fn update_account(
        &self,
        creds: &Credentials,
        account_sid: &str,
        update: &AccountUpdate,
    ) -> Result<Account, Error> {
        let call = Call::new(
            "UpdateAccount",
            Method::POST,
            Host::Api,
            account_path(account_sid, ".json")?,
        )
        .form("FriendlyName", update.friendly_name.as_deref())
        .form("Status", update.status.map(AccountStatus::as_str));
        self.json(creds, &call).await
    }

    /// Creates a Standard key in `account_sid` (v2010).
    pub async fn create_key(
        &self,
        creds: &Credentials,
        account_sid: &str,
        friendly_name: Option<&str>,
    ) -> Result<NewKey, Error> {
        let call = Call::new(
            "CreateNewKey",
            Method::POST,
            Host::Api,
            account_path(account_sid, "/Keys.json")?,
        )
        .form("FriendlyName", friendly_name)
        .creating();
        self.json(creds, &call).await
    }

    /// Every key of `account_sid`, whatever its type (v2010).
    pub async fn list_keys(&self, creds: &Credentials, account_sid: &str) -> Result<Vec<Key>, Error> {
        let call = Call::new(
            "ListKey",
            Method::GET,
            Host::Api,
            account_path(account_sid, "/Keys.json")?,
        );
        self.list(creds, call, "keys").await
    }

    /// Reads a key of `account_sid` (no secret).
    pub async fn fetch_key(
        &self,
        creds: &Credentials,
        account_sid: &str,
        key_sid: &str,
    ) -> Result<Key, Error> {
        let path = account_path(
            account_sid,
            &format!("/Keys/{}.json", sid("key SID", "SK", key_sid)?),
        )?;
        self.json(creds, &Call::new("FetchKey", Method::GET, Host::Api, path))
            .await
    }

    /// Renames a key of `account_sid`.
    pub async fn update_key(
        &self,
        creds: &Credentials,
        account_sid: &str,
        key_sid: &str,
        friendly_name: &str,
    ) -> Result<Key, Error> {
        let path = account_path(
            account_sid,
            &format!("/Keys/{}.json", sid("key SID", "SK", key_sid)?),
        )?;
        let call =
            Call::new("UpdateKey", Method::POST, Host::Api, path).form("FriendlyName", Some(friendly_name));
        self.json(creds, &call).await
    }

    /// Revokes a key (v2010); a key already gone counts as revoked.
    pub async fn delete_key(
        &self,
        creds: &Credentials,
        account_sid: &str,
        key_sid: &str,
    ) -> Result<(), Error> {
        let path = account_path(
            account_sid,
            &format!("/Keys/{}.json", sid("key SID", "SK", key_sid)?),
        )?;
        self.delete(creds, &Call::new("DeleteKey", Method::DELETE, Host::Api, path))
            .await
    }

    /// Creates a Restricted key in `account_sid` with `permissions` as its policy (IAM v1).
    pub async fn create_restricted_key(
        &self,
        creds: &Credentials,
        account_sid: &str,
        friendly_name: Option<&str>,
        permissions: &[String],
    ) -> Result<NewKey, Error> {
        let call = Call::new("iam.CreateNewKey", Method::POST, Host::Iam, "/v1/Keys".into())
            .form("AccountSid", Some(sid("account SID", "AC", account_sid)?))
            .form("FriendlyName", friendly_name)
            .form("KeyType", Some("restricted"))
            .form("Policy", Some(policy_json(permissions)))
            .creating();
        self.json(creds, &call).await
    }

    /// Every key of `account_sid` with IAM's flags (IAM v1).
    pub async fn list_iam_keys(&self, creds: &Credentials, account_sid: &str) -> Result<Vec<Key>, Error> {
        let call = Call::new("iam.ListGetKeys", Method::GET, Host::Iam, "/v1/Keys".into())
            .query("AccountSid", Some(sid("account SID", "AC", account_sid)?));
        self.list(creds, call, "keys").await
    }

    /// Reads a key through IAM, with a Restricted key's permissions.
    pub async fn fetch_iam_key(&self, creds: &Credentials, key_sid: &str) -> Result<Key, Error> {
        let path = format!("/v1/Keys/{}", sid("key SID", "SK", key_sid)?);
        self.json(creds, &Call::new("iam.FetchKey", Method::GET, Host::Iam, path))
            .await
    }

    /// Renames a key and/or replaces a Restricted key's whole policy (IAM v1).
    pub async fn update_iam_key(
        &self,
        creds: &Credentials,
        key_sid: &str,
        friendly_name: Option<&str>,
        permissions: Option<&[String]>,
    ) -> Result<Key, Error> {
        let path = format!("/v1/Keys/{}", sid("key SID", "SK", key_sid)?);
        let call = Call::new("iam.UpdateKey", Method::POST, Host::Iam, path)
            .form("FriendlyName", friendly_name)
            .form("Policy", permissions.map(policy_json));
        self.json(creds, &call).await
    }

    /// Revokes a key through IAM.
    pub async fn delete_iam_key(&self, creds: &Credentials, key_sid: &str) -> Result<(), Error> {
        let path = format!("/v1/Keys/{}", sid("key SID", "SK", key_sid)?);
        self.delete(
            creds,
            &Call::new("iam.DeleteKey", Method::DELETE, Host::Iam, path),
        )
        .await
    }

    /// Creates the secondary auth token of the credentials' own account.
    pub async fn create_secondary_auth_token(
        &self,
        creds: &Credentials,
    ) -> Result<SecondaryAuthToken, Error> {
        let call = Call::new(
            "CreateSecondaryAuthToken",
            Method::POST,
            Host::Accounts,
            "/v1/AuthTokens/Secondary".into(),
        )
        .creating();
        self.json(creds, &call).await
    }

    /// Deletes the account's secondary auth token.
    pub async fn delete_secondary_auth_token(&self, creds: &Credentials) -> Result<(), Error> {
        self.delete(
            creds,
            &Call::new(
                "DeleteSecondaryAuthToken",
                Method::DELETE,
                Host::Accounts,
                "/v1/AuthTokens/Secondary".into(),
            ),
        )
        .await
    }

    /// Makes the secondary token primary; the old primary stops working at once.
    pub async fn promote_secondary_auth_token(
        &self,
        creds: &Credentials,
    ) -> Result<PromotedAuthToken, Error> {
        let call = Call::new(
            "UpdateAuthTokenPromotion",
            Method::POST,
            Host::Accounts,
            "/v1/AuthTokens/Promote".into(),
        )
        .creating();
        self.json(creds, &call).await
    }

    /// Reads an account's balance.
    pub async fn fetch_balance(&self, creds: &Credentials, account_sid: &str) -> Result<Balance, Error> {
        let call = Call::new(
            "FetchBalance",
            Method::GET,
            Host::Api,
            account_path(account_sid, "/Balance.json")?,
        );
        self.json(creds, &call).await
    }

    /// This month's usage records of `account_sid` in `category` (such as totalprice).
    pub async fn usage_this_month(
        &self,
        creds: &Credentials,
        account_sid: &str,
        category: &str,
    ) -> Result<Vec<UsageRecord>, Error> {
        let call = Call::new(
            "ListUsageRecordThisMonth",
            Method::GET,
            Host::Api,
            account_path(account_sid, "/Usage/Records/ThisMonth.json")?,
        )
        .query("Category", Some(category));
        self.list(creds, call, "usage_records").await
    }

    /// Creates a usage trigger on `account_sid`.
    pub async fn create_usage_trigger(
        &self,
        creds: &Credentials,
        account_sid: &str,
        trigger: &NewUsageTrigger,
    ) -> Result<UsageTrigger, Error> {
        let call = Call::new(
            "CreateUsageTrigger",
            Method::POST,
            Host::Api,
            account_path(account_sid, "/Usage/Triggers.json")?,
        )
        .form("CallbackUrl", Some(trigger.callback_url.as_str()))
        .form("TriggerValue", Some(trigger.trigger_value.as_str()))
        .form("UsageCategory", Some(trigger.usage_category.as_str()))
        .form("FriendlyName", trigger.friendly_name.as_deref())
        .form("Recurring", trigger.recurring.as_deref())
        .form("TriggerBy", trigger.trigger_by.as_deref())
        .creating();
        self.json(creds, &call).await
    }

    /// Lists the usage triggers of `account_sid`.
    pub async fn list_usage_triggers(
        &self,
        creds: &Credentials,
        account_sid: &str,
    ) -> Result<Vec<UsageTrigger>, Error> {
        let call = Call::new(
            "ListUsageTrigger",
            Method::GET,
            Host::Api,
            account_path(account_sid, "/Usage/Triggers.json")?,
        );
        self.list(creds, call, "usage_triggers").await
    }

    /// Points usage trigger `trigger_sid` of `account_sid` at `callback_url` (the only field
    /// of a trigger besides its name that Twilio lets change).
    pub async fn update_usage_trigger(
        &self,
        creds: &Credentials,
        account_sid: &str,
        trigger_sid: &str,
        callback_url: &str,
    ) -> Result<UsageTrigger, Error> {
        let path = trigger_path(account_sid, trigger_sid)?;
        let call = Call::new("UpdateUsageTrigger", Method::POST, Host::Api, path)
            .form("CallbackUrl", Some(callback_url));
        self.json(creds, &call).await
    }

    /// Deletes a usage trigger of `account_sid`.
    pub async fn delete_usage_trigger(
        &self,
        creds: &Credentials,
        account_sid: &str,
        trigger_sid: &str,
    ) -> Result<(), Error> {
        let path = trigger_path(account_sid, trigger_sid)?;
        self.delete(
            creds,
            &Call::new("DeleteUsageTrigger", Method::DELETE, Host::Api, path),
        )
        .await
    }

    /// The dialing permissions of every country, for the credentials' own account (Voice v1).
    pub async fn list_dialing_countries(&self, creds: &Credentials) -> Result<Vec<DialingCountry>, Error> {
        let path = "/v1/DialingPermissions/Countries".into();
        let call = Call::new(
            "voice.ListDialingPermissionsCountry",
            Method::GET,
            Host::Voice,
            path,
        );
        self.list(creds, call, "content").await
    }

    /// Sets the dialing permissions of the countries in `updates`, at most
    /// [`MAX_COUNTRY_UPDATES`], for the credentials' own account, leaving the others as they
    /// are. Returns how many Twilio changed.
    pub async fn update_dialing_countries(
        &self,
        creds: &Credentials,
        updates: &[DialingCountry],
    ) -> Result<u32, Error> {
        #[derive(serde::Deserialize)]
        struct Count {
            update_count: u32,
        }
        let request = serde_json::to_string(updates).expect("country updates serialize");
        let path = "/v1/DialingPermissions/BulkCountryUpdates".into();
        let call = Call::new(
            "voice.CreateDialingPermissionsCountryBulkUpdate",
            Method::POST,
            Host::Voice,
            path,
        )
        .form("UpdateRequest", Some(request));
        let count: Count = self.json(creds, &call).await?;
        Ok(count.update_count)
    }

    /// The credentials' own account's voice settings (Voice v1).
    pub async fn fetch_dialing_settings(&self, creds: &Credentials) -> Result<DialingSettings, Error> {
        let call = Call::new(
            "voice.FetchDialingPermissionsSettings",
            Method::GET,
            Host::Voice,
            "/v1/Settings".into(),
        );
        self.json(creds, &call).await
    }

    /// Sets whether the credentials' own account (a subaccount) uses its parent's dialing
    /// permissions.
    pub async fn update_dialing_settings(
        &self,
        creds: &Credentials,
        inherit: bool,
    ) -> Result<DialingSettings, Error> {
        let call = Call::new(
            "voice.UpdateDialingPermissionsSettings",
            Method::POST,
            Host::Voice,
            "/v1/Settings".into(),
        )
        .form("DialingPermissionsInheritance", Some(inherit.to_string()));
        self.json(creds, &call).await
    }
}

/// The most countries one bulk update may carry.
pub const MAX_COUNTRY_UPDATES: usize = 100;
