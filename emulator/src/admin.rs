//! The emulator's own controls, under `/_emulator/` (a prefix Twilio does not have): bootstrap
//! accounts and keys, set knobs, change accounts as Twilio staff would, and read the state and
//! counters. Unauthenticated: it is a test tool bound to loopback.
//!
//! Contract: the state dump never contains a key secret or an auth token; the bootstrap calls
//! return the credentials they create, since that is their purpose.

use crate::world::{AccountStatus, ApiError, KeyKind, Rules};
use crate::{App, faults::Knobs, http::error_response};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/state", get(state))
        .route("/accounts", post(bootstrap_account))
        .route("/accounts/{sid}", post(change_account))
        .route("/keys", post(bootstrap_key))
        .route("/config", put(configure).get(config))
        .route("/reset-stats", post(reset_stats))
        .route("/clock", post(travel))
        .route("/requests", get(requests))
}

/// The request log: when each routed request arrived, what it asked, and from which client.
async fn requests(State(app): State<Arc<App>>) -> Json<Value> {
    let stats = app.stats.lock().expect("stats");
    Json(json!({ "requests": stats.requests }))
}

async fn state(State(app): State<Arc<App>>) -> Json<Value> {
    let world = app.world.lock().expect("world");
    let accounts: Vec<Value> = world
        .accounts
        .values()
        .map(|a| {
            json!({
                "sid": a.sid, "owner_account_sid": a.owner, "friendly_name": a.friendly_name,
                "status": a.status.as_str(), "effective_status": world.effective_status(a).as_str(),
                "has_secondary_token": a.secondary_token.is_some(), "usage_total": world.spend(&a.sid),
            })
        })
        .collect();
    let keys: Vec<Value> = world
        .keys
        .values()
        .map(|k| json!({"sid": k.sid, "account_sid": k.account_sid, "kind": k.kind, "friendly_name": k.friendly_name, "policy": k.policy}))
        .collect();
    let triggers: Vec<Value> = world
        .triggers
        .values()
        .map(|t| json!({"sid": t.sid, "account_sid": t.account_sid, "friendly_name": t.friendly_name, "trigger_value": t.trigger_value, "callback_url": t.callback_url, "recurring": t.recurring, "fired": t.fired.as_ref().map(|(_, p)| p), "fires": t.fires}))
        .collect();
    let stats = app.stats.lock().expect("stats");
    Json(json!({
        "accounts": accounts, "keys": keys, "triggers": triggers,
        "callbacks": *app.callbacks.lock().expect("callbacks"),
        "received": stats.received, "calls": stats.calls, "violations": stats.violations,
    }))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct BootstrapAccount {
    sid: Option<String>,
    auth_token: Option<String>,
    friendly_name: Option<String>,
}

async fn bootstrap_account(State(app): State<Arc<App>>, Json(body): Json<BootstrapAccount>) -> Response {
    if body.sid.as_deref().is_some_and(|s| !crate::ids::is_sid("AC", s)) {
        return error_response(
            &ApiError::new(400, 70002, "sid must be AC followed by 32 hex digits"),
            None,
        );
    }
    let (sid, auth_token) =
        app.world
            .lock()
            .expect("world")
            .bootstrap_main(body.sid, body.auth_token, body.friendly_name);
    Json(json!({"sid": sid, "auth_token": auth_token})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapKey {
    account_sid: String,
    kind: KeyKind,
    friendly_name: Option<String>,
}

/// Creates a key of any kind, including Main keys, which Twilio only makes in its Console.
async fn bootstrap_key(State(app): State<Arc<App>>, Json(body): Json<BootstrapKey>) -> Response {
    let mut world = app.world.lock().expect("world");
    if !world.accounts.contains_key(&body.account_sid) {
        return error_response(&ApiError::not_found(&body.account_sid), None);
    }
    match world.create_key(&body.account_sid, body.friendly_name, body.kind, None) {
        Ok(new) => Json(json!({"sid": new.key.sid, "secret": new.secret})).into_response(),
        Err(e) => error_response(&e, None),
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct AccountChange {
    status: Option<String>,
    usage_total: Option<f64>,
    add_usage: Option<f64>,
    balance: Option<String>,
}

/// Changes an account as Twilio itself might: suspend a main account, set this month's spend
/// (`usage_total`) or add to it (`add_usage`), which fires the triggers it reaches.
async fn change_account(
    State(app): State<Arc<App>>,
    Path(sid): Path<String>,
    Json(change): Json<AccountChange>,
) -> Response {
    let mut world = app.world.lock().expect("world");
    if !world.accounts.contains_key(&sid) {
        return error_response(&ApiError::not_found(&sid), None);
    }
    if let Some(total) = change.usage_total {
        world.set_spend(&sid, total);
    }
    if let Some(more) = change.add_usage {
        let total = world.spend(&sid) + more;
        world.set_spend(&sid, total);
    }
    app.deliver(world.fire_triggers());
    let account = world.accounts.get_mut(&sid).expect("checked above");
    if let Some(status) = change.status {
        match AccountStatus::parse(&status) {
            Some(status) => account.status = status,
            None => {
                return error_response(
                    &ApiError::new(400, 20001, format!("Invalid status {status}")),
                    None,
                );
            }
        }
    }
    if let Some(balance) = change.balance {
        account.balance = balance;
    }
    Json(json!({"sid": sid})).into_response()
}

async fn config(State(app): State<Arc<App>>) -> Json<Value> {
    let knobs = app.knobs.read().expect("knobs").clone();
    let rules = app.world.lock().expect("world").rules.clone();
    Json(json!({"knobs": knobs, "rules": rules}))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ConfigChange {
    knobs: Option<Value>,
    rules: Option<Value>,
}

/// Merges a partial `{"knobs": {...}, "rules": {...}}` into the live configuration.
async fn configure(State(app): State<Arc<App>>, Json(change): Json<ConfigChange>) -> Response {
    if let Some(patch) = change.knobs {
        let mut knobs = app.knobs.write().expect("knobs");
        match merged::<Knobs>(&knobs, patch) {
            Ok(new) => *knobs = new,
            Err(e) => return error_response(&e, None),
        }
    }
    if let Some(patch) = change.rules {
        let mut world = app.world.lock().expect("world");
        match merged::<Rules>(&world.rules, patch) {
            Ok(new) => world.rules = new,
            Err(e) => return error_response(&e, None),
        }
    }
    config(State(app)).await.into_response()
}

fn merged<T: serde::Serialize + serde::de::DeserializeOwned>(
    current: &T,
    patch: Value,
) -> Result<T, ApiError> {
    let mut value = serde_json::to_value(current).expect("config serializes");
    if let (Value::Object(base), Value::Object(patch)) = (&mut value, patch) {
        base.extend(patch);
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::new(400, 20001, format!("invalid configuration: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Travel {
    /// Seconds to move the emulated clock forward (or back, if negative).
    advance_seconds: i64,
}

/// Moves the emulated clock, as tests cross into the next month; answers the new time.
async fn travel(State(app): State<Arc<App>>, Json(body): Json<Travel>) -> Json<Value> {
    let mut world = app.world.lock().expect("world");
    world.clock_offset = world.clock_offset.saturating_add(body.advance_seconds);
    app.deliver(world.fire_triggers());
    Json(json!({"now": world.now().to_string(), "period": world.period()}))
}

async fn reset_stats(State(app): State<Arc<App>>) -> Json<Value> {
    *app.stats.lock().expect("stats") = Default::default();
    Json(json!({}))
}
