//! The Twilio-facing HTTP surface: one handler that routes, checks the contract, injects faults,
//! authenticates, limits concurrency, runs the operation and renders Twilio's JSON.
//!
//! Contract: bodies and envelopes follow Twilio's published shapes (snake_case fields, v2010
//! flat pagination with relative URIs, IAM `meta` pagination with absolute URLs, error bodies
//! `{code, message, more_info, status}`), every response carries `Twilio-Request-Id`, and key
//! secrets appear only in create responses.

use crate::faults::Fault;
use crate::model::{
    AccountUpdate, ApiError, KeyKind, NewTrigger, PERMISSION_BALANCE, PERMISSION_USAGE, Principal, Scope,
    World, parse_policy,
};
use crate::routes::{Route, route};
use crate::{App, ids, model};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .nest("/_emulator", crate::admin::router())
        .fallback(handle)
        .with_state(app)
}

/// A parsed request, as the operations see it.
struct Request<'a> {
    path: &'a str,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    /// `scheme://host` of this request, for IAM's absolute page URLs.
    origin: String,
}

impl Request<'_> {
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn form(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn form_owned(&self, name: &str) -> Option<String> {
        self.form(name).map(str::to_owned)
    }
    fn required(&self, name: &str) -> Result<String, ApiError> {
        self.form_owned(name).ok_or_else(|| ApiError::missing(name))
    }
}

async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let form: Vec<(String, String)> = if content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
    {
        serde_urlencoded::from_bytes(&body).unwrap_or_default()
    } else {
        Vec::new()
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let request = Request {
        path: &path,
        query,
        form,
        origin: format!("http://{host}"),
    };

    let route = match route(&method, &path) {
        Ok(route) => route,
        Err(error) => {
            app.count("unrouted", error.status);
            return error_response(&error, None);
        }
    };
    app.arrived(route.operation());
    if let Some(contract) = &app.contract {
        app.violations(contract.check_request(
            &method,
            &path,
            &request.query,
            content_type.as_deref(),
            &request.form,
        ));
    }
    let (status, body) = serve(&app, &route, &headers, &request).await;
    if status == 0 {
        app.count(route.operation(), 0);
        return connection_reset();
    }
    let bytes = match &body {
        Ok(Some(value)) => serde_json::to_vec(value).expect("JSON values serialize"),
        _ => Vec::new(),
    };
    if let Some(contract) = &app.contract {
        app.violations(contract.check_response(&method, &path, status, &bytes));
    }
    app.count(route.operation(), status);
    match body {
        Ok(_) => {
            let mut response = (StatusCode::from_u16(status).expect("valid status"), bytes).into_response();
            if status != 204 {
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
            }
            with_request_id(response)
        }
        Err((error, retry_after)) => error_response(&error, retry_after),
    }
}

type Outcome = Result<Option<Value>, (ApiError, Option<u64>)>;

/// Runs one request through faults, auth, the concurrency limit and the operation. Status 0
/// means "reset the connection".
async fn serve(app: &App, route: &Route, headers: &HeaderMap, request: &Request<'_>) -> (u16, Outcome) {
    let principal = match credentials(headers)
        .and_then(|(user, pass)| app.world.lock().expect("world").authenticate(&user, &pass))
    {
        Ok(p) => p,
        Err(e) => return (e.status, Err((e, None))),
    };
    if let Some(status) = app
        .world
        .lock()
        .expect("world")
        .take_failure(route.operation(), &principal.account_sid)
    {
        return (status, Err((server_error(status), None)));
    }
    let Some(_slot) = app.enter(&principal.account_sid) else {
        let retry_after = app.knobs.read().expect("knobs").retry_after_secs;
        return (429, Err((too_many_requests(), retry_after)));
    };
    let (delay, fault, retry_after) = {
        let knobs = app.knobs.read().expect("knobs");
        (knobs.delay(), knobs.roll(), knobs.retry_after_secs)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(Fault::Reset) => {}
        Some(Fault::TooManyRequests) => return (429, Err((too_many_requests(), retry_after))),
        Some(Fault::ServerError(status)) => return (status, Err((server_error(status), None))),
        None => {}
    }
    let mut world = app.world.lock().expect("world");
    let outcome = execute(&mut world, &principal, route, request);
    // Twilio evaluates triggers about once a minute; the emulator after every change.
    app.deliver(world.fire_triggers());
    drop(world);
    if fault == Some(Fault::Reset) {
        // The dangerous kind: Twilio acted, then the connection dropped before the answer.
        return (0, Ok(None));
    }
    match outcome {
        Ok((status, body)) => (status, Ok(body)),
        Err(e) => (e.status, Err((e, None))),
    }
}

