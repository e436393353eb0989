//! Which Twilio account an object acts on, and the credentials to act with: its own
//! (`spec.credentialsRef`, a Secret in its namespace, read directly and never cached), or a
//! TwilioAccount's (`spec.accountRef`, or the one named `default`), used only from a namespace it
//! admits. A tenant's own credentials count only once they have authenticated at Twilio, and
//! only for the account they authenticate as. The operator's environment is reached only through a TwilioAccount with
//! `credentials.fromEnvironment`. A key with `subaccountRef` acts with that subaccount's own auth
//! token, and waits until the subaccount is ready. What is missing is a `CredentialsMissing`
//! problem saying how to fix it.

use crate::api::account::AccountCredentials;
use crate::api::{AccountRef, LocalRef, TwilioAccount, TwilioSubaccount};
use crate::conditions::{self, Problem, Reason};
use crate::context::Context;
use crate::tenancy;
use crate::twilio::Credentials;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use secrecy::SecretString;
use std::sync::Arc;

/// The account to act on and the credentials to act with.
#[derive(Debug, Clone)]
pub struct Target {
    /// The account to act on.
    pub account_sid: String,
    /// The credentials to act with.
    pub creds: Credentials,
}

/// The account an object's references lead to.
#[derive(Debug, Clone)]
pub struct Parent {
    /// The credentials to act with.
    pub creds: Credentials,
    /// The TwilioAccount whose policy applies; `None` for the tenant's own credentialsRef.
    pub account: Option<Arc<TwilioAccount>>,
}

/// What the credentials are wanted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Acting for a live object: the TwilioAccount must admit its namespace.
    Act,
    /// Undoing what a deleted object recorded: the account's credentials are used even if it no
    /// longer admits the namespace, since status (which only the operator writes) says what to undo.
    Cleanup,
}

/// The account an object with these references acts in, checked against the account's
/// namespace policy when `purpose` is [`Use::Act`].
pub async fn parent(
    ctx: &Context,
    namespace: &str,
    account_ref: Option<&AccountRef>,
    credentials_ref: Option<&LocalRef>,
    purpose: Use,
) -> Result<Parent, Problem> {
    if let Some(reference) = credentials_ref {
        let creds = own_credentials(ctx, namespace, reference).await?;
        if purpose == Use::Act {
            prove(ctx, &creds).await?;
        }
        return Ok(Parent { creds, account: None });
    }
    let name = account_ref.map_or(tenancy::DEFAULT_ACCOUNT, |r| r.name.as_str());
    let account = ctx.cluster.accounts.get(&ObjectRef::new(name)).ok_or_else(|| {
        Problem::new(
            Reason::CredentialsMissing,
            format!(
                "No TwilioAccount named {name}: a cluster admin creates one that admits this namespace (see the README, Multi-tenancy), or set spec.credentialsRef to a Secret with your own Twilio credentials"
            ),
        )
    })?;
    if purpose == Use::Act {
        tenancy::check_namespace(&account, namespace, &ctx.namespace_labels(namespace))?;
    }
    Ok(Parent {
        creds: account_credentials(ctx, &account).await?,
        account: Some(account),
    })
}

/// The credentials a TwilioAccount names.
pub async fn account_credentials(ctx: &Context, account: &TwilioAccount) -> Result<Credentials, Problem> {
    let name = account.metadata.name.as_deref().unwrap_or_default();
    match &account.spec.credentials {
        AccountCredentials { secret_ref: Some(secret), .. } => {
            let what = format!("Secret {}/{} named in TwilioAccount {name}", secret.namespace, secret.name);
            read_credentials(ctx, &secret.namespace, &secret.name, &what).await
        }
        _ => ctx.default_credentials.clone().ok_or_else(|| {
            Problem::new(
                Reason::CredentialsMissing,
                format!(
                    "TwilioAccount {name} uses the operator's environment, which has no Twilio credentials (TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or with TWILIO_API_KEY and TWILIO_API_SECRET)"
                ),
            )
        }),
    }
}

