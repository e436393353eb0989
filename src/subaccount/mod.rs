//! The TwilioSubaccount reconciler: a driver over steps for one Twilio subaccount. A pass reads
//! validate → resolve → claim → `account` (find or create) → `spend` (read and judge spend) →
//! `account` (bring it to the wanted state) → `spend` (report the budget, keep its triggers)
//! → `voice` (keep the dialing permissions) → `token` (publish the Secret, rotate the auth
//! token) → done. [`plan`] decides, purely;
//! each step hands the next a typed value (`Resolved`, `Account`, `spend::Spend`).
//! What the reconciler remembers (`Remembered`, one record per object) is forgotten with it.
//! ARCHITECTURE.md tells the story, with crash safety and tenancy.

mod account;
pub mod plan;
mod spend;
mod token;
mod voice;

use crate::api::TwilioAccount;
use crate::api::subaccount::{SubaccountUsage, TwilioSubaccount, TwilioSubaccountStatus};
use crate::budget::callbacks::Callbacks;
use crate::conditions::{Problem, Reason};
use crate::context::Context;
use crate::membership::Membership;
use crate::objects::{Memory, object_id};
use crate::quota::Quota;
use crate::reconcile::{Done, Lifecycle, Stop};
use crate::target::{self, Parent, Use};
use crate::twilio::Credentials;
use crate::twilio::types::Account;
use crate::{claims, template, tenancy};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use plan::Settings;
use std::sync::Arc;
use std::time::Instant;

/// The TwilioSubaccount reconciler.
pub struct Subaccounts {
    ctx: Arc<Context>,
    membership: Arc<Membership>,
    callbacks: Arc<Callbacks>,
    /// The scope's subaccounts by TwilioAccount and namespace, for
    /// spec.subaccounts.maxPerNamespace.
    quota: Arc<Quota<TwilioSubaccount>>,
    memory: Memory<Remembered>,
}

/// What this reconciler remembers of one object between passes, so a wake-up or a stale read
/// does not repeat a call this process already made.
#[derive(Default)]
struct Remembered {
    /// The SID whose claim this object was seen holding. Claims live in the operator's
    /// namespace, which tenants cannot write, so a claim seen held stays held until released.
    claimed: Option<String>,
    /// The subaccount as last fetched or updated: while fresh ([`Context::fresh_for`]) and
    /// with the object's [`edits_hash`] unchanged, a pass reads this instead of asking Twilio again.
    fetched: Option<Fetched>,
    /// The last usage read of subaccount `.0`, whatever a (possibly stale) status says, with the
    /// [`edits_hash`] it was read for, so a spec change or an annotation reads it again.
    usage: Option<(String, SubaccountUsage, u64)>,
    /// When a trigger callback last caused a usage read.
    callback_read: Option<Timestamp>,
    /// When this process last confirmed the budget triggers at Twilio.
    triggers_confirmed: Option<Instant>,
    /// Whether the last trigger sync failed (told once, by event).
    triggers_failing: bool,
    /// A generation whose template failed with a new token: it starts no more rotations.
    refused: Option<(Option<i64>, template::Invalid)>,
    /// When the dialing permissions were last read at Twilio, for what spec and policy, and
    /// for which [`edits_hash`].
    dialing_read: Option<(Instant, u64, u64)>,
    /// The permissions last found or made at Twilio: a difference from the same ones later
    /// was made by somebody else.
    dialing_settled: Option<u64>,
}

/// A subaccount as Twilio described it, when, and for which [`edits_hash`] of its object.
struct Fetched {
    at: Instant,
    edits: u64,
    account: Account,
}

/// The object's spec resolved against its TwilioAccount: what the steps act with.
struct Resolved {
    /// The spec, validated; its budget is the one the account imposes when the spec's breaks
    /// the policy.
    settings: Settings,
    /// The credentials the subaccount is reached with.
    parent: Credentials,
    /// The TwilioAccount whose policy applies; `None` for the tenant's own credentialsRef.
    policy: Option<Arc<TwilioAccount>>,
    /// Why the pass ends NotPermitted although the subaccount is kept: its spec's budget or
    /// voice permissions break the policy, and the account's budget or a narrowing of the
    /// permissions is imposed meanwhile.
    imposed: Vec<String>,
}

