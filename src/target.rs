//! Which Twilio account an object acts on, and the credentials to act with.
//!
//! Contract:
//! - credentials come from `spec.credentialsRef` (a Secret in the object's own namespace, read
//!   directly and never cached) or, without one, from the operator's environment; a missing or
//!   malformed Secret is a `CredentialsMissing` problem naming the Secret and the key at fault;
//! - a key with `subaccountRef` acts as that subaccount, with the subaccount's own auth token
//!   (read once with the parent's credentials, then cached), and waits with
//!   `SubaccountNotReady`, `SubaccountSuspended` or `SubaccountClosed` until it can.

use crate::api::{LocalRef, TwilioSubaccount};
use crate::conditions::{self, Problem, Reason};
use crate::context::Context;
use crate::twilio::Credentials;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use secrecy::SecretString;

/// The account to act on and the credentials to act with.
#[derive(Debug, Clone)]
pub struct Target {
    /// The account to act on.
    pub account_sid: String,
    /// The credentials to act with.
    pub creds: Credentials,
}

/// The credentials an object names, or the operator's own.
pub async fn credentials(
    ctx: &Context,
    namespace: &str,
    reference: Option<&LocalRef>,
) -> Result<Credentials, Problem> {
    let Some(reference) = reference else {
        return ctx.default_credentials.clone().ok_or_else(|| {
            Problem::new(
                Reason::CredentialsMissing,
                "The operator has no Twilio credentials of its own (TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or with TWILIO_API_KEY and TWILIO_API_SECRET): set them, or name a Secret in spec.credentialsRef",
            )
        });
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&reference.name)
        .await
        .map_err(|e| {
            Problem::new(
                Reason::CredentialsMissing,
                format!("Could not read Secret {}: {e}", reference.name),
            )
        })?
        .ok_or_else(|| {
            Problem::new(
                Reason::CredentialsMissing,
                format!(
                    "Secret {} named in spec.credentialsRef does not exist in this namespace",
                    reference.name
                ),
            )
        })?;
    let data = secret.data.unwrap_or_default();
    Credentials::from_lookup(|key| data.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())).map_err(
        |e| {
            Problem::new(
                Reason::CredentialsMissing,
                format!(
                    "Secret {} named in spec.credentialsRef is not usable: {e}",
                    reference.name
                ),
            )
        },
    )
}

/// The target of a key that lives in a TwilioSubaccount.
pub async fn subaccount(ctx: &Context, namespace: &str, name: &str) -> Result<Target, Problem> {
    let sub = Api::<TwilioSubaccount>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| {
            Problem::new(
                Reason::SubaccountNotReady,
                format!("Could not read TwilioSubaccount {name}: {e}"),
            )
        })?
        .ok_or_else(|| {
            Problem::new(
                Reason::SubaccountNotReady,
                format!(
                    "TwilioSubaccount {name} named in spec.subaccountRef does not exist in this namespace"
                ),
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
            return Err(Problem::new(
                Reason::SubaccountSuspended,
                format!("TwilioSubaccount {name} is suspended at Twilio; set its spec.state to Active"),
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
            let parent = credentials(ctx, namespace, sub.spec.credentials_ref.as_ref()).await?;
            let account = ctx.twilio.fetch_account(&parent, &sid).await?;
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
