//! The TwilioAccount reconciler: whether an account's credentials authenticate at Twilio (one
//! FetchAccount of the account itself), recorded as `status.accountSid` and Ready, and the
//! account's balance (one FetchBalance), recorded as `status.balance` and its metric. An account
//! is checked once per generation and then once per resync interval, a failing one no sooner
//! than its backoff: the balance is read once per account per interval, never per object. The policy is enforced where objects use the account ([`crate::tenancy`]), never here;
//! [`keep_applied`] keeps the account the Helm chart's values describe applied.

use crate::api::account::AccountBalance;
use crate::api::{TwilioAccount, TwilioAccountStatus};
use crate::conditions::{self, Problem, Reason};
use crate::context::{Context, MANAGER};
use crate::objects::{self, object_id};
use crate::reconcile::{self, Error};
use crate::target;
use crate::twilio::types::Balance;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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

    /// Forgets the account `name`, which is gone: its schedule and its backoff.
    pub fn forget(&self, name: &str) {
        self.due.lock().expect("account checks").remove(name);
        self.ctx.metrics.account_balance(name, None);
        self.ctx.succeeded(&objects::id_of::<TwilioAccount>("", name));
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
    let outcome: Result<(String, Option<Balance>), Problem> = async {
        let creds = target::account_credentials(ctx, &account).await?;
        let fetched = ctx.twilio.fetch_account(&creds, creds.account_sid()).await;
        fetched.map_err(|e| {
            let said = e.to_string();
            match Problem::from(e) {
                p if p.reason == Reason::AuthenticationFailed => Problem::new(
                    p.reason,
                    format!("{said}. Check spec.credentials: they must hold an account SID with its auth token, or a Main API key."),
                ),
                p => p,
            }
        })?;
        let sid = creds.account_sid().to_owned();
        // Twilio gives a subaccount's credentials no balance; not knowing it is no failure.
        let balance = match ctx.twilio.fetch_balance(&creds, &sid).await {
            Ok(balance) => Some(balance),
            Err(e) => {
                tracing::info!(account = %name, error = %e, "could not read the account's balance");
                None
            }
        };
        Ok((sid, balance))
    }
    .await;
    let mut st = account.status.clone().unwrap_or_default();
    let id = object_id(account.as_ref());
    let wait = match outcome {
        Ok((sid, balance)) => {
            ctx.succeeded(&id);
            let message = format!("The credentials of {sid} authenticate at Twilio");
            st.conditions = conditions::ready(&st.conditions, message, generation, now);
            st.account_sid = Some(sid);
            st.balance = balance.and_then(|b| {
                Some(AccountBalance {
                    amount: b.balance?,
                    currency: b.currency.unwrap_or_default(),
                    observed_at: Time(now),
                })
            });
            let amount = st.balance.as_ref().and_then(|b| b.amount.parse::<f64>().ok());
            ctx.metrics.account_balance(&name, amount);
            ctx.resync
        }
        Err(problem) => {
            st.conditions = reconcile::report(ctx, account.as_ref(), &st.conditions, problem, now).await;
            ctx.backoff(&id)
        }
    };
    st.observed_generation = generation;
    this.due
        .lock()
        .expect("account checks")
        .insert(name.clone(), (generation, Instant::now() + wait));
    write_status(ctx, &name, &st).await?;
    Ok(Action::requeue(wait))
}

/// Retries a failed reconcile (a status write) after the account's backoff.
pub fn error_policy(account: Arc<TwilioAccount>, error: &Error, this: Arc<Accounts>) -> Action {
    reconcile::retry_after_backoff(&this.ctx, account.as_ref(), error)
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

/// Keeps the TwilioAccount a ConfigMap describes (keys `name` and `spec.yaml`, as the Helm
/// chart renders them from its values) applied, re-applying on every change of the ConfigMap,
/// until `shutdown` completes. The values are the source of truth: fields they set are taken back
/// from any other writer.
pub async fn keep_applied(
    ctx: Arc<Context>,
    configmap: String,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.cluster.own_namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={configmap}"));
    let applied = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .for_each(|found| {
            let ctx = ctx.clone();
            async move {
                let outcome = match found {
                    Ok(map) => apply_from(&ctx, &map).await,
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(name) => {
                        tracing::info!(account = %name, "applied the TwilioAccount the chart describes")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not apply the TwilioAccount the chart describes")
                    }
                }
            }
        });
    tokio::select! {
        () = applied => {}
        () = shutdown => {}
    }
}

/// Applies the TwilioAccount in `map`; returns its name.
async fn apply_from(ctx: &Context, map: &k8s_openapi::api::core::v1::ConfigMap) -> Result<String, String> {
    let data = map.data.clone().unwrap_or_default();
    let name = data
        .get("name")
        .cloned()
        .ok_or("the ConfigMap has no key \"name\"")?;
    let text = data
        .get("spec.yaml")
        .ok_or("the ConfigMap has no key \"spec.yaml\"")?;
    let spec: crate::api::TwilioAccountSpec =
        serde_saphyr::from_str(text).map_err(|e| format!("spec.yaml is not a TwilioAccount spec: {e}"))?;
    let patch = serde_json::json!({
        "apiVersion": TwilioAccount::api_version(&()),
        "kind": TwilioAccount::kind(&()),
        "metadata": {"name": name},
        "spec": spec,
    });
    Api::<TwilioAccount>::all(ctx.client.clone())
        .patch(
            &name,
            &PatchParams::apply(CHART_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| format!("TwilioAccount {name}: {e}"))?;
    Ok(name)
}

/// Field manager of the TwilioAccount the chart's values describe.
const CHART_MANAGER: &str = "twilio-operator-chart";
