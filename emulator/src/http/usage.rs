//! The usage domain's operations: this month's usage records and usage triggers (create,
//! list, fetch, update, delete), priced on the emulated clock.

use super::{Call, Reply, created, ok, v2010_page};
use crate::ids;
use crate::routes::Route;
use crate::world::{self, ApiError, NewTrigger, PERMISSION_USAGE, Scope, World};
use serde_json::{Value, json};

/// Runs `route`, one of this domain's operations ([`Route::domain`]).
pub(super) fn execute(world: &mut World, call: Call<'_>) -> Reply {
    let (principal, route, req) = (call.principal, call.route, call.req);
    match route {
        Route::ListUsageRecord(account, _) => {
            world.authorize(
                principal,
                account,
                Scope::Resources,
                Some(PERMISSION_USAGE),
                req.path,
            )?;
            let records: Vec<Value> = match req.query("Category") {
                None | Some("totalprice") => vec![usage_record_json(world, account)],
                Some(_) => Vec::new(),
            };
            ok(v2010_page(
                req,
                "usage_records",
                &records,
                |r| r["category"].as_str().unwrap_or_default(),
                Value::clone,
            )?)
        }
        Route::CreateUsageTrigger(account) => {
            world.authorize(principal, account, Scope::Resources, None, req.path)?;
            let new = NewTrigger {
                callback_url: req.required("CallbackUrl")?,
                trigger_value: req.required("TriggerValue")?,
                usage_category: req.required("UsageCategory")?,
                callback_method: req.form_owned("CallbackMethod"),
                friendly_name: req.form_owned("FriendlyName"),
                recurring: req.form_owned("Recurring"),
                trigger_by: req.form_owned("TriggerBy"),
            };
            let trigger = world.create_trigger(account, new)?;
            created(trigger_json(&trigger, world.spend(account)))
        }
        Route::ListUsageTrigger(account) => {
            world.authorize(principal, account, Scope::Resources, None, req.path)?;
            ok(v2010_page(
                req,
                "usage_triggers",
                &world.account_triggers(account),
                |t| &t.sid,
                |t| trigger_json(t, world.spend(account)),
            )?)
        }
        Route::FetchUsageTrigger(account, sid) | Route::DeleteUsageTrigger(account, sid) => {
            world.authorize(principal, account, Scope::Resources, None, req.path)?;
            let trigger = world
                .triggers
                .get(sid)
                .filter(|t| &t.account_sid == account)
                .cloned()
                .ok_or_else(|| ApiError::not_found(req.path))?;
            if matches!(route, Route::DeleteUsageTrigger(..)) {
                world.triggers.remove(sid);
                return Ok((204, None));
            }
            ok(trigger_json(&trigger, world.spend(account)))
        }
        Route::UpdateUsageTrigger(account, sid) => {
            world.authorize(principal, account, Scope::Resources, None, req.path)?;
            let trigger = world.update_trigger(
                account,
                sid,
                req.form_owned("CallbackUrl"),
                req.form_owned("CallbackMethod"),
                req.form_owned("FriendlyName"),
                req.path,
            )?;
            ok(trigger_json(&trigger, world.spend(account)))
        }
        // Another domain's route: not found here.
        _ => Err(ApiError::not_found(req.path)),
    }
}

fn usage_record_json(world: &World, account: &str) -> Value {
    let now = world.now().to_zoned(jiff::tz::TimeZone::UTC);
    let first = now.date().first_of_month();
    let total = world.spend(account);
    json!({
        "account_sid": account, "api_version": "2010-04-01", "as_of": now.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
        "category": "totalprice", "count": null, "count_unit": null, "description": "Total Price",
        "start_date": first.to_string(), "end_date": now.date().to_string(),
        "price": total, "price_unit": "usd", "usage": format!("{total:.2}"), "usage_unit": "usd",
        "uri": format!("/2010-04-01/Accounts/{account}/Usage/Records/ThisMonth.json?Category=totalprice"),
        "subresource_uris": {},
    })
}

fn trigger_json(t: &world::Trigger, current: f64) -> Value {
    let base = format!("/2010-04-01/Accounts/{}/Usage", t.account_sid);
    json!({
        "sid": t.sid, "account_sid": t.account_sid, "api_version": "2010-04-01", "friendly_name": t.friendly_name,
        "usage_category": t.usage_category, "trigger_by": t.trigger_by, "trigger_value": t.trigger_value,
        "recurring": t.recurring.as_deref().unwrap_or(""), "callback_url": t.callback_url, "callback_method": t.callback_method,
        "current_value": format!("{current}"), "date_created": ids::rfc2822(t.created), "date_updated": ids::rfc2822(t.updated),
        "date_fired": t.fired.as_ref().map(|(at, _)| ids::rfc2822(*at)),
        "uri": format!("{base}/Triggers/{}.json", t.sid), "usage_record_uri": format!("{base}/Records.json?Category={}", t.usage_category),
    })
}
