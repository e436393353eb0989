//! The TwilioAccount reconciler: whether an account's credentials authenticate at Twilio.
//!
//! Contract:
//! - `status.accountSid` is the SID the credentials belong to, and Ready says whether Twilio
//!   accepts them (one FetchAccount of the account itself);
//! - an account is checked once per generation and then once per resync interval, and a failing
//!   one no sooner than its backoff: its own status writes never cause another Twilio call;
//! - the policy itself is enforced where objects use the account ([`crate::tenancy`]), never here.

use crate::api::{TwilioAccount, TwilioAccountStatus};
use crate::conditions::{self, Problem, Reason};
use crate::context::{Context, MANAGER};
use crate::reconcile::{self, Error, object_id};
use crate::target;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The TwilioAccount reconciler.
pub struct Accounts {
    ctx: Arc<Context>,
    /// When each account (by name) is next due a check, and for which generation.
    due: Mutex<HashMap<String, (Option<i64>, Instant)>>,
}

impl Accounts {
    /// A reconciler acting through `ctx`.
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            due: Mutex::default(),
        }
    }
}

/// Checks `account`'s credentials at Twilio and records the outcome in its status.
pub async fn reconcile(account: Arc<TwilioAccount>, this: Arc<Accounts>) -> Result<Action, Error> {
    let ctx = &this.ctx;
    let name = account.name_any();
    let generation = account.metadata.generation;
    let scheduled = this.due.lock().expect("account checks").get(&name).copied();
    if let Some((checked, at)) = scheduled
        && checked == generation
        && let Some(wait) = at.checked_duration_since(Instant::now())
    {
        return Ok(Action::requeue(wait));
    }
    let now = Timestamp::now();
    let outcome: Result<String, Problem> = async {
        let creds = target::account_credentials(ctx, &account).await?;
        ctx.twilio.fetch_account(&creds, creds.account_sid()).await?;
        Ok(creds.account_sid().to_owned())
    }
    .await;
    let mut st = account.status.clone().unwrap_or_default();
    let id = object_id(account.as_ref());
    let wait = match outcome {
        Ok(sid) => {
            ctx.succeeded(&id);
            let message = format!("The credentials of {sid} authenticate at Twilio");
            st.conditions = conditions::ready(&st.conditions, Reason::Ready, message, generation, now);
            st.account_sid = Some(sid);
            st.observed_generation = generation;
            ctx.resync
        }
        Err(problem) => {
            st.conditions = reconcile::report(ctx, account.as_ref(), &st.conditions, problem, now).await;
            ctx.backoff(&id)
        }
    };
    this.due
        .lock()
        .expect("account checks")
        .insert(name.clone(), (generation, Instant::now() + wait));
    write_status(ctx, &name, &st).await?;
    Ok(Action::requeue(wait))
}

/// Retries a failed reconcile (a status write) after the account's backoff.
pub fn error_policy(account: Arc<TwilioAccount>, error: &Error, this: Arc<Accounts>) -> Action {
    let id = object_id(account.as_ref());
    let delay = this.ctx.backoff(&id);
    tracing::warn!(object = %id, error = %error, ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn write_status(ctx: &Context, name: &str, status: &TwilioAccountStatus) -> Result<(), kube::Error> {
    let api: Api<TwilioAccount> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({
        "apiVersion": TwilioAccount::api_version(&()),
        "kind": TwilioAccount::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}
