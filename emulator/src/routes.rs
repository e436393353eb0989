//! Which Twilio operation a method and path name, with the SIDs the path carries.
//!
//! Contract: [`route`] accepts exactly the paths of the four hosts this emulator serves (api,
//! iam, accounts, voice), all on one listener; anything else is a 404/20404 naming the path, and a
//! malformed SID in a path is a 400/70002, as Twilio answers.

use crate::ids;
use crate::world::ApiError;
use axum::http::Method;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    CreateAccount,
    ListAccount,
    FetchAccount(String),
    UpdateAccount(String),
    CreateKey(String),
    ListKey(String),
    FetchKey(String, String),
    UpdateKey(String, String),
    DeleteKey(String, String),
    FetchBalance(String),
    ListUsageRecord(String, &'static str),
    CreateUsageTrigger(String),
    ListUsageTrigger(String),
    FetchUsageTrigger(String, String),
    UpdateUsageTrigger(String, String),
    DeleteUsageTrigger(String, String),
    IamCreateKey,
    IamListKeys,
    IamFetchKey(String),
    IamUpdateKey(String),
    IamDeleteKey(String),
    CreateSecondaryAuthToken,
    DeleteSecondaryAuthToken,
    PromoteAuthToken,
    ListDialingCountry,
    FetchDialingCountry(String),
    BulkUpdateDialingCountries,
    FetchDialingSettings,
    UpdateDialingSettings,
}

/// The Twilio domain whose operations a route names; each is served by its own module of `http`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Accounts, subaccounts, their balance and auth tokens.
    Accounts,
    /// API keys, in v2010 and IAM.
    Keys,
    /// Usage records and usage triggers.
    Usage,
    /// Voice dialing geo permissions and their inheritance.
    Voice,
}

impl Route {
    /// The domain this route belongs to.
    pub fn domain(&self) -> Domain {
        match self {
            Route::CreateAccount
            | Route::ListAccount
            | Route::FetchAccount(_)
            | Route::UpdateAccount(_)
            | Route::FetchBalance(_)
            | Route::CreateSecondaryAuthToken
            | Route::DeleteSecondaryAuthToken
            | Route::PromoteAuthToken => Domain::Accounts,
            Route::CreateKey(_)
            | Route::ListKey(_)
            | Route::FetchKey(..)
            | Route::UpdateKey(..)
            | Route::DeleteKey(..)
            | Route::IamCreateKey
            | Route::IamListKeys
            | Route::IamFetchKey(_)
            | Route::IamUpdateKey(_)
            | Route::IamDeleteKey(_) => Domain::Keys,
            Route::ListUsageRecord(..)
            | Route::CreateUsageTrigger(_)
            | Route::ListUsageTrigger(_)
            | Route::FetchUsageTrigger(..)
            | Route::UpdateUsageTrigger(..)
            | Route::DeleteUsageTrigger(..) => Domain::Usage,
            Route::ListDialingCountry
            | Route::FetchDialingCountry(_)
            | Route::BulkUpdateDialingCountries
            | Route::FetchDialingSettings
            | Route::UpdateDialingSettings => Domain::Voice,
        }
    }
}

const USAGE_PERIODS: [(&str, &str); 8] = [
    ("AllTime", "api.ListUsageRecordAllTime"),
    ("Daily", "api.ListUsageRecordDaily"),
    ("LastMonth", "api.ListUsageRecordLastMonth"),
    ("Monthly", "api.ListUsageRecordMonthly"),
    ("ThisMonth", "api.ListUsageRecordThisMonth"),
    ("Today", "api.ListUsageRecordToday"),
    ("Yearly", "api.ListUsageRecordYearly"),
    ("Yesterday", "api.ListUsageRecordYesterday"),
];