/// A 500 or 503 as Twilio answers it (20500, 20503).
fn server_error(status: u16) -> ApiError {
    ApiError::new(
        status,
        20500 + u32::from(status == 503) * 3,
        "Internal Server Error",
    )
}

fn too_many_requests() -> ApiError {
    ApiError::new(429, 20429, "Too Many Requests")
}

fn credentials(headers: &HeaderMap) -> Result<(String, String), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::authenticate)?;
    let encoded = value.strip_prefix("Basic ").ok_or_else(ApiError::authenticate)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ApiError::authenticate())?;
    let text = String::from_utf8(decoded).map_err(|_| ApiError::authenticate())?;
    let (user, pass) = text.split_once(':').ok_or_else(ApiError::authenticate)?;
    Ok((user.to_owned(), pass.to_owned()))
}

fn execute(
    world: &mut World,
    principal: &Principal,
    route: &Route,
    req: &Request<'_>,
) -> Result<(u16, Option<Value>), ApiError> {
    let ok = |v: Value| Ok((200, Some(v)));
    let created = |v: Value| Ok((201, Some(v)));
    match route {
        Route::CreateAccount => {
            world.authorize(
                principal,
                &principal.account_sid,
                Scope::Management,
                None,
                req.path,
            )?;
            created(account_json(
                &world.create_subaccount(principal, req.form_owned("FriendlyName"))?,
            ))
        }
        Route::ListAccount => {
            world.authorize(
                principal,
                &principal.account_sid,
                Scope::Management,
                None,
                req.path,
            )?;
            let status = req.query("Status");
            if let Some(s) = status.filter(|s| model::AccountStatus::parse(s).is_none()) {
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
    }
}

fn account_json(a: &model::Account) -> Value {
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

fn v2010_key_json(k: &model::Key) -> Value {
    json!({"sid": k.sid, "friendly_name": k.friendly_name, "date_created": ids::rfc2822(k.created), "date_updated": ids::rfc2822(k.updated)})
}

/// The IAM fetch/update shape; list items swap `policy` for `flags`.
fn iam_key_json(k: &model::Key) -> Value {
    let policy = k.policy.as_ref().map(|allow| json!({"allow": allow}));
    json!({"sid": k.sid, "friendly_name": k.friendly_name, "date_created": ids::rfc2822(k.created), "date_updated": ids::rfc2822(k.updated), "policy": policy})
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

fn trigger_json(t: &model::Trigger, current: f64) -> Value {
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

/// One page of `items`: `(page number, page size, items on it, token of the next page)`.
struct Page<'a, T> {
    number: usize,
    size: usize,
    items: &'a [T],
    next_token: Option<String>,
    previous_token: Option<String>,
}

fn paginate<'a, T>(
    req: &Request<'_>,
    items: &'a [T],
    sid: impl Fn(&T) -> &str,
) -> Result<Page<'a, T>, ApiError> {
    let size = match req.query("PageSize") {
        None => 50,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::new(400, 20001, "PageSize must be between 1 and 1000"))?,
    };
    let number: usize = req.query("Page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let position = |anchor: &str| {
        items
            .iter()
            .position(|item| sid(item) == anchor)
            .ok_or_else(|| ApiError::new(400, 21481, "Invalid PageToken"))
    };
    let start = match req.query("PageToken") {
        None => number * size,
        Some(token) => match (token.get(..2), token.get(2..)) {
            (Some("PA"), Some(anchor)) => position(anchor)? + 1,
            (Some("PB"), Some(anchor)) => position(anchor)?.saturating_sub(size),
            _ => return Err(ApiError::new(400, 21481, "Invalid PageToken")),
        },
    }
    .min(items.len());
    let end = (start + size).min(items.len());
    let page = &items[start..end];
    Ok(Page {
        number,
        size,
        items: page,
        next_token: (end < items.len()).then(|| format!("PA{}", sid(&page[page.len() - 1]))),
        previous_token: (start > 0)
            .then(|| page.first().map(|first| format!("PB{}", sid(first))))
            .flatten(),
    })
}

/// The query string of a page: the caller's filters, then paging.
fn page_query(req: &Request<'_>, size: usize, number: usize, token: Option<&str>) -> String {
    let mut pairs: Vec<(&str, String)> = req
        .query
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "PageSize" | "Page" | "PageToken"))
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    pairs.push(("PageSize", size.to_string()));
    pairs.push(("Page", number.to_string()));
    if let Some(token) = token {
        pairs.push(("PageToken", token.to_owned()));
    }
    serde_urlencoded::to_string(pairs).expect("strings encode")
}

