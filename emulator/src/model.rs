//! The emulated Twilio world: accounts, API keys and usage triggers, and the rules that govern
//! them. Pure state transitions; HTTP lives in `http`.
//!
//! Contract: every operation takes the authenticated [`Principal`] and either changes the world
//! and returns the resource, or returns the [`ApiError`] Twilio would. Key secrets are stored
//! only as digests; a secret leaves the world once, in the value a create returns.

use crate::ids;
use jiff::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;

/// A Twilio error: HTTP status, Twilio code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: u32,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn authenticate() -> Self {
        Self::new(401, 20003, "Authenticate")
    }
    pub fn not_found(path: &str) -> Self {
        Self::new(404, 20404, format!("The requested resource {path} was not found"))
    }
    pub fn missing(param: &str) -> Self {
        Self::new(
            400,
            20001,
            format!("Missing required parameter {param} in the post body"),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    Suspended,
    Closed,
}

impl AccountStatus {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Account {
    pub seq: u64,
    pub sid: String,
    /// The parent's SID; `None` for a main account.
    pub owner: Option<String>,
    pub friendly_name: String,
    pub status: AccountStatus,
    pub auth_token: String,
    pub secondary_token: Option<String>,
    pub secondary_created: Option<Timestamp>,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// Total price in `usage_period`, as the decimal Twilio reports.
    pub usage_total: f64,
    /// The month (`YYYY-MM`, GMT) `usage_total` belongs to; in any other month the spend is 0.
    pub usage_period: String,
    pub balance: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Main,
    Standard,
    Restricted,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub seq: u64,
    pub sid: String,
    pub account_sid: String,
    pub secret_digest: String,
    pub friendly_name: Option<String>,
    pub kind: KeyKind,
    pub policy: Option<Vec<String>>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub seq: u64,
    pub sid: String,
    pub account_sid: String,
    pub friendly_name: Option<String>,
    pub usage_category: String,
    pub trigger_by: String,
    pub trigger_value: String,
    pub recurring: Option<String>,
    pub callback_url: String,
    pub callback_method: String,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// The value at which it fires; `None` when trigger_value is not a number.
    pub fires_at: Option<f64>,
    /// When it last fired, and the period (by its recurrence) it fired for.
    pub fired: Option<(Timestamp, String)>,
    /// How often it has fired.
    pub fires: u64,
}

/// A trigger's call to its callback URL, signed as Twilio signs webhooks.
#[derive(Debug, Clone)]
pub struct Callback {
    pub url: String,
    pub method: String,
    pub params: Vec<(String, String)>,
    /// `X-Twilio-Signature`: base64 HMAC-SHA1, keyed with the account's auth token, of the URL
    /// followed by each parameter's name and value, sorted by name.
    pub signature: String,
}

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account the credential belongs to.
    pub account_sid: String,
    pub via: Via,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    AuthToken,
    Key {
        sid: String,
        kind: KeyKind,
        policy: Option<Vec<String>>,
    },
}

/// Which family of endpoint a scope check is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `/Accounts*` and `/Accounts/*/Keys*`: account and key management.
    Management,
    /// v2010 resources other than management (Balance, Usage).
    Resources,
    /// Product hosts (iam, accounts): only the account's own credentials.
    OwnAccountOnly,
}

/// Limits and switches that shape the world's rules.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Rules {
    pub max_subaccounts: usize,
    pub max_keys: usize,
    /// Whether a Main key of a parent may act on its subaccounts (Twilio's behaviour is
    /// disputed; default deny).
    pub main_key_subaccount_access: bool,
    /// A key SID the next v2010 key list leaves out, once: a list that misses a live key, as an
    /// eventually consistent read may.
    #[serde(default)]
    pub omit_from_next_list: Option<String>,
    /// Requests to fail: the next `times` requests of `operation` made as `account` answer
    /// `status` (a 500 or 503, as a passing Twilio fault does), before they take effect.
    #[serde(default)]
    pub fail_next: Option<FailNext>,
}

