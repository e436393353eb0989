//! The TwilioSubaccount reconciler: one lifecycle for one Twilio subaccount, its published
//! credentials and its auth token rotation.
//!
//! Contract:
//! - create is never duplicated: the intent (`status.pendingSince`) is written before Twilio is
//!   asked, the subaccount is created under a name unique to this object, its SID is recorded at
//!   once, and after an interruption the subaccount is found by that name (Twilio's list filters
//!   on exact FriendlyName) instead of being created again; then it is renamed as the spec says;
//! - a closed subaccount is never reopened; one suspended outside Kubernetes is brought back to
//!   spec.state with a Warning event;
//! - the auth token rotates through Twilio's secondary token: create, publish, wait gracePeriod,
//!   promote. The Secret always holds a token that works, whatever step a crash interrupts;
//! - usage is read at most every 15 minutes.

pub mod plan;

use crate::api::subaccount::{
    AuthTokenStatus, SubaccountDeletionPolicy, SubaccountUsage, TwilioSubaccount, TwilioSubaccountStatus,
};
use crate::api::{TwilioApiKey, duration};
use crate::apikey::schedule;
use crate::conditions::Reason;
use crate::context::{Context, MANAGER, Problem};
use crate::reconcile::{self, Error, Stop, object_id, write_status};
use crate::secret::{self, Expect, Observed};
use crate::twilio::types::{Account, AccountFilter, AccountStatus, AccountUpdate};
use crate::twilio::{Credentials, ErrorClass};
use crate::{failpoint, tagging, target};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use plan::{StateStep, TokenStep};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;

const ACCOUNT_SID_KEY: &str = "TWILIO_ACCOUNT_SID";
const AUTH_TOKEN_KEY: &str = "TWILIO_AUTH_TOKEN";

pub async fn reconcile(sub: Arc<TwilioSubaccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile::with_finalizer(
        sub,
        ctx,
        |o, ctx| async move { apply(&o, &ctx).await },
        |o, ctx| async move { cleanup(&o, &ctx).await },
    )
    .await
}

fn display_name(sub: &TwilioSubaccount) -> String {
    sub.spec
        .friendly_name
        .clone()
        .unwrap_or_else(|| format!("{}/{}", sub.namespace().unwrap_or_default(), sub.name_any()))
}

async fn apply(sub: &TwilioSubaccount, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let mut st = sub.status.clone().unwrap_or_default();
    let outcome = converge(sub, ctx, &mut st, now).await;
    reconcile::finish(ctx, sub, st, outcome, now).await
}