fn v2010_page<T>(
    req: &Request<'_>,
    key: &str,
    items: &[T],
    sid: impl Fn(&T) -> &str,
    render: impl Fn(&T) -> Value,
) -> Result<Value, ApiError> {
    let page = paginate(req, items, sid)?;
    let uri = |number: usize, token: Option<&str>| {
        format!("{}?{}", req.path, page_query(req, page.size, number, token))
    };
    let start = page.number * page.size;
    Ok(json!({
        key: page.items.iter().map(render).collect::<Vec<_>>(),
        "uri": uri(page.number, req.query("PageToken")),
        "first_page_uri": uri(0, None),
        "next_page_uri": page.next_token.as_deref().map(|t| uri(page.number + 1, Some(t))),
        "previous_page_uri": page.previous_token.as_deref().map(|t| uri(page.number.saturating_sub(1), Some(t))),
        "page": page.number,
        "page_size": page.size,
        "start": start,
        "end": start + page.items.len().saturating_sub(1),
    }))
}

fn iam_page(req: &Request<'_>, keys: &[model::Key]) -> Result<Value, ApiError> {
    let page = paginate(req, keys, |k| &k.sid)?;
    let url = |number: usize, token: Option<&str>| {
        format!(
            "{}{}?{}",
            req.origin,
            req.path,
            page_query(req, page.size, number, token)
        )
    };
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|k| {
            let flags = if k.kind == KeyKind::Restricted { json!(["rest_api"]) } else { json!(["rest_api", "signing"]) };
            json!({"sid": k.sid, "friendly_name": k.friendly_name, "date_created": ids::rfc2822(k.created), "date_updated": ids::rfc2822(k.updated), "flags": flags})
        })
        .collect();
    Ok(json!({
        "keys": items,
        "meta": {
            "page": page.number,
            "page_size": page.size,
            "first_page_url": url(0, None),
            "previous_page_url": page.previous_token.as_deref().map(|t| url(page.number.saturating_sub(1), Some(t))),
            "url": url(page.number, req.query("PageToken")),
            "next_page_url": page.next_token.as_deref().map(|t| url(page.number + 1, Some(t))),
            "key": "keys",
        }
    }))
}

fn with_request_id(mut response: Response) -> Response {
    let id = HeaderValue::from_str(&ids::request_id()).expect("SIDs are header-safe");
    response.headers_mut().insert("twilio-request-id", id);
    response
}

pub fn error_response(error: &ApiError, retry_after: Option<u64>) -> Response {
    let body = json!({
        "code": error.code,
        "message": error.message,
        "more_info": format!("https://www.twilio.com/docs/errors/{}", error.code),
        "status": error.status,
    });
    let mut response = (
        StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response();
    if error.status == 401 {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
    }
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    with_request_id(response)
}

/// Headers, then a body that fails: the client sees the connection drop mid-response.
fn connection_reset() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset",
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, "64")
        .body(Body::from_stream(failing))
        .expect("static response")
}