/// What a recorded subaccount is held to its guardrails with while its spec cannot be used.
#[derive(Clone, Copy)]
struct Guard<'a> {
    sid: &'a str,
    parent: &'a Credentials,
    policy: Option<&'a TwilioAccount>,
}

/// A hash of what a person changes to make the operator look again: the spec (its generation)
/// and the annotations (`kubectl annotate` to force a look at Twilio). Status writes and keys
/// coming and going leave it as it is.
fn edits_hash(sub: &TwilioSubaccount) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hash = DefaultHasher::new();
    (sub.metadata.generation, &sub.metadata.annotations).hash(&mut hash);
    hash.finish()
}

impl Subaccounts {
    /// A reconciler acting through `ctx`, counting keys in `membership`, routing budget trigger
    /// calls through `callbacks`, judging maxPerNamespace with `quota`, remembering nothing yet.
    pub fn new(
        ctx: Arc<Context>,
        membership: Arc<Membership>,
        callbacks: Arc<Callbacks>,
        quota: Arc<Quota<TwilioSubaccount>>,
    ) -> Self {
        Self {
            ctx,
            membership,
            callbacks,
            quota,
            memory: Memory::default(),
        }
    }

    /// The parent's credentials and the TwilioAccount's policy for `sub`, refusing what the
    /// policy does not allow before any Twilio call. A budget breaking the policy refuses a new
    /// subaccount; an existing one is held to the account's budget meanwhile.
    async fn resolve(
        &self,
        sub: &TwilioSubaccount,
        mut settings: Settings,
        st: &TwilioSubaccountStatus,
    ) -> Result<Resolved, Stop> {
        let ns = settings.namespace.clone();
        let refs = (sub.spec.account_ref.as_ref(), sub.spec.credentials_ref.as_ref());
        let Parent { creds, account } = target::parent(&self.ctx, &ns, refs.0, refs.1, Use::Act).await?;
        let mut imposed = Vec::new();
        if let Some(policy) = &account {
            tenancy::check_deletion_policy(policy, sub.spec.deletion_policy)?;
            // A subaccount already made is past admission: the limit never strands its budget.
            let made = st.sid.is_some() || st.pending_since.is_some();
            if let Some(max) = policy.spec.subaccounts.max_per_namespace
                && !made
                && !self.quota.admits(sub, &policy.name_any(), max)
            {
                let field = "spec.subaccounts.maxPerNamespace";
                return Err(tenancy::over_quota(policy, "TwilioSubaccount", field, &ns, max).into());
            }
            if let Some(sid) = &sub.spec.sid {
                tenancy::check_adopt(policy, sid, &ns)?;
            }
            if let Err(refusal) = tenancy::check_budget(policy, sub.spec.budget.as_ref()) {
                match tenancy::imposed_budget(policy, sub.spec.budget.as_ref()) {
                    Some(budget) if st.sid.is_some() => {
                        imposed.push(format!(
                            "{}. Until it does, the subaccount is held to a budget of {} with action {:?}",
                            refusal.message, budget.0.monthly, budget.0.action
                        ));
                        settings.budget = Some(budget);
                    }
                    _ => return Err(refusal.into()),
                }
            }
            if let Err(refusal) = tenancy::check_voice(policy, sub.spec.voice.as_ref()) {
                if st.sid.is_none() {
                    return Err(refusal.into());
                }
                imposed.push(format!(
                    "{}. Until it does, Twilio is held to what the policy allows",
                    refusal.message
                ));
            }
        }
        Ok(Resolved {
            settings,
            parent: creds,
            policy: account,
            imposed,
        })
    }
}

