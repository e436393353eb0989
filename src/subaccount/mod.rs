//! The TwilioSubaccount reconciler: one lifecycle for one Twilio subaccount, its published
//! credentials and its auth token rotation.
//!
//! A pass reads as: validate the spec ([`plan::settings`]) → the parent's credentials and its
//! policy → observe the subaccount at Twilio → [`plan::existence`] → create or record it →
//! spend, judged against the budget ([`crate::budget::judge`]) → [`plan::account_update`] with
//! the budget's suspension → update → report the budget → keep its usage triggers → observe
//! the Secret → [`plan::token_plan`] → publish or rotate → record the outcome in status with
//! the Ready condition.
//!
//! Contract:
//! - create is never duplicated: the intent (`status.pendingSince`) is written before Twilio is
//!   asked, the subaccount is created under a name derived from the object's UID alone, its SID
//!   is recorded at once, and after an interruption the subaccount is found by that name
//!   (Twilio's list filters on exact FriendlyName) instead of being created again; only then is
//!   it renamed as the spec says;
//! - a closed subaccount is never reopened; one suspended outside Kubernetes is brought back to
//!   spec.state with a Warning event;
//! - the auth token rotates through Twilio's secondary token: create, publish, wait gracePeriod,
//!   promote. The Secret always holds a token that works, whatever step a crash interrupts;
//! - usage is read at most every 15 minutes without a budget; with one, as the budget's schedule
//!   says ([`crate::budget`]), when a verified trigger callback asks, and when the spec or the
//!   annotations change; the budget's suspension is the spec's state unless the spec suspends;
//! - budget usage triggers at Twilio are found by name before any is made, so none is made
//!   twice, and are removed with the budget, the webhook URL or the object;
//! - what this reconciler remembers between passes ([`Memory`]) is forgotten with its object.

pub mod plan;

use crate::api::duration;
use crate::api::schedule;
use crate::api::subaccount::{
    BudgetStatus, BudgetTrigger, SubaccountDeletionPolicy, SubaccountState, SubaccountUsage,
    TwilioSubaccount, TwilioSubaccountStatus,
};
use crate::conditions::{self, Problem, Reason};
use crate::context::Context;
use crate::membership::Membership;
use crate::reconcile::{self, Candidates, Done, Lifecycle, Note, Stop, write_status};
use crate::secret::{self, Expect, Observed};
use crate::target::{self, Parent, Use, no_token, token_credentials};
use crate::twilio::types::{Account, AccountFilter, AccountStatus, AccountUpdate};
use crate::twilio::{Credentials, ErrorClass};
use crate::{budget, claims, failpoint, tagging, template, tenancy};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use plan::{ACCOUNT_SID_KEY, AUTH_TOKEN_KEY, Existence, Found, Settings, TokenAction};
use secrecy::{ExposeSecret, SecretString};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How often the budget triggers at Twilio are listed again to confirm they are as recorded
/// (somebody holding the subaccount's token may have deleted or moved them).
const TRIGGER_CONFIRMATION: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// The TwilioSubaccount reconciler.
pub struct Subaccounts {
    ctx: Arc<Context>,
    membership: Arc<Membership>,
    memory: Memory,
}

/// What this reconciler remembers between passes.
#[derive(Default)]
struct Memory {
    /// The UID of the object this process has seen holding each SID's claim. Claims live in the
    /// operator's namespace, which tenants cannot write, so a claim seen held stays held until
    /// its object releases it.
    claimed: Mutex<HashMap<String, String>>,
    /// The subaccount as last fetched or updated, by SID, with when and for which [`touch`] of
    /// its object: while fresh ([`Context::fresh_for`]) and with the spec and annotations
    /// unchanged, a pass (woken by a key joining, a Secret event) reads this instead of asking
    /// Twilio again.
    accounts: Mutex<HashMap<String, Seen>>,
    /// The last usage read, by subaccount SID, whatever a (possibly stale) status says, so a
    /// stale status does not cost a call; with the [`touch`] of the object it was read for, so
    /// a spec change or an annotation (`kubectl annotate` to force a look) reads it again.
    usage: Mutex<HashMap<String, (SubaccountUsage, u64)>>,
    /// Generations whose template failed with a new token: they start no more rotations.
    refusals: template::Refusals,
    /// When a trigger callback last caused a usage read, by subaccount SID.
    callback_reads: Mutex<HashMap<String, Timestamp>>,
    /// When this process last confirmed each object's budget triggers at Twilio, by UID.
    triggers: Mutex<HashMap<String, Instant>>,
    /// UIDs of the objects whose last trigger sync failed (told once, by event).
    trigger_failures: Mutex<HashSet<String>>,
}