/// One pass of the lifecycle; returns the Ready message and the next deadline, if any.
async fn converge(
    sub: &TwilioSubaccount,
    ctx: &Context,
    st: &mut TwilioSubaccountStatus,
    now: Timestamp,
) -> Result<(String, Option<Timestamp>), Stop> {
    let ns = sub.namespace().unwrap_or_default();
    let parent = target::credentials(ctx, &ns, sub.spec.credentials_ref.as_ref()).await?;
    st.api_keys = Some(count_keys(ctx, &ns, &sub.name_any()).await?);

    let account = find_or_create(sub, ctx, &parent, st, now).await?;
    record(st, &account);
    let observed = account.status.unwrap_or(AccountStatus::Unknown);
    let step = plan::state_step(sub.spec.state, observed);
    if step == StateStep::Closed {
        return Err(Problem::new(
            Reason::SubaccountClosed,
            format!("Subaccount {} is closed at Twilio, which cannot be undone; delete this object, and create a new TwilioSubaccount for a new subaccount", account.sid),
        )
        .into());
    }
    let desired_name = display_name(sub);
    let rename =
        (account.friendly_name.as_deref() != Some(desired_name.as_str())).then(|| desired_name.clone());
    let status = match step {
        StateStep::Set(s) => Some(s),
        _ => None,
    };
    if rename.is_some() || status.is_some() {
        let updated = ctx
            .twilio
            .update_account(
                &parent,
                &account.sid,
                &AccountUpdate {
                    friendly_name: rename,
                    status,
                },
            )
            .await?;
        record(st, &updated);
        if let Some(s) = status {
            // The spec did not change since the last pass, so Twilio's side drifted.
            let drifted = st.observed_generation == sub.metadata.generation;
            let (type_, reason) = if drifted {
                (EventType::Warning, "StatusDrift")
            } else {
                (EventType::Normal, "StatusChanged")
            };
            let note = format!(
                "Subaccount {} was {} at Twilio; set to {} as spec.state says",
                account.sid,
                observed.as_str(),
                s.as_str()
            );
            ctx.event(&sub.object_ref(&()), type_, reason, "Update", note)
                .await;
        }
    }

    // The newest of the status and this process's last read: a stale status must not cost a call.
    let known = [st.usage.clone(), ctx.last_usage(&account.sid)]
        .into_iter()
        .flatten()
        .max_by_key(|u| u.observed_at.0);
    st.usage = if plan::usage_due(known.as_ref(), now) {
        let records = ctx
            .twilio
            .usage_this_month(&parent, &account.sid, "totalprice")
            .await?;
        let total = records.into_iter().next();
        let usage = SubaccountUsage {
            month_to_date: total
                .as_ref()
                .and_then(|r| r.price.clone())
                .unwrap_or_else(|| "0".into()),
            currency: total.and_then(|r| r.price_unit).unwrap_or_else(|| "usd".into()),
            observed_at: Time(now),
        };
        ctx.remember_usage(&account.sid, usage.clone());
        if let Ok(amount) = usage.month_to_date.parse::<f64>() {
            ctx.metrics.usage(&ns, &sub.name_any(), &usage.currency, amount);
        }
        Some(usage)
    } else {
        known
    };

    let token_deadline = match &sub.spec.secret {
        Some(secret) => {
            publish(
                sub,
                ctx,
                st,
                &account.sid,
                account.auth_token.as_ref(),
                &secret.name,
                now,
            )
            .await?
        }
        None => None,
    };
    let usage_deadline = st
        .usage
        .as_ref()
        .map(|u| schedule::after(u.observed_at.0, plan::USAGE_MAX_AGE));
    let deadline = token_deadline.into_iter().chain(usage_deadline).min();
    Ok((
        format!(
            "Subaccount {} is {}",
            account.sid,
            st.twilio_status.as_deref().unwrap_or("unknown")
        ),
        deadline,
    ))
}

fn record(st: &mut TwilioSubaccountStatus, account: &Account) {
    st.sid = Some(account.sid.clone());
    st.owner_account_sid = account.owner_account_sid.clone();
    st.friendly_name = account.friendly_name.clone();
    st.twilio_status = account.status.map(|s| s.as_str().to_owned());
}

async fn count_keys(ctx: &Context, ns: &str, name: &str) -> Result<i32, kube::Error> {
    let keys = Api::<TwilioApiKey>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(keys
        .items
        .iter()
        .filter(|k| k.spec.subaccount_ref.as_ref().is_some_and(|r| r.name == name))
        .count() as i32)
}

