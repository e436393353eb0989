//! The emulated Twilio world, split by Twilio domain: [`auth`] (who a request is and what it
//! may reach), [`accounts`] (accounts, subaccounts and auth tokens), [`keys`] (API keys),
//! [`usage`] (spend and usage triggers) and [`voice`] (dialing geo permissions). Here: the world's state, its rules and faults, and its
//! clock. Pure state transitions; HTTP lives in `http`. Every operation either changes the world
//! and returns the resource, or returns the [`ApiError`] Twilio would. Key secrets are stored
//! only as digests; a secret leaves the world once, in the value a create returns.

pub mod accounts;
pub mod auth;
pub mod keys;
pub mod usage;
pub mod voice;

pub use accounts::{Account, AccountStatus, AccountUpdate};
pub use auth::{PERMISSION_BALANCE, PERMISSION_USAGE, Principal, Scope, Via, parse_policy};
pub use keys::{Key, KeyKind, NewKey};
pub use usage::{Callback, NewTrigger, Trigger};

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
    /// Each account's own voice dialing permissions, made on first use.
    dialing: BTreeMap<String, voice::Dialing>,
    seq: u64,
}

/// `name` if Twilio takes it as a FriendlyName, else a 400 with `code` and `message`.
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
        let name = name.unwrap_or_else(|| "emulator@example.com".into());
        let account = Account::opened(seq, sid.clone(), None, name, token.clone(), now, "20.00".into());
        self.accounts.insert(sid.clone(), account);
        (sid, token)
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn world() -> (World, Principal) {
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
}