/// Spend as a pass knows it.
struct Spend {
    /// What it means for the budget, if there is one.
    judgement: Option<budget::Judgement>,
    /// When it is read again.
    next_read: Timestamp,
}

/// A subaccount as Twilio described it, when, and for which [`touch`] of its object.
struct Seen {
    at: Instant,
    touch: u64,
    account: Account,
}

/// What a person changes to make the operator look again: the spec (its generation) and the
/// annotations (`kubectl annotate` to force a look at Twilio). Status writes and keys coming and
/// going leave it as it is.
fn touch(sub: &TwilioSubaccount) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hash = DefaultHasher::new();
    (sub.metadata.generation, &sub.metadata.annotations).hash(&mut hash);
    hash.finish()
}

impl Subaccounts {
    /// A reconciler acting through `ctx`, counting keys in `membership`, remembering nothing yet.
    pub fn new(ctx: Arc<Context>, membership: Arc<Membership>) -> Self {
        Self {
            ctx,
            membership,
            memory: Memory::default(),
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
        let ctx = &self.ctx;
        let mut settings = match plan::settings(sub) {
            Ok(settings) => settings,
            Err(problem) => {
                if let Err(stop) = self.hold_while_invalid(sub, st, now).await {
                    let why = match stop {
                        Stop::Problem(p) => p.message,
                        Stop::Kube(e) => e.to_string(),
                    };
                    tracing::info!(object = %reconcile::object_id(sub), %why, "could not hold the subaccount to its budget");
                }
                return Err(problem.into());
            }
        };
        let ns = settings.namespace.clone();
        let ns = ns.as_str();
        let mut imposed_note = None;
        let refs = (sub.spec.account_ref.as_ref(), sub.spec.credentials_ref.as_ref());
        let Parent {
            creds: parent,
            account: policy,
        } = target::parent(ctx, ns, refs.0, refs.1, Use::Act).await?;
        if let Some(policy) = &policy {
            tenancy::check_deletion_policy(policy, sub.spec.deletion_policy)?;
            if let Some(sid) = &sub.spec.sid {
                tenancy::check_adopt(policy, sid, ns)?;
            }
            if let Err(refusal) = tenancy::check_budget(policy, sub.spec.budget.as_ref()) {
                // An existing subaccount stays under the account's limit whatever its spec says
                // meanwhile; nothing new is made for a spec that breaks the policy.
                match tenancy::imposed_budget(policy, sub.spec.budget.as_ref()) {
                    Some(imposed) if st.sid.is_some() => {
                        imposed_note = Some(format!(
                            "{}. Until it does, the subaccount is held to a budget of {} with action {:?}",
                            refusal.message, imposed.0.monthly, imposed.0.action
                        ));
                        settings.budget = Some(imposed);
                    }
                    _ => return Err(refusal.into()),
                }
            }
        }
        // The claim comes before any Twilio call about the SID.
        if let Some(sid) = sub.spec.sid.as_deref().or(st.sid.as_deref()) {
            self.claim(sid, sub).await?;
        }
        let keys = self.membership.count(&ObjectRef::from_obj(sub));
        st.api_keys = Some(i32::try_from(keys).unwrap_or(i32::MAX));

        let found = self.observe_account(sub, &settings, &parent, st).await?;
        let account = match plan::existence(found, parent.account_sid())? {
            Existence::Exists(account) => account,
            Existence::Recover(account) => {
                self.claim(&account.sid, sub).await?;
                st.sid = Some(account.sid.clone());
                st.pending_since = None;
                write_status(ctx, sub, st).await?;
                let note = format!(
                    "Found subaccount {} created before an interruption; no second one was made",
                    account.sid
                );
                ctx.event(sub, EventType::Normal, "Recovered", "Create", note)
                    .await;
                account
            }
            Existence::Create => {
                if let Some(policy) = &policy {
                    tenancy::check_create(policy)?;
                }
                let create = ctx.twilio.create_account(&parent, Some(&settings.creation_name));
                let account =
                    reconcile::create_with_intent(ctx, sub, st, now, "subaccount-after-create", create)
                        .await?;
                st.sid = Some(account.sid.clone());
                st.pending_since = None;
                write_status(ctx, sub, st).await?;
                self.claim(&account.sid, sub).await?;
                let note = format!("Created subaccount {}", account.sid);
                ctx.event(sub, EventType::Normal, "Created", "Create", note).await;
                account
            }
        };
        record(st, &account);
        if let Some(token) = &account.auth_token {
            // The usage-trigger endpoint verifies Twilio's calls with it.
            ctx.remember_subaccount_token(&account.sid, token.clone());
        }

        // Kept in status until this pass judges anew: a pass that fails first must not forget
        // which thresholds were announced, the suspension or the triggers.
        let previous = st.budget.clone();
        let spend = self
            .spend(sub, &settings, &parent, &account.sid, st, previous.as_ref(), now)
            .await?;
        let suspends = spend.judgement.as_ref().is_some_and(|j| j.suspend);
        let wanted = if suspends {
            SubaccountState::Suspended
        } else {
            sub.spec.state
        };
        if let Some(update) = plan::account_update(wanted, &settings.display_name, &account)? {
            let updated = ctx.twilio.update_account(&parent, &account.sid, &update).await?;
            record(st, &updated);
            self.saw(&updated, touch(sub));
            if let Some(s) = update.status {
                let was = account.status.unwrap_or(AccountStatus::Unknown).as_str();
                let lifted = previous.as_ref().is_some_and(|b| b.suspended_by_budget);
                let (type_, reason, note) = match s {
                    AccountStatus::Suspended if suspends && sub.spec.state == SubaccountState::Active => (
                        EventType::Warning,
                        "BudgetSuspended",
                        format!(
                            "Suspended subaccount {} at Twilio: its spend reached spec.budget.monthly and spec.budget.action is Suspend",
                            account.sid
                        ),
                    ),
                    AccountStatus::Active if lifted => (
                        EventType::Normal,
                        "BudgetReactivated",
                        format!(
                            "Reactivated subaccount {}: its spend is below spec.budget.monthly again (a new month, or a higher limit)",
                            account.sid
                        ),
                    ),
                    _ => {
                        // The spec did not change since the last pass, so Twilio's side drifted.
                        let (type_, reason) = if st.observed_generation == sub.metadata.generation {
                            (EventType::Warning, "StatusDrift")
                        } else {
                            (EventType::Normal, "StatusChanged")
                        };
                        let note = format!(
                            "Subaccount {} was {was} at Twilio; set to {} as spec.state says",
                            account.sid,
                            s.as_str()
                        );
                        (type_, reason, note)
                    }
                };
                ctx.event(sub, type_, reason, "Update", note).await;
            }
        }
        self.report_budget(sub, &settings, st, &account.sid, &spend, now)
            .await;
        let triggers = self
            .keep_triggers(sub, &settings, &parent, &account.sid, previous.as_ref())
            .await;
        if let Some(budget) = st.budget.as_mut() {
            budget.triggers = triggers;
        }

        let token_deadline = match &settings.secret_name {
            Some(name) => self.publish(sub, &settings, st, &account, name, now).await?,
            None => None,
        };
        let usage_deadline = spend.next_read;
        let mut message = format!(
            "Subaccount {} is {}",
            account.sid,
            st.twilio_status.as_deref().unwrap_or("unknown")
        );
        if st.budget.as_ref().is_some_and(|b| b.suspended_by_budget) {
            message.push_str(" because its monthly budget is spent");
        }
        if let Some(note) = imposed_note {
            return Err(Problem::new(Reason::NotPermitted, note).into());
        }
        Ok(Done {
            message,
            deadline: token_deadline.into_iter().chain(Some(usage_deadline)).min(),
        })
    }

    fn forget(&self, sub: &TwilioSubaccount) {
        let ctx = &self.ctx;
        ctx.metrics
            .forget_subaccount(&sub.namespace().unwrap_or_default(), &sub.name_any());
        if let Some(sid) = sub.status.as_ref().and_then(|st| st.sid.as_ref()) {
            ctx.forget_callbacks(sid);
            self.memory
                .callback_reads
                .lock()
                .expect("callback memory")
                .remove(sid);
            self.memory.usage.lock().expect("usage memory").remove(sid);
            self.memory.accounts.lock().expect("account memory").remove(sid);
            ctx.forget_subaccount_token(sid);
            self.memory.claimed.lock().expect("claim memory").remove(sid);
        }
        let uid = sub.uid().unwrap_or_default();
        self.memory.refusals.forget(&uid);
        self.memory.triggers.lock().expect("trigger memory").remove(&uid);
        self.memory
            .trigger_failures
            .lock()
            .expect("trigger memory")
            .remove(&uid);
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

impl Subaccounts {
    /// Applies deletionPolicy to the subaccount the status recorded (or an interrupted create
    /// made), with credentials of the parent the status recorded, and only as far as the
    /// TwilioAccount still allows: a policy it no longer allows is Retain, with a Warning.
    async fn apply_deletion_policy(
        &self,
        sub: &TwilioSubaccount,
        st: &TwilioSubaccountStatus,
    ) -> Result<Action, Stop> {
        let ctx = &self.ctx;
        let kept = st.sid.as_deref().unwrap_or("no subaccount");
        let wanted = match sub.spec.deletion_policy {
            SubaccountDeletionPolicy::Retain => return Ok(reconcile::retained(ctx, sub, kept).await),
            SubaccountDeletionPolicy::Suspend => AccountStatus::Suspended,
            SubaccountDeletionPolicy::Close => AccountStatus::Closed,
        };
        if st.sid.is_none() && st.pending_since.is_none() {
            // Nothing was ever asked of Twilio for this object.
            return Ok(Action::await_change());
        }
        let ns = sub.namespace().unwrap_or_default();
        let refs = (sub.spec.account_ref.as_ref(), sub.spec.credentials_ref.as_ref());
        let parent = target::parent(ctx, &ns, refs.0, refs.1, Use::Cleanup).await.ok();
        let allowed = match parent.as_ref().map(|p| &p.account) {
            Some(Some(policy)) => tenancy::check_deletion_policy(policy, sub.spec.deletion_policy),
            Some(None) => Ok(()),
            None if sub.spec.credentials_ref.is_some() => Ok(()),
            None => Err(Problem::new(
                Reason::NotPermitted,
                "its TwilioAccount cannot be read, so whether the policy is allowed is unknown",
            )),
        };
        if let Err(refusal) = allowed {
            let note = format!(
                "deletionPolicy {:?} is not applied: {}; {kept} is retained",
                sub.spec.deletion_policy, refusal.message
            );
            ctx.event(
                sub,
                EventType::Warning,
                "DeletionPolicyNotPermitted",
                "Delete",
                note,
            )
            .await;
            return Ok(Action::await_change());
        }
        let candidates = self.candidates(parent.map(|p| p.creds), st);
        let recorded = st.sid.clone();
        // From the UID alone: a spec that no longer validates must not hide an interrupted create.
        let creation_name = Some(tagging::creation_name(&sub.uid().unwrap_or_default()));
        let apply_policy = |creds: Credentials| {
            let (recorded, creation_name) = (recorded.clone(), creation_name.clone());
            async move {
                let sid = match (recorded, creation_name) {
                    (Some(sid), _) => sid,
                    (None, Some(name)) => match self.find_created(&creds, &name).await? {
                        Some(account) => account.sid,
                        None => return Ok(None),
                    },
                    _ => return Ok(None),
                };
                let update = AccountUpdate {
                    friendly_name: None,
                    status: Some(wanted),
                };
                match ctx.twilio.update_account(&creds, &sid, &update).await {
                    Ok(_) => Ok(Some(Note {
                        reason: "DeletionPolicyApplied",
                        text: format!("Subaccount {sid} is now {}", wanted.as_str()),
                    })),
                    // Already closed: nothing more can happen to it.
                    Err(e) if e.code() == Some(21479) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        };
        let failed = |why: &str| Note {
            reason: "DeletionPolicyFailed",
            text: format!(
                "Could not make {kept} {} at Twilio ({why}); do it in the Twilio Console",
                wanted.as_str()
            ),
        };
        let work = format!("Making {kept} {} at Twilio", wanted.as_str());
        reconcile::release(ctx, sub, candidates, &work, apply_policy, failed).await
    }

    /// A spec that cannot be used (a bad template or duration) stops the pass before anything
    /// else, but not the budget: a recorded subaccount is still held to it (its own, or the one
    /// its account imposes) and suspended if its spend says so, so breaking the spec never
    /// lifts the limit. Nothing else is changed, and nothing is reactivated.
    async fn hold_while_invalid(
        &self,
        sub: &TwilioSubaccount,
        st: &mut TwilioSubaccountStatus,
        now: Timestamp,
    ) -> Result<(), Stop> {
        let ctx = &self.ctx;
        let (Some(sid), Ok(mut settings)) = (st.sid.clone(), plan::budget_settings(sub)) else {
            return Ok(());
        };
        let refs = (sub.spec.account_ref.as_ref(), sub.spec.credentials_ref.as_ref());
        let Parent {
            creds: parent,
            account: policy,
        } = target::parent(ctx, &settings.namespace, refs.0, refs.1, Use::Act).await?;
        if let Some(policy) = &policy
            && tenancy::check_budget(policy, sub.spec.budget.as_ref()).is_err()
        {
            settings.budget = tenancy::imposed_budget(policy, sub.spec.budget.as_ref());
        }
        if settings.budget.is_none() {
            return Ok(());
        }
        let previous = st.budget.clone();
        let spend = self
            .spend(sub, &settings, &parent, &sid, st, previous.as_ref(), now)
            .await?;
        if spend.judgement.as_ref().is_some_and(|j| j.suspend) {
            let gone = format!("Subaccount {sid} recorded in status no longer exists at Twilio");
            let account = self.account(&parent, &sid, touch(sub), gone).await?;
            if account.status == Some(AccountStatus::Active) {
                let update = AccountUpdate {
                    friendly_name: None,
                    status: Some(AccountStatus::Suspended),
                };
                let updated = ctx.twilio.update_account(&parent, &sid, &update).await?;
                record(st, &updated);
                self.saw(&updated, touch(sub));
                let note = format!(
                    "Suspended subaccount {sid} at Twilio: its spend reached its budget, which holds although the spec cannot be used"
                );
                ctx.event(sub, EventType::Warning, "BudgetSuspended", "Update", note)
                    .await;
            }
        }
        self.report_budget(sub, &settings, st, &sid, &spend, now).await;
        Ok(())
    }

    /// The credentials a deletion step may use: the object's own (`own`) and the operator's, but
    /// only those of the parent the status recorded, which alone may act on what it recorded.
    fn candidates(&self, own: Option<Credentials>, st: &TwilioSubaccountStatus) -> Candidates {
        let owner = st.owner_account_sid.as_deref();
        let of_owner = |c: &Credentials| owner.is_none_or(|o| o == c.account_sid());
        Candidates {
            own: own.filter(of_owner),
            operator: self.ctx.default_credentials.clone().filter(of_owner),
        }
    }

    /// Deletes the budget's usage triggers at Twilio before the object goes, as keys are
    /// revoked: a passing failure holds the deletion, and when nothing reaches Twilio a Warning
    /// names what was left.
    async fn remove_triggers(&self, sub: &TwilioSubaccount, st: &TwilioSubaccountStatus) -> Result<(), Stop> {
        let ctx = &self.ctx;
        let Some(sid) = st.sid.as_deref() else {
            return Ok(());
        };
        let recorded = st
            .budget
            .as_ref()
            .map(|b| b.triggers.as_slice())
            .unwrap_or_default();
        // Triggers made just before an interruption are not recorded: with a budget and a URL,
        // Twilio is asked (they are found by name) even when status records none.
        let maybe_made = self.ctx.budget_webhook().is_some() && sub.spec.budget.is_some();
        if recorded.is_empty() && !maybe_made {
            return Ok(());
        }
        let ns = sub.namespace().unwrap_or_default();
        let refs = (sub.spec.account_ref.as_ref(), sub.spec.credentials_ref.as_ref());
        let parent = target::parent(ctx, &ns, refs.0, refs.1, Use::Cleanup).await.ok();
        let candidates = self.candidates(parent.map(|p| p.creds), st);
        let uid = sub.uid().unwrap_or_default();
        let sids: Vec<&str> = recorded.iter().map(|t| t.sid.as_str()).collect();
        let work = format!("Removing the budget's usage triggers of {sid}");
        let remove = |creds: Credentials| {
            let uid = uid.clone();
            async move {
                self.sync_triggers(&creds, sid, &uid, &[]).await?;
                Ok(None)
            }
        };
        let failed = |why: &str| Note {
            reason: "BudgetTriggersLeft",
            text: format!(
                "Could not remove the budget's usage triggers of {sid} at Twilio ({why}); delete them in the Twilio Console (recorded: {})",
                if sids.is_empty() {
                    "none".to_owned()
                } else {
                    sids.join(", ")
                }
            ),
        };
        reconcile::release(ctx, sub, candidates, &work, remove, failed).await?;
        Ok(())
    }

    /// Looks for the subaccount at Twilio: the one spec.sid adopts, the one status records, or
    /// the one an interrupted create may have made.
    async fn observe_account(
        &self,
        sub: &TwilioSubaccount,
        settings: &Settings,
        parent: &Credentials,
        st: &TwilioSubaccountStatus,
    ) -> Result<Found, Stop> {
        let touched = touch(sub);
        if let Some(sid) = sub.spec.sid.as_deref() {
            let missing = format!(
                "spec.sid {sid} does not exist at Twilio, or account {} cannot see it: check the SID and spec.credentialsRef",
                parent.account_sid()
            );
            return Ok(Found::Adopted(self.account(parent, sid, touched, missing).await?));
        }
        if let Some(sid) = st.sid.as_deref() {
            let missing = format!(
                "Subaccount {sid} recorded in status no longer exists at Twilio (Twilio deletes closed subaccounts after 30 days)"
            );
            return Ok(Found::Recorded(
                self.account(parent, sid, touched, missing).await?,
            ));
        }
        if st.pending_since.is_some() {
            return Ok(Found::Interrupted(
                self.find_created(parent, &settings.creation_name).await?,
            ));
        }
        Ok(Found::Nothing)
    }

    /// Subaccount `sid`: as this process saw it lately (see [`Self::recent`]), or fetched; a
    /// subaccount Twilio does not have is a `NotFound` problem saying `missing`.
    async fn account(
        &self,
        parent: &Credentials,
        sid: &str,
        touch: u64,
        missing: String,
    ) -> Result<Account, Stop> {
        if let Some(account) = self.recent(sid, touch) {
            return Ok(account);
        }
        let fetched = self.ctx.twilio.fetch_account(parent, sid).await;
        let account = fetched.map_err(|e| match e.class() {
            ErrorClass::NotFound => Problem::new(Reason::NotFound, missing),
            _ => e.into(),
        })?;
        self.saw(&account, touch);
        Ok(account)
    }

    /// Holds the claim on `sid` for `sub`, asking the apiserver only until it has been seen held.
    async fn claim(&self, sid: &str, sub: &TwilioSubaccount) -> Result<(), Stop> {
        let uid = sub.uid().unwrap_or_default();
        let held = self.memory.claimed.lock().expect("claim memory").get(sid) == Some(&uid);
        if !held {
            claims::claim(&self.ctx, sid, sub).await?;
            self.memory
                .claimed
                .lock()
                .expect("claim memory")
                .insert(sid.to_owned(), uid);
        }
        Ok(())
    }

    /// Subaccount `sid` as this process last saw it, if that was within a resync interval and
    /// the object's spec and annotations are as they were then (`touch`).
    fn recent(&self, sid: &str, touch: u64) -> Option<Account> {
        let accounts = self.memory.accounts.lock().expect("account memory");
        let seen = accounts.get(sid)?;
        (seen.at.elapsed() < self.ctx.fresh_for() && seen.touch == touch).then(|| seen.account.clone())
    }

    /// Remembers subaccount `sid` as Twilio just described it, for the object as `touch` says.
    fn saw(&self, account: &Account, touch: u64) {
        let mut accounts = self.memory.accounts.lock().expect("account memory");
        let seen = Seen {
            at: Instant::now(),
            touch,
            account: account.clone(),
        };
        accounts.insert(account.sid.clone(), seen);
    }

    /// The subaccount created under `creation_name`, if an interrupted create made one.
    async fn find_created(
        &self,
        parent: &Credentials,
        creation_name: &str,
    ) -> Result<Option<Account>, crate::twilio::Error> {
        let filter = AccountFilter {
            friendly_name: Some(creation_name.to_owned()),
            status: None,
        };
        let found = self.ctx.twilio.list_accounts(parent, &filter).await?;
        Ok(found.into_iter().find(|a| a.sid != parent.account_sid()))
    }

    /// Month-to-date spend and what it means for the budget: the newest known read, or a new one
    /// when the schedule says so or a verified trigger callback asks; before a budget suspension
    /// is lifted, a read at most a minute old. Returns when to read again.
    #[allow(clippy::too_many_arguments)]
    async fn spend(
        &self,
        sub: &TwilioSubaccount,
        settings: &Settings,
        parent: &Credentials,
        sid: &str,
        st: &mut TwilioSubaccountStatus,
        previous: Option<&BudgetStatus>,
        now: Timestamp,
    ) -> Result<Spend, Stop> {
        let remembered = self.memory.usage.lock().expect("usage memory").get(sid).cloned();
        // With a budget, what a person changes (a new limit, an annotation to force a look) is
        // judged against fresh spend, read at most every few seconds however often it changes.
        let touched = settings.budget.is_some() && remembered.as_ref().is_some_and(|(_, t)| *t != touch(sub));
        let mut usage = plan::newest_usage(st.usage.clone(), remembered.map(|(u, _)| u));
        let triggered = previous.is_some_and(|b| !b.triggers.is_empty());
        let due = usage
            .as_ref()
            .map(|u| plan::next_usage_read(u, settings.budget.as_ref(), rate_of(previous), triggered));
        let called_back = self.ctx.called_back(sid);
        let last_forced = self
            .memory
            .callback_reads
            .lock()
            .expect("callback memory")
            .get(sid)
            .copied();
        let asked = |u: &SubaccountUsage| {
            let callback = budget::asked_read_at(u, called_back, last_forced, budget::CALLBACK_SPACING);
            let look = budget::asked_read_at(
                u,
                touched.then_some(now),
                Some(u.observed_at.0),
                budget::LOOK_SPACING,
            );
            (callback, look)
        };
        let (callback, look) = usage.as_ref().map(asked).unwrap_or_default();
        let earliest = callback.into_iter().chain(look).min();
        if budget::read_due(usage.as_ref(), due, earliest, now) {
            if callback.is_some_and(|at| now >= at) {
                self.memory
                    .callback_reads
                    .lock()
                    .expect("callback memory")
                    .insert(sid.to_owned(), now);
            }
            usage = Some(self.read_usage(sub, parent, sid, now).await?);
        }
        let judge = |usage: &SubaccountUsage| {
            settings
                .budget
                .as_ref()
                .map(|(b, monthly)| budget::judge(b, *monthly, usage, previous, sub.spec.state))
                .transpose()
        };
        let read = usage.expect("read when none was known");
        let mut judgement = judge(&read)?;
        let lifting =
            previous.is_some_and(|b| b.suspended_by_budget) && judgement.as_ref().is_some_and(|j| !j.suspend);
        let read = if lifting && now >= schedule::after(read.observed_at.0, budget::FRESH_BEFORE_LIFTING) {
            let fresh = self.read_usage(sub, parent, sid, now).await?;
            judgement = judge(&fresh)?;
            fresh
        } else {
            read
        };
        let rate = judgement.as_ref().and_then(|j| j.status.rate_per_hour.as_deref());
        let scheduled = plan::next_usage_read(&read, settings.budget.as_ref(), rate, triggered);
        // A read asked for that this pass could not make yet is made as soon as it may.
        let (callback, look) = asked(&read);
        let next_read = callback
            .into_iter()
            .chain(look)
            .chain([scheduled])
            .min()
            .unwrap_or(scheduled);
        st.usage = Some(read);
        Ok(Spend { judgement, next_read })
    }

    /// Reads month-to-date spend from Twilio, and remembers it.
    async fn read_usage(
        &self,
        sub: &TwilioSubaccount,
        parent: &Credentials,
        sid: &str,
        now: Timestamp,
    ) -> Result<SubaccountUsage, Stop> {
        let records = self
            .ctx
            .twilio
            .usage_this_month(parent, sid, "totalprice")
            .await?;
        let total = records.into_iter().next();
        let usage = SubaccountUsage {
            month_to_date: total
                .as_ref()
                .and_then(|r| r.price.clone())
                .unwrap_or_else(|| "0".into()),
            currency: total
                .as_ref()
                .and_then(|r| r.price_unit.clone())
                .unwrap_or_else(|| "usd".into()),
            observed_at: Time(now),
            period: Some(budget::period(
                total.as_ref().and_then(|r| r.start_date.as_deref()),
                now,
            )),
        };
        self.memory
            .usage
            .lock()
            .expect("usage memory")
            .insert(sid.to_owned(), (usage.clone(), touch(sub)));
        if let Ok(amount) = usage.month_to_date.parse::<f64>() {
            self.ctx.metrics.usage(
                &sub.namespace().unwrap_or_default(),
                &sub.name_any(),
                &usage.currency,
                amount,
            );
        }
        Ok(usage)
    }

    /// Records the budget's judgement in status, the Budget condition and the metric, and
    /// announces each threshold newly reached.
    async fn report_budget(
        &self,
        sub: &TwilioSubaccount,
        settings: &Settings,
        st: &mut TwilioSubaccountStatus,
        sid: &str,
        spend: &Spend,
        now: Timestamp,
    ) {
        let (ns, name) = (settings.namespace.as_str(), settings.name.as_str());
        let (Some(judgement), Some((spec, monthly))) = (&spend.judgement, settings.budget.as_ref()) else {
            st.budget = None;
            st.conditions.retain(|c| c.type_ != budget::CONDITION);
            self.ctx.metrics.budget_ratio(ns, name, None);
            return;
        };
        let mut status = judgement.status.clone();
        status.next_read_at = Some(Time(spend.next_read));
        for percent in &judgement.announce {
            let (reason, note) = budget::announcement(*percent, &status, spec, sid);
            self.ctx
                .event(sub, EventType::Warning, reason, "Budget", note)
                .await;
        }
        let (state, reason, message) = budget::condition(&status, spec);
        conditions::set(
            &mut st.conditions,
            budget::CONDITION,
            state,
            reason,
            message,
            sub.metadata.generation,
            now,
        );
        self.ctx
            .metrics
            .budget_ratio(ns, name, Some(budget::ratio(&status, *monthly)));
        st.budget = Some(status);
    }

    /// Keeps one usage trigger per budget threshold at Twilio, calling the operator's endpoint,
    /// when the operator has a public webhook URL; removes them when the budget or the URL goes.
    /// Twilio is asked only when the triggers recorded in status differ from those wanted, or
    /// every [`TRIGGER_CONFIRMATION`] to confirm them. Best effort: a failure keeps what status
    /// recorded, is told once in a Warning event, and is tried again at the next pass; the
    /// Secret and the rotation go on. Returns the triggers as they now are.
    async fn keep_triggers(
        &self,
        sub: &TwilioSubaccount,
        settings: &Settings,
        parent: &Credentials,
        sid: &str,
        previous: Option<&BudgetStatus>,
    ) -> Vec<BudgetTrigger> {
        let uid = sub.uid().unwrap_or_default();
        let (ns, name) = (settings.namespace.as_str(), settings.name.as_str());
        let url = self.ctx.budget_callback_url(ns, name);
        let wanted = budget::wanted_triggers(
            settings.budget.as_ref().map(|(b, m)| (b, *m)),
            &uid,
            url.as_deref(),
        );
        let recorded = previous.map(|p| p.triggers.as_slice()).unwrap_or_default();
        let confirmed = self
            .memory
            .triggers
            .lock()
            .expect("trigger memory")
            .get(&uid)
            .is_some_and(|at| at.elapsed() < TRIGGER_CONFIRMATION);
        let settled = recorded.is_empty() && wanted.is_empty()
            || confirmed && budget::recorded_as_wanted(recorded, &wanted);
        let kept = if settled {
            Ok(recorded.to_vec())
        } else {
            self.sync_triggers(parent, sid, &uid, &wanted).await
        };
        let triggers = match kept {
            Ok(triggers) => triggers,
            Err(e) => {
                let first = self
                    .memory
                    .trigger_failures
                    .lock()
                    .expect("trigger memory")
                    .insert(uid.clone());
                if first {
                    let note = format!(
                        "Could not set the budget's usage triggers at Twilio ({e}); spend is still read on schedule, and the triggers are tried again"
                    );
                    self.ctx
                        .event(sub, EventType::Warning, "BudgetTriggersFailed", "Budget", note)
                        .await;
                }
                return recorded.to_vec();
            }
        };
        self.memory
            .trigger_failures
            .lock()
            .expect("trigger memory")
            .remove(&uid);
        if !settled {
            self.memory
                .triggers
                .lock()
                .expect("trigger memory")
                .insert(uid, Instant::now());
        }
        self.ctx
            .budget_object(sid, (!triggers.is_empty()).then_some((ns, name)));
        if !settled && !wanted.is_empty() && !budget::recorded_as_wanted(recorded, &wanted) {
            let note = format!(
                "Usage triggers at Twilio call the operator at {} of spec.budget.monthly",
                wanted
                    .iter()
                    .map(|w| format!("{}%", w.percent))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.ctx
                .event(sub, EventType::Normal, "BudgetTriggersSet", "Budget", note)
                .await;
        }
        triggers
    }

    /// Makes the usage triggers of the object with `uid` on subaccount `sid` those `wanted`,
    /// from what Twilio lists: found by name, so none is ever made twice.
    async fn sync_triggers(
        &self,
        parent: &Credentials,
        sid: &str,
        uid: &str,
        wanted: &[budget::Wanted],
    ) -> Result<Vec<BudgetTrigger>, crate::twilio::Error> {
        let twilio = &self.ctx.twilio;
        let existing = twilio.list_usage_triggers(parent, sid).await?;
        let plan = budget::trigger_plan(uid, wanted, &existing);
        for trigger in &plan.delete {
            match twilio.delete_usage_trigger(parent, sid, trigger).await {
                Err(e) if e.class() != ErrorClass::NotFound => return Err(e),
                _ => {}
            }
        }
        let mut kept = plan.keep;
        for (trigger, want) in &plan.repoint {
            twilio
                .update_usage_trigger(parent, sid, trigger, &want.callback_url)
                .await?;
            kept.push(budget::record(trigger, want));
        }
        for want in &plan.create {
            let made = twilio.create_usage_trigger(parent, sid, &want.request()).await?;
            kept.push(budget::record(&made.sid, want));
        }
        kept.sort_by_key(|t| t.percent);
        Ok(kept)
    }

    /// Keeps Secret `name` holding a working token of the subaccount, rotating it when asked
    /// to. Returns when the rotation needs attention next.
    async fn publish(
        &self,
        sub: &TwilioSubaccount,
        settings: &Settings,
        st: &mut TwilioSubaccountStatus,
        account: &Account,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, Stop> {
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
        let primary_digest = secret::digest(primary.expose_secret());
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
                if let Some(why) = self.memory.refusals.get(&uid, generation) {
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
                            self.memory.refusals.note(&uid, generation, &why);
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
                // Its primary token changed: what this process last saw of it is out of date.
                self.memory.accounts.lock().expect("account memory").remove(sid);
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

/// The spend rate the last pass recorded.
fn rate_of(budget: Option<&BudgetStatus>) -> Option<&str> {
    budget.and_then(|b| b.rate_per_hour.as_deref())
}

/// Copies what Twilio says of the account into the status.
fn record(st: &mut TwilioSubaccountStatus, account: &Account) {
    st.sid = Some(account.sid.clone());
    st.owner_account_sid = account.owner_account_sid.clone();
    st.friendly_name = account.friendly_name.clone();
    st.twilio_status = account.status.map(|s| s.as_str().to_owned());
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