/// Which request [`Rules::fail_next`] fails.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailNext {
    /// The operation, as the call counters name it (`api.FetchAccount`).
    pub operation: String,
    /// The account the request authenticates as.
    pub account: String,
    /// 500 or 503.
    pub status: u16,
    /// How many such requests fail before the rule is spent (retries included).
    #[serde(default = "once")]
    pub times: u32,
}

fn once() -> u32 {
    1
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_subaccounts: 1000,
            max_keys: 100,
            main_key_subaccount_access: false,
            omit_from_next_list: None,
            fail_next: None,
        }
    }
}

/// The permission strings the emulator knows how to check for Restricted keys.
pub const PERMISSION_BALANCE: &str = "/twilio/billing/balance/read";
pub const PERMISSION_USAGE: &str = "/twilio/usage/records/list";

#[derive(Debug, Default)]
pub struct World {
    pub accounts: BTreeMap<String, Account>,
    pub keys: BTreeMap<String, Key>,
    /// How many of `keys` each account holds: the limit is checked on every create, which must
    /// not cost a scan of every key (the benchmark creates 10,000 in one account).
    keys_held: BTreeMap<String, usize>,
    pub triggers: BTreeMap<String, Trigger>,
    pub rules: Rules,
    /// Seconds the emulated clock runs ahead of the real one: tests travel to the next month.
    pub clock_offset: i64,
    seq: u64,
}

/// What a key create returns: the key and its secret, the one time it is visible.
pub struct NewKey {
    pub key: Key,
    pub secret: String,
}

/// The two optional changes an account update carries.
pub struct AccountUpdate {
    pub friendly_name: Option<String>,
    pub status: Option<String>,
}

/// The fields of a usage trigger create.
pub struct NewTrigger {
    pub callback_url: String,
    pub trigger_value: String,
    pub usage_category: String,
    pub callback_method: Option<String>,
    pub friendly_name: Option<String>,
    pub recurring: Option<String>,
    pub trigger_by: Option<String>,
}

impl World {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Adds a main account with known or generated credentials; returns its SID and token.
    pub fn bootstrap_main(
        &mut self,
        sid: Option<String>,
        token: Option<String>,
        name: Option<String>,
    ) -> (String, String) {
        let sid = sid.unwrap_or_else(|| ids::sid("AC"));
        let token = token.unwrap_or_else(ids::auth_token);
        let now = Timestamp::now();
        let seq = self.next_seq();
        self.accounts.insert(
            sid.clone(),
            Account {
                seq,
                sid: sid.clone(),
                owner: None,
                friendly_name: name.unwrap_or_else(|| "emulator@example.com".into()),
                status: AccountStatus::Active,
                auth_token: token.clone(),
                secondary_token: None,
                secondary_created: None,
                created: now,
                updated: now,
                usage_total: 0.0,
                usage_period: String::new(),
                balance: "20.00".into(),
            },
        );
        (sid, token)
    }

    /// The status that governs an account: a suspended or closed parent suspends its children.
    pub fn effective_status(&self, account: &Account) -> AccountStatus {
        let parent = account.owner.as_ref().and_then(|o| self.accounts.get(o));
        match (account.status, parent.map(|p| p.status)) {
            (AccountStatus::Active, Some(AccountStatus::Suspended | AccountStatus::Closed)) => {
                AccountStatus::Suspended
            }
            (own, _) => own,
        }
    }

    /// Resolves Basic-auth credentials to a principal, or 401/20003.
    pub fn authenticate(&self, username: &str, password: &str) -> Result<Principal, ApiError> {
        let (account_sid, via) = if ids::is_sid("AC", username) {
            let account = self.accounts.get(username).ok_or_else(ApiError::authenticate)?;
            let matches =
                account.auth_token == password || account.secondary_token.as_deref() == Some(password);
            if !matches {
                return Err(ApiError::authenticate());
            }
            (account.sid.clone(), Via::AuthToken)
        } else if ids::is_sid("SK", username) {
            let key = self.keys.get(username).ok_or_else(ApiError::authenticate)?;
            if key.secret_digest != ids::digest(password) {
                return Err(ApiError::authenticate());
            }
            let via = Via::Key {
                sid: key.sid.clone(),
                kind: key.kind,
                policy: key.policy.clone(),
            };
            (key.account_sid.clone(), via)
        } else {
            return Err(ApiError::authenticate());
        };
        let account = self
            .accounts
            .get(&account_sid)
            .ok_or_else(ApiError::authenticate)?;
        if self.effective_status(account) != AccountStatus::Active {
            return Err(ApiError::authenticate());
        }
        Ok(Principal { account_sid, via })
    }

