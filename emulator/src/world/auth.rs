//! Who a request is and what it may reach: Basic credentials (an account's auth token, primary
//! or secondary, or an API key) resolved to a [`Principal`]; the scope a key kind allows (a
//! Standard key manages nothing, a Restricted key only what its policy grants); a parent reaching
//! its subaccounts, and a subaccount nothing but itself.

use super::{AccountStatus, ApiError, KeyKind, World};
use crate::ids;

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

/// The permission strings the emulator knows how to check for Restricted keys.
pub const PERMISSION_BALANCE: &str = "/twilio/billing/balance/read";

pub const PERMISSION_USAGE: &str = "/twilio/usage/records/list";

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

impl World {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::tests::world;

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
