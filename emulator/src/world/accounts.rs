//! Accounts: a main account and its subaccounts, their status (a closed subaccount is never
//! reopened, and a suspended or closed parent suspends its children) and their auth tokens,
//! rotated through a secondary token that is created, then promoted.

use super::{ApiError, Principal, World, check_friendly_name};
use crate::ids;
use jiff::Timestamp;
use serde::Serialize;

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

/// The two optional changes an account update carries.
pub struct AccountUpdate {
    pub friendly_name: Option<String>,
    pub status: Option<String>,
}

impl Account {
    /// An active account, just opened, with no spend and no secondary token.
    pub(super) fn opened(
        seq: u64,
        sid: String,
        owner: Option<String>,
        friendly_name: String,
        auth_token: String,
        now: Timestamp,
        balance: String,
    ) -> Self {
        Self {
            seq,
            sid,
            owner,
            friendly_name,
            status: AccountStatus::Active,
            auth_token,
            secondary_token: None,
            secondary_created: None,
            created: now,
            updated: now,
            usage_total: 0.0,
            usage_period: String::new(),
            balance,
        }
    }
}

impl World {
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
        let owner = Some(caller.sid.clone());
        let account = Account::opened(
            seq,
            ids::sid("AC"),
            owner,
            name,
            ids::auth_token(),
            now,
            caller.balance.clone(),
        );
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::tests::world;

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
}