    /// Checks that `principal` may act on `target`'s resources in `scope`; `path` names the
    /// resource in a 404. `permission` is what a Restricted key would need.
    pub fn authorize(
        &self,
        principal: &Principal,
        target: &str,
        scope: Scope,
        permission: Option<&str>,
        path: &str,
    ) -> Result<(), ApiError> {
        match &principal.via {
            Via::Key {
                kind: KeyKind::Standard,
                ..
            } if scope != Scope::Resources => return Err(ApiError::authenticate()),
            Via::Key {
                kind: KeyKind::Restricted,
                policy,
                ..
            } => {
                let allowed = permission.is_some_and(|p| policy.iter().flatten().any(|granted| granted == p));
                if !allowed {
                    let needed = permission.unwrap_or("an account-management permission");
                    return Err(ApiError::new(
                        401,
                        70051,
                        format!("Authorization Error: required permission {needed} is missing"),
                    ));
                }
            }
            _ => {}
        }
        if target == principal.account_sid {
            return Ok(());
        }
        let target_account = self
            .accounts
            .get(target)
            .ok_or_else(|| ApiError::not_found(path))?;
        let is_parent = target_account.owner.as_deref() == Some(principal.account_sid.as_str());
        let parent_reach = match &principal.via {
            Via::AuthToken => scope != Scope::OwnAccountOnly,
            Via::Key {
                kind: KeyKind::Main, ..
            } => scope != Scope::OwnAccountOnly && self.rules.main_key_subaccount_access,
            Via::Key { .. } => false,
        };
        if is_parent && parent_reach {
            Ok(())
        } else if is_parent {
            Err(ApiError::authenticate())
        } else {
            // Parents and siblings are invisible to a subaccount, as is everything else.
            Err(ApiError::not_found(path))
        }
    }

    /// Refuses work on the resources of an account that is not active.
    pub fn require_active(&self, account_sid: &str) -> Result<(), ApiError> {
        match self.accounts.get(account_sid).map(|a| self.effective_status(a)) {
            Some(AccountStatus::Active) => Ok(()),
            Some(_) => Err(ApiError::new(
                403,
                20403,
                format!("Account {account_sid} is not active: it is suspended or closed"),
            )),
            None => Err(ApiError::not_found(&format!(
                "/2010-04-01/Accounts/{account_sid}.json"
            ))),
        }
    }

    pub fn create_subaccount(
        &mut self,
        principal: &Principal,
        friendly_name: Option<String>,
    ) -> Result<Account, ApiError> {
        let caller = self.accounts[&principal.account_sid].clone();
        if caller.owner.is_some() {
            return Err(ApiError::new(
                400,
                21101,
                "Subaccounts cannot contain subaccounts",
            ));
        }
        let children = self
            .accounts
            .values()
            .filter(|a| a.owner.as_deref() == Some(&caller.sid))
            .count();
        if children >= self.rules.max_subaccounts {
            return Err(ApiError::new(400, 21480, "Reached maximum number of subaccounts"));
        }
        let now = Timestamp::now();
        let name = match friendly_name {
            Some(name) => check_friendly_name(name, 20002, "Invalid FriendlyName")?,
            None => format!("SubAccount Created at {}", now.strftime("%Y-%m-%d %I:%M %P")),
        };
        let seq = self.next_seq();
        let account = Account {
            seq,
            sid: ids::sid("AC"),
            owner: Some(caller.sid.clone()),
            friendly_name: name,
            status: AccountStatus::Active,
            auth_token: ids::auth_token(),
            secondary_token: None,
            secondary_created: None,
            created: now,
            updated: now,
            usage_total: 0.0,
            usage_period: String::new(),
            balance: caller.balance.clone(),
        };
        self.accounts.insert(account.sid.clone(), account.clone());
        Ok(account)
    }