impl Route {
    /// `host.operationId`, as in Twilio's OpenAPI files; the key of the call counters.
    pub fn operation(&self) -> &'static str {
        match self {
            Route::CreateAccount => "api.CreateAccount",
            Route::ListAccount => "api.ListAccount",
            Route::FetchAccount(_) => "api.FetchAccount",
            Route::UpdateAccount(_) => "api.UpdateAccount",
            Route::CreateKey(_) => "api.CreateNewKey",
            Route::ListKey(_) => "api.ListKey",
            Route::FetchKey(..) => "api.FetchKey",
            Route::UpdateKey(..) => "api.UpdateKey",
            Route::DeleteKey(..) => "api.DeleteKey",
            Route::FetchBalance(_) => "api.FetchBalance",
            Route::ListUsageRecord(_, op) => op,
            Route::CreateUsageTrigger(_) => "api.CreateUsageTrigger",
            Route::ListUsageTrigger(_) => "api.ListUsageTrigger",
            Route::FetchUsageTrigger(..) => "api.FetchUsageTrigger",
            Route::UpdateUsageTrigger(..) => "api.UpdateUsageTrigger",
            Route::DeleteUsageTrigger(..) => "api.DeleteUsageTrigger",
            Route::IamCreateKey => "iam.CreateNewKey",
            Route::IamListKeys => "iam.ListGetKeys",
            Route::IamFetchKey(_) => "iam.FetchKey",
            Route::IamUpdateKey(_) => "iam.UpdateKey",
            Route::IamDeleteKey(_) => "iam.DeleteKey",
            Route::CreateSecondaryAuthToken => "accounts.CreateSecondaryAuthToken",
            Route::DeleteSecondaryAuthToken => "accounts.DeleteSecondaryAuthToken",
            Route::PromoteAuthToken => "accounts.UpdateAuthTokenPromotion",
            Route::ListDialingCountry => "voice.ListDialingPermissionsCountry",
            Route::FetchDialingCountry(_) => "voice.FetchDialingPermissionsCountry",
            Route::BulkUpdateDialingCountries => "voice.CreateDialingPermissionsCountryBulkUpdate",
            Route::FetchDialingSettings => "voice.FetchDialingPermissionsSettings",
            Route::UpdateDialingSettings => "voice.UpdateDialingPermissionsSettings",
        }
    }
}

fn checked(prefix: &str, sid: &str) -> Result<String, ApiError> {
    if ids::is_sid(prefix, sid) {
        Ok(sid.to_owned())
    } else {
        Err(ApiError::new(400, 70002, "Invalid Sid provided in the request"))
    }
}

/// An account SID and a resource SID from one path, both checked.
fn pair(account: &str, prefix: &str, sid: &str) -> Result<(String, String), ApiError> {
    Ok((checked("AC", account)?, checked(prefix, sid)?))
}

pub fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let not_found = || ApiError::not_found(path);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["2010-04-01", rest @ ..] => {
            let (last, init) = rest.split_last().ok_or_else(not_found)?;
            let last = last.strip_suffix(".json").ok_or_else(not_found)?;
            let mut parts: Vec<&str> = init.to_vec();
            parts.push(last);
            v2010(method, &parts).ok_or_else(not_found)?
        }
        ["v1", "Keys"] if method == Method::POST => Ok(Route::IamCreateKey),
        ["v1", "Keys"] if method == Method::GET => Ok(Route::IamListKeys),
        ["v1", "Keys", sid] => {
            let sid = checked("SK", sid)?;
            match *method {
                Method::GET => Ok(Route::IamFetchKey(sid)),
                Method::POST => Ok(Route::IamUpdateKey(sid)),
                Method::DELETE => Ok(Route::IamDeleteKey(sid)),
                _ => Err(not_found()),
            }
        }
        ["v1", "AuthTokens", "Secondary"] if method == Method::POST => Ok(Route::CreateSecondaryAuthToken),
        ["v1", "AuthTokens", "Secondary"] if method == Method::DELETE => Ok(Route::DeleteSecondaryAuthToken),
        ["v1", "AuthTokens", "Promote"] if method == Method::POST => Ok(Route::PromoteAuthToken),
        ["v1", "DialingPermissions", "Countries"] if method == Method::GET => Ok(Route::ListDialingCountry),
        ["v1", "DialingPermissions", "Countries", iso] if method == Method::GET => {
            Ok(Route::FetchDialingCountry((*iso).to_owned()))
        }
        ["v1", "DialingPermissions", "BulkCountryUpdates"] if method == Method::POST => {
            Ok(Route::BulkUpdateDialingCountries)
        }
        ["v1", "Settings"] if method == Method::GET => Ok(Route::FetchDialingSettings),
        ["v1", "Settings"] if method == Method::POST => Ok(Route::UpdateDialingSettings),
        _ => Err(not_found()),
    }
}

