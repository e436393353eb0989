//! The subaccount's published credentials and its auth-token rotation, through Twilio's
//! secondary token: create it, publish it, wait gracePeriod, promote it. The Secret always
//! holds a token that works, whatever step a crash interrupts: [`plan::token_plan`] recovers
//! the rotation from what the Secret holds.

use super::Subaccounts;
use super::plan::{self, ACCOUNT_SID_KEY, AUTH_TOKEN_KEY, Settings, TokenAction};
use crate::api::duration;
use crate::api::subaccount::{TwilioSubaccount, TwilioSubaccountStatus};
use crate::conditions::{Problem, Reason};
use crate::context::Context;
use crate::reconcile::{self, Stop};
use crate::secret::{self, Expect, Observed};
use crate::target::{no_token, token_credentials};
use crate::twilio::ErrorClass;
use crate::twilio::types::Account;
use crate::{failpoint, fingerprint, template};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};

impl Subaccounts {
    /// Keeps the Secret the spec names holding a working token of the subaccount, rotating the
    /// token when asked to. Returns when the rotation needs attention next.
    pub(super) async fn keep_token(
        &self,
        sub: &TwilioSubaccount,
        settings: &Settings,
        st: &mut TwilioSubaccountStatus,
        account: &Account,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, Stop> {
        let Some(name) = settings.secret_name.as_deref() else {
            return Ok(None);
        };
        let ctx = &self.ctx;
        let sid = account.sid.as_str();
        let primary = account.auth_token.as_ref().ok_or_else(|| no_token(sid))?;
        // Observe: the Secret, and whether the token it holds is the primary.
        let uid = sub.uid().unwrap_or_default();
        let found = Api::<Secret>::namespaced(ctx.client.clone(), &settings.namespace)
            .get_opt(name)
            .await?;
        let expected = [
            (ACCOUNT_SID_KEY, Expect::Equals(sid)),
            (AUTH_TOKEN_KEY, Expect::Secret),
        ];
        let observed = secret::observe(found.as_ref(), &uid, settings.shape(&expected));
        let record = match &observed {
            Observed::Conflict => return Err(Problem::secret_conflict(name, "TwilioSubaccount").into()),
            Observed::Ours(r) if r.intact => Some(r.clone()),
            _ => None,
        };
        let primary_digest = fingerprint::digest(primary.expose_secret());
        let holds_primary = record
            .as_ref()
            .is_some_and(|r| r.digest.as_deref() == Some(primary_digest.as_str()));
        let rotates = settings.token_rotation.is_some();
        let mut held_secondary = None;
        if plan::probe_held_token(rotates, st.auth_token.as_ref(), holds_primary, record.is_some()) {
            let held = found
                .as_ref()
                .and_then(|s| s.data.as_ref()?.get(AUTH_TOKEN_KEY))
                .map(|v| SecretString::from(String::from_utf8_lossy(&v.0).into_owned()));
            if let Some(held) = held {
                match ctx
                    .twilio
                    .fetch_account(&token_credentials(sid, held)?, sid)
                    .await
                {
                    Ok(_) => held_secondary = record.as_ref().map(|r| r.created_at.unwrap_or(now)),
                    // Only Twilio refusing the token says it is no secondary: a passing error is
                    // retried, never taken as an answer that would restart the rotation.
                    Err(e) if e.is_retryable() => return Err(e.into()),
                    Err(_) => {}
                }
            }
        }

        let token_plan = plan::token_plan(
            settings.token_rotation,
            st.auth_token.as_ref(),
            (holds_primary, record.is_some()),
            held_secondary,
            now,
        );
        let writer = SecretWriter {
            sub,
            ctx,
            settings,
            name,
            sid,
            ours: matches!(observed, Observed::Ours(_)),
        };
        match token_plan.action {
            TokenAction::Keep => {}
            TokenAction::WritePrimary => writer.write(primary, now).await?,
            TokenAction::Start => {
                let generation = sub.metadata.generation;
                let refused = self
                    .memory
                    .recall(&uid, |r| r.refused.clone().filter(|(g, _)| *g == generation));
                if let Some((_, why)) = refused {
                    return Err(Problem::from(why).into());
                }
                let creds = token_credentials(sid, primary.clone())?;
                let secondary = match ctx.twilio.create_secondary_auth_token(&creds).await {
                    Err(e) if e.code() == Some(70002) => {
                        // A secondary left by an interruption: its value is unknown, so start over.
                        ctx.twilio.delete_secondary_auth_token(&creds).await?;
                        ctx.twilio.create_secondary_auth_token(&creds).await?
                    }
                    other => other?,
                };
                failpoint::hit("token-after-create-secondary");
                writer
                    .write(&secondary.secondary_auth_token, now)
                    .await
                    .inspect_err(|stop| {
                        // A template failing only with the new token: this generation tries no
                        // more secondaries (each would be made and deleted again).
                        if let Stop::Problem(p) = stop
                            && p.reason == Reason::TemplateInvalid
                        {
                            let why = template::Invalid(p.message.clone());
                            self.memory.note(&uid, |r| r.refused = Some((generation, why)));
                        }
                    })?;
                failpoint::hit("token-after-secret");
                let grace = settings
                    .token_rotation
                    .map(|(_, grace)| duration::format(grace))
                    .unwrap_or_default();
                let note =
                    format!("Published a new auth token for {sid}; it becomes the only valid one in {grace}");
                ctx.event(sub, EventType::Normal, "AuthTokenRotationStarted", "Rotate", note)
                    .await;
            }
            TokenAction::Promote => {
                match ctx
                    .twilio
                    .promote_secondary_auth_token(&token_credentials(sid, primary.clone())?)
                    .await
                {
                    Ok(_) => {}
                    // Nothing to promote: it already happened (the Secret's token is the primary).
                    Err(e) if e.class() == ErrorClass::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                failpoint::hit("token-after-promote");
                ctx.metrics.rotated("TwilioSubaccount", "AuthToken");
                ctx.forget_subaccount_token(sid);
                // Its primary token changed: what this process last fetched of it is out of date.
                self.memory.note(&uid, |r| r.fetched = None);
                let note =
                    format!("Promoted the published auth token of {sid}; the previous one no longer works");
                ctx.event(sub, EventType::Normal, "AuthTokenRotated", "Rotate", note)
                    .await;
            }
        }
        let (Some(record), Some(rotation)) = (token_plan.record, settings.token_rotation) else {
            st.auth_token = None;
            return Ok(None);
        };
        let (token, next) = plan::token_stepped(record, token_plan.action, rotation, now);
        st.auth_token = Some(token);
        Ok(Some(next))
    }
}

/// Writes the subaccount's Secret with a given token.
struct SecretWriter<'a> {
    sub: &'a TwilioSubaccount,
    ctx: &'a Context,
    settings: &'a Settings,
    name: &'a str,
    sid: &'a str,
    /// Whether the existing Secret is ours, so our apply may take its fields back.
    ours: bool,
}

impl SecretWriter<'_> {
    async fn write(&self, token: &SecretString, now: Timestamp) -> Result<(), Stop> {
        let empty = Default::default();
        let data = self
            .settings
            .data(self.sid, token.expose_secret(), &template::created_at(now))
            .map_err(Problem::from)?;
        let published = secret::build(&secret::Published {
            name: self.name,
            namespace: &self.settings.namespace,
            owner: self
                .sub
                .controller_owner_ref(&())
                .expect("a stored object has a name and a UID"),
            labels: &empty,
            annotations: &empty,
            credential_sid: self.sid,
            created_at: now,
            request: None,
            type_: &self.settings.secret_type,
            data: data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            secret_value: token.expose_secret(),
            template_digest: self.settings.template.as_ref().map(|t| t.digest().to_owned()),
            // Only a key's Secret is trusted to have passed before (see secret::GENERATION_ANNOTATION).
            generation: None,
        });
        reconcile::write_secret(self.ctx, &published, self.ours, false)
            .await
            .map(drop)
    }
}