    /// The caller's own account and, for a main account, its subaccounts, in creation order.
    pub fn visible_accounts(&self, principal: &Principal) -> Vec<Account> {
        let mut visible: Vec<Account> = self
            .accounts
            .values()
            .filter(|a| a.sid == principal.account_sid || a.owner.as_deref() == Some(&principal.account_sid))
            .map(|a| self.with_effective_status(a))
            .collect();
        visible.sort_by_key(|a| a.seq);
        visible
    }

    fn with_effective_status(&self, account: &Account) -> Account {
        Account {
            status: self.effective_status(account),
            ..account.clone()
        }
    }

    pub fn fetch_account(&self, sid: &str) -> Account {
        self.with_effective_status(&self.accounts[sid])
    }

    pub fn update_account(
        &mut self,
        principal: &Principal,
        sid: &str,
        update: AccountUpdate,
    ) -> Result<Account, ApiError> {
        let name = update
            .friendly_name
            .map(|n| check_friendly_name(n, 20002, "Invalid FriendlyName"))
            .transpose()?;
        let status = match update.status.as_deref() {
            None => None,
            Some(text) => Some(
                AccountStatus::parse(text)
                    .ok_or_else(|| ApiError::new(400, 20001, format!("Invalid Status {text}")))?,
            ),
        };
        let account = &self.accounts[sid];
        if let Some(wanted) = status.filter(|s| *s != account.status) {
            let Some(parent_sid) = account.owner.clone() else {
                return Err(ApiError::new(
                    400,
                    20001,
                    "You cannot change the status of your main account",
                ));
            };
            if parent_sid != principal.account_sid {
                return Err(ApiError::authenticate());
            }
            if account.status == AccountStatus::Closed {
                return Err(ApiError::new(
                    400,
                    21479,
                    "Unable to update Status for subaccount, subaccount is closed and can not be re-opened.",
                ));
            }
            if self.accounts[&parent_sid].status != AccountStatus::Active {
                return Err(ApiError::new(
                    400,
                    21476,
                    "Unable to update Status for subaccount, parent account is suspended.",
                ));
            }
            let account = self.accounts.get_mut(sid).expect("checked above");
            account.status = wanted;
            account.updated = Timestamp::now();
        }
        if let Some(name) = name {
            let account = self.accounts.get_mut(sid).expect("checked above");
            account.friendly_name = name;
            account.updated = Timestamp::now();
        }
        Ok(self.fetch_account(sid))
    }

    pub fn create_key(
        &mut self,
        account_sid: &str,
        friendly_name: Option<String>,
        kind: KeyKind,
        policy: Option<Vec<String>>,
    ) -> Result<NewKey, ApiError> {
        if self.keys_held.get(account_sid).copied().unwrap_or(0) >= self.rules.max_keys {
            return Err(ApiError::new(400, 70151, "Maximum Number Of API Keys Exceeded"));
        }
        let friendly_name = friendly_name
            .map(|n| check_friendly_name(n, 70001, "The request has constraint violations"))
            .transpose()?;
        let secret = ids::key_secret();
        let now = Timestamp::now();
        let seq = self.next_seq();
        let key = Key {
            seq,
            sid: ids::sid("SK"),
            account_sid: account_sid.to_owned(),
            secret_digest: ids::digest(&secret),
            friendly_name,
            kind,
            policy,
            created: now,
            updated: now,
        };
        self.keys.insert(key.sid.clone(), key.clone());
        *self.keys_held.entry(key.account_sid.clone()).or_default() += 1;
        Ok(NewKey { key, secret })
    }