/// Makes a tenant's credentials authenticate as the account they name before they count for
/// anything: until they have, no claim is taken, no intent written, no cache keyed by that
/// account. A proof holds for [`Context::fresh_for`], so a pass costs no extra call.
async fn prove(ctx: &Context, creds: &Credentials) -> Result<(), Problem> {
    if ctx.is_proven(creds) {
        return Ok(());
    }
    ctx.twilio.fetch_account(creds, creds.account_sid()).await?;
    ctx.proved(creds);
    Ok(())
}

/// The credentials in the Secret spec.credentialsRef names, in the object's own namespace.
async fn own_credentials(
    ctx: &Context,
    namespace: &str,
    reference: &LocalRef,
) -> Result<Credentials, Problem> {
    let what = format!("Secret {} named in spec.credentialsRef", reference.name);
    read_credentials(ctx, namespace, &reference.name, &what).await
}

/// Reads credentials from Secret `namespace/name`, described to people as `what`.
async fn read_credentials(
    ctx: &Context,
    namespace: &str,
    name: &str,
    what: &str,
) -> Result<Credentials, Problem> {
    let missing = |detail: String| Problem::new(Reason::CredentialsMissing, detail);
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| missing(format!("Could not read {what}: {e}")))?
        .ok_or_else(|| missing(format!("{what} does not exist")))?;
    let data = secret.data.unwrap_or_default();
    Credentials::from_lookup(|key| data.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok()))
        .map_err(|e| missing(format!("{what} is not usable: {e}")))
}

/// The target of a key that lives in the TwilioSubaccount `name` of its namespace, `sub` as the
/// shared cache holds it (`None`: there is no such object).
pub async fn subaccount(
    ctx: &Context,
    sub: Option<Arc<TwilioSubaccount>>,
    namespace: &str,
    name: &str,
    purpose: Use,
) -> Result<Target, Problem> {
    let sub = sub.ok_or_else(|| {
        Problem::new(
            Reason::SubaccountNotReady,
            format!("TwilioSubaccount {name} named in spec.subaccountRef does not exist in this namespace"),
        )
    })?;
    let status = sub.status.clone().unwrap_or_default();
    match status.twilio_status.as_deref() {
        Some("closed") => {
            return Err(Problem::new(
                Reason::SubaccountClosed,
                format!("TwilioSubaccount {name} is closed at Twilio; keys cannot live in it"),
            ));
        }
        Some("suspended") => {
            let by_budget = status.budget.as_ref().is_some_and(|b| b.suspended_by_budget);
            let remedy = if by_budget {
                " because its monthly budget is spent: raise its spec.budget.monthly above the spend, or wait for the next month"
            } else {
                "; set its spec.state to Active"
            };
            return Err(Problem::new(
                Reason::SubaccountSuspended,
                format!("TwilioSubaccount {name} is suspended at Twilio{remedy}"),
            ));
        }
        _ => {}
    }
    let sid = status
        .sid
        .clone()
        .filter(|_| conditions::is_ready(&status.conditions));
    let Some(sid) = sid else {
        return Err(Problem::new(
            Reason::SubaccountNotReady,
            format!("Waiting for TwilioSubaccount {name} to be Ready"),
        ));
    };
    let token = match ctx.subaccount_token(&sid) {
        Some(token) => token,
        None => {
            let refs = (sub.spec.account_ref.as_ref(), sub.spec.credentials_ref.as_ref());
            let parent = parent(ctx, namespace, refs.0, refs.1, purpose).await?;
            let account = ctx.twilio.fetch_account(&parent.creds, &sid).await?;
            let token = account.auth_token.ok_or_else(|| no_token(&sid))?;
            ctx.remember_subaccount_token(&sid, token.clone());
            token
        }
    };
    Ok(Target {
        creds: token_credentials(&sid, token)?,
        account_sid: sid,
    })
}

/// The credentials of account `sid` with its auth token `token`.
pub fn token_credentials(sid: &str, token: SecretString) -> Result<Credentials, Problem> {
    Credentials::with_auth_token(sid, token).map_err(|e| Problem::new(Reason::TwilioError, e.to_string()))
}

/// The problem of a subaccount fetched without its auth token.
pub fn no_token(sid: &str) -> Problem {
    Problem::new(
        Reason::TwilioError,
        format!("Twilio returned no auth token for subaccount {sid}"),
    )
}
