//! The accounts domain's operations: v2010 Accounts (create, list, fetch, update), the
//! balance billed to an account, and IAM's secondary auth token and its promotion.

use super::{Call, Reply, created, ok, v2010_page};
use crate::ids;
use crate::routes::Route;
use crate::world::{self, AccountUpdate, ApiError, PERMISSION_BALANCE, Scope, World};
use serde_json::{Value, json};

/// Runs `route`, one of this domain's operations ([`Route::domain`]).
pub(super) fn execute(world: &mut World, call: Call<'_>) -> Reply {
    let (principal, route, req) = (call.principal, call.route, call.req);
    let own = principal.account_sid.as_str();
    match route {
        Route::CreateAccount => {
            world.authorize(principal, own, Scope::Management, None, req.path)?;
            created(account_json(
                &world.create_subaccount(principal, req.form_owned("FriendlyName"))?,
            ))
        }
        Route::ListAccount => {
            world.authorize(principal, own, Scope::Management, None, req.path)?;
            let status = req.query("Status");
            if let Some(s) = status.filter(|s| world::AccountStatus::parse(s).is_none()) {
                return Err(ApiError::new(400, 20001, format!("Invalid Status {s}")));
            }
            let accounts: Vec<_> = world
                .visible_accounts(principal)
                .into_iter()
                .filter(|a| req.query("FriendlyName").is_none_or(|n| a.friendly_name == n))
                .filter(|a| status.is_none_or(|s| a.status.as_str() == s))
                .collect();
            ok(v2010_page(req, "accounts", &accounts, |a| &a.sid, account_json)?)
        }
        Route::FetchAccount(sid) => {
            world.authorize(principal, sid, Scope::Management, None, req.path)?;
            ok(account_json(&world.fetch_account(sid)))
        }
        Route::UpdateAccount(sid) => {
            world.authorize(principal, sid, Scope::Management, None, req.path)?;
            let update = AccountUpdate {
                friendly_name: req.form_owned("FriendlyName"),
                status: req.form_owned("Status"),
            };
            ok(account_json(&world.update_account(principal, sid, update)?))
        }
        Route::FetchBalance(account) => {
            world.authorize(
                principal,
                account,
                Scope::Resources,
                Some(PERMISSION_BALANCE),
                req.path,
            )?;
            // Subaccounts carry no balance of their own: billing is pooled on the parent.
            let acc = &world.accounts[account];
            let billed = acc.owner.as_ref().map_or(acc, |owner| &world.accounts[owner]);
            ok(json!({"account_sid": account, "balance": billed.balance, "currency": "USD"}))
        }
        Route::CreateSecondaryAuthToken | Route::DeleteSecondaryAuthToken | Route::PromoteAuthToken => {
            let own = principal.account_sid.clone();
            world.authorize(principal, &own, Scope::OwnAccountOnly, None, req.path)?;
            let base = format!("{}/v1/AuthTokens", req.origin);
            match route {
                Route::CreateSecondaryAuthToken => {
                    let account = world.create_secondary_token(&own)?;
                    let at = ids::rfc3339(account.secondary_created.unwrap_or(account.updated));
                    created(json!({
                        "account_sid": own, "secondary_auth_token": account.secondary_token,
                        "date_created": at, "date_updated": at, "url": format!("{base}/Secondary"),
                    }))
                }
                Route::DeleteSecondaryAuthToken => world.delete_secondary_token(&own).map(|()| (204, None)),
                _ => {
                    let account = world.promote_secondary_token(&own)?;
                    ok(json!({
                        "account_sid": own, "auth_token": account.auth_token,
                        "date_created": ids::rfc3339(account.created), "date_updated": ids::rfc3339(account.updated),
                        "url": format!("{base}/Promote"),
                    }))
                }
            }
        }
        // Another domain's route: not found here.
        _ => Err(ApiError::not_found(req.path)),
    }
}

fn account_json(a: &world::Account) -> Value {
    let base = format!("/2010-04-01/Accounts/{}", a.sid);
    let subresources: serde_json::Map<String, Value> = [
        ("available_phone_numbers", "AvailablePhoneNumbers"),
        ("calls", "Calls"),
        ("conferences", "Conferences"),
        ("incoming_phone_numbers", "IncomingPhoneNumbers"),
        ("notifications", "Notifications"),
        ("outgoing_caller_ids", "OutgoingCallerIds"),
        ("recordings", "Recordings"),
        ("transcriptions", "Transcriptions"),
        ("addresses", "Addresses"),
        ("signing_keys", "SigningKeys"),
        ("connect_apps", "ConnectApps"),
        ("sip", "SIP"),
        ("authorized_connect_apps", "AuthorizedConnectApps"),
        ("usage", "Usage"),
        ("keys", "Keys"),
        ("applications", "Applications"),
        ("short_codes", "SMS/ShortCodes"),
        ("queues", "Queues"),
        ("messages", "Messages"),
        ("balance", "Balance"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), json!(format!("{base}/{v}.json"))))
    .collect();
    json!({
        "sid": a.sid,
        "owner_account_sid": a.owner.as_deref().unwrap_or(&a.sid),
        "friendly_name": a.friendly_name,
        "status": a.status.as_str(),
        "type": "Full",
        "auth_token": a.auth_token,
        "date_created": ids::rfc2822(a.created),
        "date_updated": ids::rfc2822(a.updated),
        "uri": format!("{base}.json"),
        "subresource_uris": subresources,
    })
}
