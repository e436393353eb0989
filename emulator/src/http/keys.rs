//! The keys domain's operations: v2010 Keys (always Standard) and IAM v1 Keys (Standard or
//! Restricted, with a policy), each rendered in its API's own shape.

use super::{Call, Reply, Request, created, ok, v1_page, v2010_page};
use crate::ids;
use crate::routes::Route;
use crate::world::{self, ApiError, KeyKind, Scope, World, parse_policy};
use serde_json::{Value, json};

/// Runs `route`, one of this domain's operations ([`Route::domain`]).
pub(super) fn execute(world: &mut World, call: Call<'_>) -> Reply {
    let (principal, route, req) = (call.principal, call.route, call.req);
    match route {
        Route::CreateKey(account) => {
            world.authorize(principal, account, Scope::Management, None, req.path)?;
            world.require_active(account)?;
            // v2010 ignores KeyType and Policy: it always makes a Standard key.
            let new = world.create_key(account, req.form_owned("FriendlyName"), KeyKind::Standard, None)?;
            created(json!({
                "sid": new.key.sid, "friendly_name": new.key.friendly_name, "secret": new.secret,
                "date_created": ids::rfc2822(new.key.created), "date_updated": ids::rfc2822(new.key.updated),
            }))
        }
        Route::ListKey(account) => {
            world.authorize(principal, account, Scope::Management, None, req.path)?;
            let mut keys = world.account_keys(account);
            if let Some(omitted) = world.rules.omit_from_next_list.take() {
                keys.retain(|k| k.sid != omitted);
            }
            ok(v2010_page(req, "keys", &keys, |k| &k.sid, v2010_key_json)?)
        }
        Route::FetchKey(account, sid) => {
            world.authorize(principal, account, Scope::Management, None, req.path)?;
            ok(v2010_key_json(&world.key_in(account, sid, req.path)?))
        }
        Route::UpdateKey(account, sid) => {
            world.authorize(principal, account, Scope::Management, None, req.path)?;
            world.key_in(account, sid, req.path)?;
            ok(v2010_key_json(&world.update_key(
                sid,
                req.form_owned("FriendlyName"),
                None,
            )?))
        }
        Route::DeleteKey(account, sid) => {
            world.authorize(principal, account, Scope::Management, None, req.path)?;
            world.key_in(account, sid, req.path)?;
            world.delete_key(sid);
            Ok((204, None))
        }
        Route::IamCreateKey => {
            let account = req.required("AccountSid")?;
            world.authorize(principal, &account, Scope::OwnAccountOnly, None, req.path)?;
            world.require_active(&account)?;
            let (kind, policy) = match req.form("KeyType") {
                Some("restricted") => (
                    KeyKind::Restricted,
                    Some(parse_policy(req.form("Policy").ok_or_else(|| {
                        ApiError::new(400, 70002, "A restricted key requires a Policy")
                    })?)?),
                ),
                Some(other) => return Err(ApiError::new(400, 70002, format!("Invalid KeyType {other}"))),
                None => (KeyKind::Standard, None),
            };
            let new = world.create_key(&account, req.form_owned("FriendlyName"), kind, policy)?;
            let mut body = iam_key_json(&new.key);
            body["secret"] = json!(new.secret);
            created(body)
        }
        Route::IamListKeys => {
            let account = req
                .query("AccountSid")
                .ok_or_else(|| ApiError::new(400, 20001, "Missing required parameter AccountSid"))?
                .to_owned();
            world.authorize(principal, &account, Scope::OwnAccountOnly, None, req.path)?;
            ok(iam_page(req, &world.account_keys(&account))?)
        }
        Route::IamFetchKey(sid) | Route::IamUpdateKey(sid) | Route::IamDeleteKey(sid) => {
            let owner = world
                .keys
                .get(sid)
                .map(|k| k.account_sid.clone())
                .ok_or_else(|| ApiError::not_found(req.path))?;
            world.authorize(principal, &owner, Scope::OwnAccountOnly, None, req.path)?;
            match route {
                Route::IamFetchKey(_) => ok(iam_key_json(&world.keys[sid])),
                Route::IamUpdateKey(_) => {
                    let policy = req.form("Policy").map(parse_policy).transpose()?;
                    ok(iam_key_json(&world.update_key(
                        sid,
                        req.form_owned("FriendlyName"),
                        policy,
                    )?))
                }
                _ => {
                    world.delete_key(sid);
                    Ok((204, None))
                }
            }
        }
        // Another domain's route: not found here.
        _ => Err(ApiError::not_found(req.path)),
    }
}

fn v2010_key_json(k: &world::Key) -> Value {
    json!({"sid": k.sid, "friendly_name": k.friendly_name, "date_created": ids::rfc2822(k.created), "date_updated": ids::rfc2822(k.updated)})
}

/// The IAM fetch/update shape; list items swap `policy` for `flags`.
fn iam_key_json(k: &world::Key) -> Value {
    let policy = k.policy.as_ref().map(|allow| json!({"allow": allow}));
    json!({"sid": k.sid, "friendly_name": k.friendly_name, "date_created": ids::rfc2822(k.created), "date_updated": ids::rfc2822(k.updated), "policy": policy})
}

fn iam_page(req: &Request<'_>, keys: &[world::Key]) -> Result<Value, ApiError> {
    v1_page(
        req,
        "keys",
        keys,
        |k| &k.sid,
        |k| {
            let flags = if k.kind == KeyKind::Restricted {
                json!(["rest_api"])
            } else {
                json!(["rest_api", "signing"])
            };
            json!({"sid": k.sid, "friendly_name": k.friendly_name, "date_created": ids::rfc2822(k.created), "date_updated": ids::rfc2822(k.updated), "flags": flags})
        },
    )
}