/// v2010 paths without the version and the `.json` suffix; `None` when unrouted.
fn v2010(method: &Method, parts: &[&str]) -> Option<Result<Route, ApiError>> {
    let account = |sid: &str| checked("AC", sid);
    let route = match (method.clone(), parts) {
        (Method::POST, ["Accounts"]) => Ok(Route::CreateAccount),
        (Method::GET, ["Accounts"]) => Ok(Route::ListAccount),
        (Method::GET, ["Accounts", sid]) => account(sid).map(Route::FetchAccount),
        (Method::POST, ["Accounts", sid]) => account(sid).map(Route::UpdateAccount),
        (Method::POST, ["Accounts", a, "Keys"]) => account(a).map(Route::CreateKey),
        (Method::GET, ["Accounts", a, "Keys"]) => account(a).map(Route::ListKey),
        (m, ["Accounts", a, "Keys", sid]) => {
            let (a, sid) = match pair(a, "SK", sid) {
                Ok(pair) => pair,
                Err(e) => return Some(Err(e)),
            };
            match m {
                Method::GET => Ok(Route::FetchKey(a, sid)),
                Method::POST => Ok(Route::UpdateKey(a, sid)),
                Method::DELETE => Ok(Route::DeleteKey(a, sid)),
                _ => return None,
            }
        }
        (Method::GET, ["Accounts", a, "Balance"]) => account(a).map(Route::FetchBalance),
        (Method::GET, ["Accounts", a, "Usage", "Records"]) => {
            account(a).map(|a| Route::ListUsageRecord(a, "api.ListUsageRecord"))
        }
        (Method::GET, ["Accounts", a, "Usage", "Records", period]) => {
            let (_, op) = USAGE_PERIODS.iter().find(|(p, _)| p == period)?;
            account(a).map(|a| Route::ListUsageRecord(a, op))
        }
        (Method::POST, ["Accounts", a, "Usage", "Triggers"]) => account(a).map(Route::CreateUsageTrigger),
        (Method::GET, ["Accounts", a, "Usage", "Triggers"]) => account(a).map(Route::ListUsageTrigger),
        (m, ["Accounts", a, "Usage", "Triggers", sid]) => {
            let (a, sid) = match pair(a, "UT", sid) {
                Ok(pair) => pair,
                Err(e) => return Some(Err(e)),
            };
            match m {
                Method::GET => Ok(Route::FetchUsageTrigger(a, sid)),
                Method::POST => Ok(Route::UpdateUsageTrigger(a, sid)),
                Method::DELETE => Ok(Route::DeleteUsageTrigger(a, sid)),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_all_three_hosts_and_checks_sids() {
        let ac = format!("AC{}", "0".repeat(32));
        let sk = format!("SK{}", "1".repeat(32));
        assert_eq!(
            route(&Method::POST, "/2010-04-01/Accounts.json"),
            Ok(Route::CreateAccount)
        );
        assert_eq!(
            route(
                &Method::DELETE,
                &format!("/2010-04-01/Accounts/{ac}/Keys/{sk}.json")
            ),
            Ok(Route::DeleteKey(ac.clone(), sk.clone()))
        );
        assert_eq!(
            route(
                &Method::GET,
                &format!("/2010-04-01/Accounts/{ac}/Usage/Records/ThisMonth.json")
            )
            .map(|r| r.operation()),
            Ok("api.ListUsageRecordThisMonth")
        );
        assert_eq!(
            route(&Method::GET, &format!("/v1/Keys/{sk}")),
            Ok(Route::IamFetchKey(sk))
        );
        assert_eq!(
            route(&Method::POST, "/v1/AuthTokens/Promote"),
            Ok(Route::PromoteAuthToken)
        );
        assert_eq!(
            route(
                &Method::GET,
                &format!("/2010-04-01/Accounts/{ac}/Keys/SKnope.json")
            )
            .unwrap_err()
            .code,
            70002
        );
        assert_eq!(
            route(&Method::GET, "/2010-04-01/Accounts").unwrap_err().code,
            20404
        );
        assert_eq!(route(&Method::GET, "/v2/Nothing").unwrap_err().status, 404);
    }
}