impl Subaccounts {
    /// A spec that cannot be used (a bad template or duration) or that the policy refuses (a
    /// deletionPolicy, say) stops the pass early, but not the guardrails: a recorded subaccount
    /// is still held to its budget and to its dialing permissions, each on its own, so breaking
    /// the spec never lifts either. Best effort: a failure is logged, and the next pass tries
    /// again.
    async fn hold_to_guardrails(
        &self,
        sub: &TwilioSubaccount,
        st: &mut TwilioSubaccountStatus,
        now: Timestamp,
    ) {
        let Some(sid) = st.sid.clone() else {
            return;
        };
        let held: Result<(), Stop> = async {
            let ns = sub.namespace().unwrap_or_default();
            let refs = (sub.spec.account_ref.as_ref(), sub.spec.credentials_ref.as_ref());
            let Parent { creds, account } = target::parent(&self.ctx, &ns, refs.0, refs.1, Use::Act).await?;
            let guard = Guard {
                sid: &sid,
                parent: &creds,
                policy: account.as_deref(),
            };
            let budget = self.hold_to_budget(sub, &guard, st, now).await;
            let dialing = match self.fetch_recorded(sub, &creds, &sid).await {
                Ok(found) => {
                    self.keep_dialing(sub, guard.policy, &found, st, now).await;
                    Ok(())
                }
                Err(stop) => Err(stop),
            };
            budget.and(dialing)
        }
        .await;
        if let Err(stop) = held {
            let why = match stop {
                Stop::Problem(p) => p.message,
                Stop::Kube(e) => e.to_string(),
            };
            tracing::info!(object = %object_id(sub), %why, "could not hold the subaccount to its budget or dialing permissions");
        }
    }
}

impl Lifecycle for Subaccounts {
    type Kind = TwilioSubaccount;
    type Status = TwilioSubaccountStatus;

    fn context(&self) -> &Context {
        &self.ctx
    }

    fn account_name(sub: &TwilioSubaccount) -> Option<&str> {
        let spec = &sub.spec;
        (spec.credentials_ref.is_none()).then(|| {
            spec.account_ref
                .as_ref()
                .map_or(tenancy::DEFAULT_ACCOUNT, |r| r.name.as_str())
        })
    }

    async fn converge(
        &self,
        sub: &TwilioSubaccount,
        st: &mut TwilioSubaccountStatus,
        now: Timestamp,
    ) -> Result<Done, Stop> {
        let settings = match plan::settings(sub) {
            Ok(settings) => settings,
            Err(problem) => {
                self.hold_to_guardrails(sub, st, now).await;
                return Err(problem.into());
            }
        };
        let resolved = match self.resolve(sub, settings, st).await {
            Ok(resolved) => resolved,
            Err(refused) => {
                self.hold_to_guardrails(sub, st, now).await;
                return Err(refused);
            }
        };
        self.claim_known(sub, &resolved, st).await?;
        let keys = self.membership.count(&ObjectRef::from_obj(sub));
        st.api_keys = Some(i32::try_from(keys).unwrap_or(i32::MAX));
        let account = self.ensure_account(sub, &resolved, st, now).await?;
        let spend = self.spend(sub, &resolved, &account.sid, st, now).await?;
        let account = self.enforce(sub, &resolved, account, &spend, st).await?;
        self.settle_budget(sub, &resolved, &account.sid, &spend, st, now)
            .await;
        let dialing_retry = self
            .keep_dialing(sub, resolved.policy.as_deref(), &account, st, now)
            .await;
        let token_deadline = self
            .keep_token(sub, &resolved.settings, st, &account, now)
            .await?;

        let mut message = format!(
            "Subaccount {} is {}",
            account.sid,
            st.twilio_status.as_deref().unwrap_or("unknown")
        );
        if st.budget.as_ref().is_some_and(|b| b.suspended_by_budget) {
            message.push_str(" because its monthly budget is spent");
        }
        if !resolved.imposed.is_empty() {
            let note = resolved.imposed.join("; ");
            return Err(Problem::new(Reason::NotPermitted, note).into());
        }
        Ok(Done {
            message,
            deadline: [token_deadline, dialing_retry, Some(spend.next_read)]
                .into_iter()
                .flatten()
                .min(),
        })
    }

    fn forget(&self, sub: &TwilioSubaccount) {
        let ctx = &self.ctx;
        ctx.metrics
            .forget_subaccount(&sub.namespace().unwrap_or_default(), &sub.name_any());
        if let Some(sid) = sub.status.as_ref().and_then(|st| st.sid.as_ref()) {
            self.callbacks.forget(sid);
            ctx.forget_subaccount_token(sid);
        }
        self.memory.forget(&sub.uid().unwrap_or_default());
    }

    async fn cleanup(&self, sub: &TwilioSubaccount) -> Result<Action, Stop> {
        let st = sub.status.clone().unwrap_or_default();
        self.remove_triggers(sub, &st).await?;
        let done = self.apply_deletion_policy(sub, &st).await?;
        if let Some(sid) = &st.sid {
            claims::release(&self.ctx, sid, &sub.uid().unwrap_or_default()).await?;
        }
        Ok(done)
    }
}
