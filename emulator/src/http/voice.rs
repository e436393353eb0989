//! The voice domain's operations: dialing geo permissions by country (list, fetch, bulk update)
//! and their inheritance from the parent account (fetch, update). Each acts on the account whose
//! credentials make the call.

use super::{Call, Reply, Request, created, ok, v1_page};
use crate::routes::Route;
use crate::world::voice::{COUNTRIES, Country, CountryUpdate, Permission};
use crate::world::{ApiError, Scope, World};
use serde_json::{Value, json};

/// Runs `route`, one of this domain's operations ([`Route::domain`]).
pub(super) fn execute(world: &mut World, call: Call<'_>) -> Reply {
    let (principal, route, req) = (call.principal, call.route, call.req);
    let account = principal.account_sid.clone();
    world.authorize(principal, &account, Scope::Resources, None, req.path)?;
    match route {
        Route::ListDialingCountry => {
            let permissions = world.dialing_permissions(&account);
            let flag = |name: &str| req.query(name).map(|v| v == "true");
            let listed: Vec<(&Country, Permission)> = COUNTRIES
                .iter()
                .map(|c| (c, permissions.get(c.iso_code).copied().unwrap_or_default()))
                .filter(|(c, p)| {
                    req.query("IsoCode").is_none_or(|iso| iso == c.iso_code)
                        && req.query("Continent").is_none_or(|v| v == c.continent)
                        && req
                            .query("CountryCode")
                            .is_none_or(|v| c.country_codes.contains(&v))
                        && flag("LowRiskNumbersEnabled").is_none_or(|v| v == p.low_risk)
                        && flag("HighRiskSpecialNumbersEnabled").is_none_or(|v| v == p.high_risk_special)
                        && flag("HighRiskTollfraudNumbersEnabled").is_none_or(|v| v == p.high_risk_tollfraud)
                })
                .collect();
            ok(v1_page(
                req,
                "content",
                &listed,
                |(c, _)| c.iso_code,
                |(c, p)| country_json(req, c, p),
            )?)
        }
        Route::FetchDialingCountry(iso) => {
            let country = COUNTRIES
                .iter()
                .find(|c| c.iso_code == iso)
                .ok_or_else(|| ApiError::not_found(req.path))?;
            let permission = world.dialing_permissions(&account)[country.iso_code];
            ok(country_json(req, country, &permission))
        }
        Route::BulkUpdateDialingCountries => {
            let text = req.required("UpdateRequest")?;
            let updates = parse_updates(&text)?;
            let count = world.update_dialing(&account, &updates)?;
            created(json!({"update_count": count, "update_request": text}))
        }
        Route::FetchDialingSettings => ok(settings_json(req, world.dialing_inherits(&account))),
        Route::UpdateDialingSettings => {
            if let Some(value) = req.form("DialingPermissionsInheritance") {
                let inherit = match value {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(ApiError::new(
                            400,
                            20001,
                            format!("DialingPermissionsInheritance must be true or false, not {other}"),
                        ));
                    }
                };
                world.set_dialing_inheritance(&account, inherit)?;
            }
            // Twilio answers this update 202 Accepted.
            Ok((202, Some(settings_json(req, world.dialing_inherits(&account)))))
        }
        _ => unreachable!("routed to the voice domain"),
    }
}

fn country_json(req: &Request<'_>, c: &Country, p: &Permission) -> Value {
    let url = format!("{}/v1/DialingPermissions/Countries/{}", req.origin, c.iso_code);
    json!({
        "iso_code": c.iso_code,
        "name": c.name,
        "continent": c.continent,
        "country_codes": c.country_codes,
        "low_risk_numbers_enabled": p.low_risk,
        "high_risk_special_numbers_enabled": p.high_risk_special,
        "high_risk_tollfraud_numbers_enabled": p.high_risk_tollfraud,
        "url": url,
        "links": {"highrisk_special_prefixes": format!("{url}/HighRiskSpecialPrefixes")},
    })
}

fn settings_json(req: &Request<'_>, inherit: bool) -> Value {
    json!({"dialing_permissions_inheritance": inherit, "url": format!("{}/v1/Settings", req.origin)})
}

/// `UpdateRequest`: a JSON array of `{iso_code, low_risk_numbers_enabled,
/// high_risk_special_numbers_enabled, high_risk_tollfraud_numbers_enabled}`, the flags as
/// booleans or the strings "true" and "false", as Twilio's SDKs send them.
fn parse_updates(text: &str) -> Result<Vec<CountryUpdate>, ApiError> {
    let invalid = |why: &str| ApiError::new(400, 20001, format!("UpdateRequest is not valid: {why}"));
    let items: Vec<Value> = serde_json::from_str(text).map_err(|_| invalid("not a JSON array"))?;
    let flag = |item: &Value, name: &str| -> Result<Option<bool>, ApiError> {
        match &item[name] {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(*b)),
            Value::String(s) if s == "true" || s == "false" => Ok(Some(s == "true")),
            _ => Err(invalid(&format!("{name} must be true or false"))),
        }
    };
    items
        .iter()
        .map(|item| {
            Ok(CountryUpdate {
                iso_code: item["iso_code"]
                    .as_str()
                    .ok_or_else(|| invalid("each update needs an iso_code"))?
                    .to_owned(),
                low_risk: flag(item, "low_risk_numbers_enabled")?,
                high_risk_special: flag(item, "high_risk_special_numbers_enabled")?,
                high_risk_tollfraud: flag(item, "high_risk_tollfraud_numbers_enabled")?,
            })
        })
        .collect()
}