    /// The status to fail this request with, if [`Rules::fail_next`] names it; once.
    pub fn take_failure(&mut self, operation: &str, account: &str) -> Option<u16> {
        let armed = self.rules.fail_next.as_ref()?;
        if armed.operation != operation || armed.account != account {
            return None;
        }
        let status = if matches!(armed.status, 500 | 503) {
            armed.status
        } else {
            500
        };
        match self.rules.fail_next.as_mut() {
            Some(armed) if armed.times > 1 => armed.times -= 1,
            _ => self.rules.fail_next = None,
        }
        Some(status)
    }

    pub fn account_keys(&self, account_sid: &str) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .keys
            .values()
            .filter(|k| k.account_sid == account_sid)
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.seq);
        keys
    }

    /// The key `sid` if it belongs to `account_sid`, else 404 naming `path`.
    pub fn key_in(&self, account_sid: &str, sid: &str, path: &str) -> Result<Key, ApiError> {
        self.keys
            .get(sid)
            .filter(|k| k.account_sid == account_sid)
            .cloned()
            .ok_or_else(|| ApiError::not_found(path))
    }

    pub fn update_key(
        &mut self,
        sid: &str,
        friendly_name: Option<String>,
        policy: Option<Vec<String>>,
    ) -> Result<Key, ApiError> {
        let friendly_name = friendly_name
            .map(|n| check_friendly_name(n, 70001, "The request has constraint violations"))
            .transpose()?;
        let key = self.keys.get_mut(sid).expect("caller checked the key exists");
        if policy.is_some() && key.kind != KeyKind::Restricted {
            return Err(ApiError::new(
                400,
                70002,
                "Policy can only be set on a restricted key",
            ));
        }
        if let Some(name) = friendly_name {
            key.friendly_name = Some(name);
        }
        if let Some(policy) = policy {
            key.policy = Some(policy);
        }
        key.updated = Timestamp::now();
        Ok(key.clone())
    }

    pub fn delete_key(&mut self, sid: &str) {
        if let Some(key) = self.keys.remove(sid)
            && let Some(held) = self.keys_held.get_mut(&key.account_sid)
        {
            *held -= 1;
        }
    }

    pub fn create_secondary_token(&mut self, account_sid: &str) -> Result<Account, ApiError> {
        let account = self
            .accounts
            .get_mut(account_sid)
            .expect("authenticated account exists");
        if account.secondary_token.is_some() {
            return Err(ApiError::new(
                400,
                70002,
                "secondaryAuthToken already exists on account",
            ));
        }
        account.secondary_token = Some(ids::auth_token());
        account.secondary_created = Some(Timestamp::now());
        Ok(account.clone())
    }

    pub fn delete_secondary_token(&mut self, account_sid: &str) -> Result<(), ApiError> {
        let account = self
            .accounts
            .get_mut(account_sid)
            .expect("authenticated account exists");
        account
            .secondary_token
            .take()
            .map(|_| ())
            .ok_or_else(|| ApiError::not_found("/AuthTokens/Secondary"))
    }

    pub fn promote_secondary_token(&mut self, account_sid: &str) -> Result<Account, ApiError> {
        let account = self
            .accounts
            .get_mut(account_sid)
            .expect("authenticated account exists");
        let secondary = account
            .secondary_token
            .take()
            .ok_or_else(|| ApiError::not_found("/AuthTokens/Promote"))?;
        account.auth_token = secondary;
        account.secondary_created = None;
        account.updated = Timestamp::now();
        Ok(account.clone())
    }

    pub fn create_trigger(&mut self, account_sid: &str, new: NewTrigger) -> Result<Trigger, ApiError> {
        let friendly_name = new
            .friendly_name
            .map(|n| check_friendly_name(n, 20002, "Invalid FriendlyName"))
            .transpose()?;
        let now = Timestamp::now();
        let seq = self.next_seq();
        let trigger = Trigger {
            seq,
            sid: ids::sid("UT"),
            account_sid: account_sid.to_owned(),
            friendly_name,
            usage_category: new.usage_category,
            trigger_by: new.trigger_by.unwrap_or_else(|| "usage".into()),
            // "+30" is 30 above the value when the trigger is made.
            fires_at: match new.trigger_value.strip_prefix('+') {
                Some(offset) => offset.parse::<f64>().ok().map(|o| self.spend(account_sid) + o),
                None => new.trigger_value.parse::<f64>().ok(),
            },
            trigger_value: new.trigger_value,
            recurring: new.recurring.filter(|r| !r.is_empty()),
            callback_url: new.callback_url,
            callback_method: new.callback_method.unwrap_or_else(|| "POST".into()),
            created: now,
            updated: now,
            fired: None,
            fires: 0,
        };
        self.triggers.insert(trigger.sid.clone(), trigger.clone());
        Ok(trigger)
    }

    /// Points trigger `sid` of `account_sid` elsewhere or renames it; value, category and
    /// recurrence cannot change, as at Twilio.
    pub fn update_trigger(
        &mut self,
        account_sid: &str,
        sid: &str,
        callback_url: Option<String>,
        callback_method: Option<String>,
        friendly_name: Option<String>,
        path: &str,
    ) -> Result<Trigger, ApiError> {
        let friendly_name = friendly_name
            .map(|n| check_friendly_name(n, 20002, "Invalid FriendlyName"))
            .transpose()?;
        let now = self.now();
        let trigger = self
            .triggers
            .get_mut(sid)
            .filter(|t| t.account_sid == account_sid)
            .ok_or_else(|| ApiError::not_found(path))?;
        if let Some(url) = callback_url {
            trigger.callback_url = url;
        }
        if let Some(method) = callback_method {
            trigger.callback_method = method;
        }
        if friendly_name.is_some() {
            trigger.friendly_name = friendly_name;
        }
        trigger.updated = now;
        Ok(trigger.clone())
    }

    /// The emulated clock: the real one, plus [`World::clock_offset`].
    pub fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(self.clock_offset))
            .unwrap_or_else(|_| Timestamp::now())
    }

    /// The current usage month, `YYYY-MM` (GMT).
    pub fn period(&self) -> String {
        self.now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%Y-%m")
            .to_string()
    }

    /// Month-to-date spend of `account_sid`: nothing yet in a month it recorded nothing for.
    pub fn spend(&self, account_sid: &str) -> f64 {
        let account = &self.accounts[account_sid];
        if account.usage_period == self.period() {
            account.usage_total
        } else {
            0.0
        }
    }

    /// Sets the month-to-date spend of `account_sid`.
    pub fn set_spend(&mut self, account_sid: &str, total: f64) {
        let period = self.period();
        if let Some(account) = self.accounts.get_mut(account_sid) {
            account.usage_total = total;
            account.usage_period = period;
        }
    }

    /// Fires every price trigger on total price whose value this month's spend has reached and
    /// that has not fired in its period yet; returns the calls to make.
    pub fn fire_triggers(&mut self) -> Vec<Callback> {
        let now = self.now();
        let utc = now.to_zoned(jiff::tz::TimeZone::UTC);
        let mut due = Vec::new();
        for trigger in self.triggers.values() {
            if trigger.usage_category != "totalprice" || trigger.trigger_by != "price" {
                continue;
            }
            let period = match trigger.recurring.as_deref() {
                Some("daily") => utc.strftime("%Y-%m-%d").to_string(),
                Some("monthly") => utc.strftime("%Y-%m").to_string(),
                Some("yearly") => utc.strftime("%Y").to_string(),
                _ => "once".to_owned(),
            };
            let current = self.spend(&trigger.account_sid);
            let reached = trigger.fires_at.is_some_and(|value| current >= value);
            let fired = trigger.fired.as_ref().is_some_and(|(_, p)| *p == period);
            if reached && !fired {
                due.push((trigger.sid.clone(), period, current));
            }
        }
        let mut calls = Vec::new();
        for (sid, period, current) in due {
            let trigger = self.triggers.get_mut(&sid).expect("listed above");
            trigger.fired = Some((now, period.clone()));
            trigger.fires += 1;
            let trigger = trigger.clone();
            let token = &self.accounts[&trigger.account_sid].auth_token;
            let params: Vec<(String, String)> = [
                ("AccountSid", trigger.account_sid.clone()),
                ("UsageTriggerSid", trigger.sid.clone()),
                ("DateFired", ids::rfc2822(now)),
                ("Recurring", trigger.recurring.clone().unwrap_or_default()),
                ("UsageCategory", trigger.usage_category.clone()),
                ("TriggerBy", trigger.trigger_by.clone()),
                ("TriggerValue", trigger.trigger_value.clone()),
                ("CurrentValue", format!("{current}")),
                (
                    "UsageRecordUri",
                    format!(
                        "/2010-04-01/Accounts/{}/Usage/Records.json?Category={}",
                        trigger.account_sid, trigger.usage_category
                    ),
                ),
                (
                    "IdempotencyToken",
                    format!("{}-FIRES-{}-{period}", trigger.account_sid, trigger.sid),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let signature = ids::webhook_signature(token, &trigger.callback_url, &params);
            calls.push(Callback {
                url: trigger.callback_url.clone(),
                method: trigger.callback_method.clone(),
                params,
                signature,
            });
        }
        calls
    }

    pub fn account_triggers(&self, account_sid: &str) -> Vec<Trigger> {
        let mut triggers: Vec<Trigger> = self
            .triggers
            .values()
            .filter(|t| t.account_sid == account_sid)
            .cloned()
            .collect();
        triggers.sort_by_key(|t| t.seq);
        triggers
    }
}

fn check_friendly_name(name: String, code: u32, message: &str) -> Result<String, ApiError> {
    if name.is_empty() || name.chars().count() > 64 {
        Err(ApiError::new(
            400,
            code,
            format!("{message}: FriendlyName must be 1 to 64 characters"),
        ))
    } else {
        Ok(name)
    }
}

/// Parses an IAM policy `{"allow": [...]}` and checks each permission's shape.
pub fn parse_policy(text: &str) -> Result<Vec<String>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Policy {
        allow: Vec<String>,
    }
    let policy: Policy = serde_json::from_str(text)
        .map_err(|_| ApiError::new(400, 70002, "Invalid policy: expected {\"allow\": [...]}"))?;
    if policy.allow.is_empty() || policy.allow.len() > 100 {
        return Err(ApiError::new(
            400,
            70002,
            "A restricted key needs 1 to 100 permissions",
        ));
    }
    for permission in &policy.allow {
        let well_formed = permission.starts_with("/twilio/")
            && permission.split('/').skip(1).all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            })
            && permission.split('/').count() >= 4;
        if !well_formed {
            return Err(ApiError::new(
                400,
                70002,
                format!("assertion '{permission}' is invalid"),
            ));
        }
    }
    Ok(policy.allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> (World, Principal) {
        let mut world = World::default();
        let (sid, _) = world.bootstrap_main(None, Some("t".into()), None);
        (
            world,
            Principal {
                account_sid: sid,
                via: Via::AuthToken,
            },
        )
    }

    #[test]
    fn closed_is_terminal_and_parent_suspension_reaches_children() {
        let (mut world, main) = world();
        let sub = world.create_subaccount(&main, Some("tenant".into())).unwrap();
        let set = |status: &str| AccountUpdate {
            friendly_name: None,
            status: Some(status.into()),
        };
        world.update_account(&main, &sub.sid, set("closed")).unwrap();
        let err = world.update_account(&main, &sub.sid, set("active")).unwrap_err();
        assert_eq!((err.status, err.code), (400, 21479));

        let other = world.create_subaccount(&main, None).unwrap();
        assert!(world.authenticate(&other.sid, &other.auth_token).is_ok());
        world.accounts.get_mut(&main.account_sid).unwrap().status = AccountStatus::Suspended;
        assert_eq!(world.fetch_account(&other.sid).status, AccountStatus::Suspended);
        assert_eq!(
            world
                .authenticate(&other.sid, &other.auth_token)
                .unwrap_err()
                .code,
            20003
        );
    }

    #[test]
    fn the_key_limit_counts_each_account_and_frees_a_place_on_delete() {
        let (mut world, main) = world();
        world.rules.max_keys = 2;
        let sub = world.create_subaccount(&main, None).unwrap();
        let mut create = |account: &str| world.create_key(account, None, KeyKind::Standard, None);
        let first = create(&main.account_sid).unwrap();
        create(&main.account_sid).unwrap();
        let refused = create(&main.account_sid).err().unwrap();
        assert_eq!((refused.status, refused.code), (400, 70151));
        create(&sub.sid).unwrap();
        world.delete_key(&first.key.sid);
        world.delete_key(&first.key.sid);
        world
            .create_key(&main.account_sid, None, KeyKind::Standard, None)
            .unwrap();
        let refused = world
            .create_key(&main.account_sid, None, KeyKind::Standard, None)
            .err()
            .unwrap();
        assert_eq!(refused.code, 70151);
    }

    #[test]
    fn subaccounts_cannot_reach_parent_or_siblings() {
        let (mut world, main) = world();
        let a = world.create_subaccount(&main, None).unwrap();
        let b = world.create_subaccount(&main, None).unwrap();
        let as_a = world.authenticate(&a.sid, &a.auth_token).unwrap();
        assert_eq!(
            world
                .authorize(&as_a, &b.sid, Scope::Management, None, "/x")
                .unwrap_err()
                .code,
            20404
        );
        assert_eq!(
            world
                .authorize(&as_a, &main.account_sid, Scope::Management, None, "/x")
                .unwrap_err()
                .code,
            20404
        );
        assert!(
            world
                .authorize(&main, &a.sid, Scope::Management, None, "/x")
                .is_ok()
        );
        assert_eq!(
            world
                .authorize(&main, &a.sid, Scope::OwnAccountOnly, None, "/x")
                .unwrap_err()
                .code,
            20003
        );
        let nested = world.create_subaccount(&as_a, None).unwrap_err();
        assert_eq!((nested.status, nested.code), (400, 21101));
    }

    #[test]
    fn standard_keys_cannot_manage_and_deleted_keys_stop_working() {
        let (mut world, main) = world();
        let new = world
            .create_key(&main.account_sid, None, KeyKind::Standard, None)
            .unwrap();
        let as_key = world.authenticate(&new.key.sid, &new.secret).unwrap();
        let refused = world
            .authorize(&as_key, &main.account_sid, Scope::Management, None, "/x")
            .unwrap_err();
        assert_eq!((refused.status, refused.code), (401, 20003));
        assert!(
            world
                .authorize(&as_key, &main.account_sid, Scope::Resources, None, "/x")
                .is_ok()
        );
        world.delete_key(&new.key.sid);
        assert_eq!(
            world.authenticate(&new.key.sid, &new.secret).unwrap_err().code,
            20003
        );
    }

    #[test]
    fn secondary_token_flow() {
        let (mut world, main) = world();
        let with_secondary = world.create_secondary_token(&main.account_sid).unwrap();
        let secondary = with_secondary.secondary_token.clone().unwrap();
        assert_eq!(
            world.create_secondary_token(&main.account_sid).unwrap_err().code,
            70002
        );
        assert!(world.authenticate(&main.account_sid, &secondary).is_ok());
        assert!(world.authenticate(&main.account_sid, "t").is_ok());
        world.promote_secondary_token(&main.account_sid).unwrap();
        assert!(world.authenticate(&main.account_sid, "t").is_err());
        assert!(world.authenticate(&main.account_sid, &secondary).is_ok());
        assert_eq!(
            world
                .promote_secondary_token(&main.account_sid)
                .unwrap_err()
                .status,
            404
        );
    }

    #[test]
    fn policies_are_checked() {
        assert_eq!(
            parse_policy(r#"{"allow":["/twilio/messaging/messages/create"]}"#)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse_policy(r#"{"allow":["messaging"]}"#).unwrap_err().code,
            70002
        );
        assert_eq!(parse_policy(r#"{"allow":[]}"#).unwrap_err().code, 70002);
        assert_eq!(parse_policy("nope").unwrap_err().code, 70002);
    }
}