/// The subaccount this object manages: adopted (spec.sid), recorded (status.sid), found after
/// an interrupted create, or created now.
async fn find_or_create(
    sub: &TwilioSubaccount,
    ctx: &Context,
    parent: &Credentials,
    st: &mut TwilioSubaccountStatus,
    now: Timestamp,
) -> Result<Account, Stop> {
    if let Some(sid) = sub.spec.sid.as_deref() {
        let account = ctx.twilio.fetch_account(parent, sid).await.map_err(|e| match e.class() {
            ErrorClass::NotFound => Problem::new(
                Reason::NotFound,
                format!("spec.sid {sid} does not exist at Twilio, or account {} cannot see it: check the SID and spec.credentialsRef", parent.account_sid()),
            ),
            _ => e.into(),
        })?;
        if sid == parent.account_sid() || account.owner_account_sid.as_deref() != Some(parent.account_sid()) {
            return Err(Problem::new(
                Reason::NotASubaccount,
                format!("spec.sid {sid} is not a subaccount of {}, the account whose credentials the operator uses: only its subaccounts can be adopted", parent.account_sid()),
            )
            .into());
        }
        return Ok(account);
    }
    if let Some(sid) = st.sid.clone() {
        return ctx.twilio.fetch_account(parent, &sid).await.map_err(|e| match e.class() {
            ErrorClass::NotFound => Problem::new(Reason::NotFound, format!("Subaccount {sid} recorded in status no longer exists at Twilio (Twilio deletes closed subaccounts after 30 days)")).into(),
            _ => e.into(),
        });
    }
    let uid = sub.uid().unwrap_or_default();
    let creation_name = tagging::tagged_name(&display_name(sub), &uid);
    if st.pending_since.is_some() {
        let filter = AccountFilter {
            friendly_name: Some(creation_name.clone()),
            status: None,
        };
        if let Some(found) = ctx
            .twilio
            .list_accounts(parent, &filter)
            .await?
            .into_iter()
            .find(|a| a.sid != parent.account_sid())
        {
            st.sid = Some(found.sid.clone());
            st.pending_since = None;
            write_status(ctx, sub, st).await?;
            ctx.event(
                &sub.object_ref(&()),
                EventType::Normal,
                "Recovered",
                "Create",
                format!(
                    "Found subaccount {} created before an interruption; no second one was made",
                    found.sid
                ),
            )
            .await;
            return Ok(found);
        }
    }
    st.pending_since = Some(Time(now));
    write_status(ctx, sub, st).await?;
    let account = ctx.twilio.create_account(parent, Some(&creation_name)).await?;
    failpoint::hit("subaccount-after-create");
    st.sid = Some(account.sid.clone());
    st.pending_since = None;
    write_status(ctx, sub, st).await?;
    ctx.event(
        &sub.object_ref(&()),
        EventType::Normal,
        "Created",
        "Create",
        format!("Created subaccount {}", account.sid),
    )
    .await;
    Ok(account)
}

/// Keeps the Secret holding a working token of the subaccount, rotating it when asked to.
/// Returns when the rotation needs attention next.
async fn publish(
    sub: &TwilioSubaccount,
    ctx: &Context,
    st: &mut TwilioSubaccountStatus,
    sid: &str,
    primary: Option<&SecretString>,
    name: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>, Stop> {
    let primary = primary.ok_or_else(|| {
        Problem::new(
            Reason::TwilioError,
            format!("Twilio returned no auth token for subaccount {sid}"),
        )
    })?;
    let ns = sub.namespace().unwrap_or_default();
    let uid = sub.uid().unwrap_or_default();
    let found = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(name)
        .await?;
    let observed = secret::observe(
        found.as_ref(),
        &uid,
        &[
            (ACCOUNT_SID_KEY, Expect::Equals(sid)),
            (AUTH_TOKEN_KEY, Expect::Secret),
        ],
    );
    let record = match &observed {
        Observed::Conflict => return Err(reconcile::secret_conflict(name, "TwilioSubaccount").into()),
        Observed::Ours(r) if r.intact => Some(r.clone()),
        _ => None,
    };
    let primary_digest = secret::digest(primary.expose_secret());
    let holds_primary = record
        .as_ref()
        .is_some_and(|r| r.digest.as_deref() == Some(primary_digest.as_str()));
    let writer = SecretWriter {
        sub,
        ctx,
        ns: &ns,
        name,
        sid,
        ours: matches!(observed, Observed::Ours(_)),
    };

    let Some(rotation) = &sub.spec.auth_token_rotation else {
        st.auth_token = None;
        if !holds_primary {
            writer.write(primary, now).await?;
        }
        return Ok(None);
    };
    let parse = |field: &str, text: &str| {
        duration::parse(text)
            .map_err(|e| Problem::new(Reason::Pending, format!("spec.authTokenRotation.{field}: {e}")))
    };
    let (every, grace) = (
        parse("every", &rotation.every)?,
        parse("gracePeriod", &rotation.grace_period)?,
    );
    let mut token = st.auth_token.clone().unwrap_or(AuthTokenStatus {
        rotated_at: Time(now),
        secondary_published_at: None,
        next_rotation_at: None,
    });
    let own = |token: &SecretString| {
        Credentials::with_auth_token(sid.to_owned(), token.clone())
            .map_err(|e| Problem::new(Reason::TwilioError, e.to_string()))
    };

    if token.secondary_published_at.is_some() && holds_primary {
        // Promoted, and stopped before recording it.
        token.rotated_at = Time(now);
        token.secondary_published_at = None;
    }
    if token.secondary_published_at.is_none()
        && !holds_primary
        && let Some(record) = &record
    {
        // The Secret holds another token: a secondary published just before an interruption, if
        // it still authenticates; otherwise a stale one, replaced below.
        let held = found
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get(AUTH_TOKEN_KEY))
            .map(|v| SecretString::from(String::from_utf8_lossy(&v.0).into_owned()));
        if let Some(held) = held
            && ctx.twilio.fetch_account(&own(&held)?, sid).await.is_ok()
        {
            token.secondary_published_at = Some(Time(record.created_at.unwrap_or(now)));
        }
    }

    match plan::token_step(&token, every, grace, now) {
        TokenStep::Start => {
            let creds = own(primary)?;
            let secondary = match ctx.twilio.create_secondary_auth_token(&creds).await {
                Err(e) if e.code() == Some(70002) => {
                    // A secondary left by an interruption: its value is unknown, so start over.
                    ctx.twilio.delete_secondary_auth_token(&creds).await?;
                    ctx.twilio.create_secondary_auth_token(&creds).await?
                }
                other => other?,
            };
            failpoint::hit("token-after-create-secondary");
            writer.write(&secondary.secondary_auth_token, now).await?;
            failpoint::hit("token-after-secret");
            token.secondary_published_at = Some(Time(now));
            let note = format!(
                "Published a new auth token for {sid}; it becomes the only valid one in {}",
                rotation.grace_period
            );
            ctx.event(
                &sub.object_ref(&()),
                EventType::Normal,
                "AuthTokenRotationStarted",
                "Rotate",
                note,
            )
            .await;
        }
        TokenStep::Promote => {
            match ctx.twilio.promote_secondary_auth_token(&own(primary)?).await {
                Ok(_) => {}
                // Nothing to promote: it already happened (the Secret's token is the primary).
                Err(e) if e.class() == ErrorClass::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            failpoint::hit("token-after-promote");
            ctx.metrics.rotated("TwilioSubaccount", "AuthToken");
            ctx.forget_subaccount_token(sid);
            token.rotated_at = Time(now);
            token.secondary_published_at = None;
            ctx.event(
                &sub.object_ref(&()),
                EventType::Normal,
                "AuthTokenRotated",
                "Rotate",
                format!("Promoted the published auth token of {sid}; the previous one no longer works"),
            )
            .await;
        }
        TokenStep::WaitUntil(_) => {
            if token.secondary_published_at.is_none() && !holds_primary {
                writer.write(primary, now).await?;
            }
        }
    }
    token.next_rotation_at = Some(Time(schedule::after(token.rotated_at.0, every)));
    let next = match plan::token_step(&token, every, grace, now) {
        TokenStep::WaitUntil(t) => t,
        _ => now,
    };
    st.auth_token = Some(token);
    Ok(Some(next))
}

struct SecretWriter<'a> {
    sub: &'a TwilioSubaccount,
    ctx: &'a Context,
    ns: &'a str,
    name: &'a str,
    sid: &'a str,
    /// Whether the existing Secret is ours, so our apply may take its fields back.
    ours: bool,
}

impl SecretWriter<'_> {
    async fn write(&self, token: &SecretString, now: Timestamp) -> Result<(), kube::Error> {
        let empty = Default::default();
        let published = secret::build(&secret::Published {
            name: self.name,
            namespace: self.ns,
            owner: self
                .sub
                .controller_owner_ref(&())
                .expect("a stored object has a name and a UID"),
            labels: &empty,
            annotations: &empty,
            credential_sid: self.sid,
            created_at: now,
            request: None,
            data: vec![
                (ACCOUNT_SID_KEY, self.sid),
                (AUTH_TOKEN_KEY, token.expose_secret()),
            ],
            secret_key: AUTH_TOKEN_KEY,
        });
        let mut params = PatchParams::apply(MANAGER);
        params.force = self.ours;
        Api::<Secret>::namespaced(self.ctx.client.clone(), self.ns)
            .patch(self.name, &params, &Patch::Apply(&published))
            .await?;
        Ok(())
    }
}

/// Deletion: apply deletionPolicy at Twilio and let go, even when that is impossible.
async fn cleanup(sub: &TwilioSubaccount, ctx: &Context) -> Result<Action, Error> {
    let object = sub.object_ref(&());
    ctx.succeeded(&object_id(sub));
    let st = sub.status.clone().unwrap_or_default();
    let wanted = match sub.spec.deletion_policy {
        SubaccountDeletionPolicy::Retain => {
            let kept = st.sid.clone().unwrap_or_else(|| "no subaccount".into());
            ctx.event(
                &object,
                EventType::Normal,
                "Retained",
                "Delete",
                format!("deletionPolicy is Retain: {kept} is left as it is at Twilio"),
            )
            .await;
            return Ok(Action::await_change());
        }
        SubaccountDeletionPolicy::Suspend => AccountStatus::Suspended,
        SubaccountDeletionPolicy::Close => AccountStatus::Closed,
    };
    let ns = sub.namespace().unwrap_or_default();
    let own = target::credentials(ctx, &ns, sub.spec.credentials_ref.as_ref())
        .await
        .ok();
    let candidates: Vec<Credentials> = own.into_iter().chain(ctx.default_credentials.clone()).collect();
    let mut last_error = None;
    for creds in &candidates {
        let sid = match (
            st.sid.clone().or(sub.spec.sid.clone()),
            st.pending_since.is_some(),
        ) {
            (Some(sid), _) => sid,
            (None, true) => {
                let filter = AccountFilter {
                    friendly_name: Some(tagging::tagged_name(
                        &display_name(sub),
                        &sub.uid().unwrap_or_default(),
                    )),
                    status: None,
                };
                match ctx.twilio.list_accounts(creds, &filter).await {
                    Ok(found) => match found.into_iter().find(|a| a.sid != creds.account_sid()) {
                        Some(account) => account.sid,
                        None => return Ok(Action::await_change()),
                    },
                    Err(e) if e.is_retryable() => return Err(e.into()),
                    Err(e) => {
                        last_error = Some(e);
                        continue;
                    }
                }
            }
            (None, false) => return Ok(Action::await_change()),
        };
        let update = AccountUpdate {
            friendly_name: None,
            status: Some(wanted),
        };
        match ctx.twilio.update_account(creds, &sid, &update).await {
            Ok(_) => {
                ctx.event(
                    &object,
                    EventType::Normal,
                    "DeletionPolicyApplied",
                    "Delete",
                    format!("Subaccount {sid} is now {}", wanted.as_str()),
                )
                .await;
                return Ok(Action::await_change());
            }
            // Already closed: nothing more can happen to it.
            Err(e) if e.code() == Some(21479) => return Ok(Action::await_change()),
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => last_error = Some(e),
        }
    }
    let why = last_error.map_or_else(
        || "no credentials can reach the parent account".to_owned(),
        |e| e.to_string(),
    );
    let sid = st.sid.unwrap_or_else(|| "the subaccount".into());
    ctx.event(
        &object,
        EventType::Warning,
        "DeletionPolicyFailed",
        "Delete",
        format!(
            "Could not make {sid} {} at Twilio ({why}); do it in the Twilio Console",
            wanted.as_str()
        ),
    )
    .await;
    Ok(Action::await_change())
}
