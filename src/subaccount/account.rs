//! The subaccount's own lifecycle at Twilio: claim its SID, find it or create it, bring it to
//! the wanted state and name, and apply the deletion policy.
//!
//! A create is never duplicated: the intent (`status.pendingSince`) is written first, the
//! subaccount is created under a name derived from the object's UID alone and recorded at once,
//! and an interrupted create is found by that name. A closed subaccount is never reopened; one
//! changed outside Kubernetes is brought back with a Warning event.

use super::plan::{self, Existence, Found};
use super::spend::Spend;
use super::{Fetched, Resolved, Subaccounts, edits_hash};
use crate::api::subaccount::{SubaccountDeletionPolicy, TwilioSubaccount, TwilioSubaccountStatus};
use crate::conditions::{LifecycleStatus, Problem, Reason};
use crate::reconcile::{self, Candidates, Note, Stop, write_status};
use crate::target::{self, Use};
use crate::twilio::types::{Account, AccountFilter, AccountStatus, AccountUpdate};
use crate::twilio::{Credentials, ErrorClass};
use crate::{claims, tagging, tenancy};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::time::Instant;

impl Subaccounts {
    /// Holds the claim on the SID the status records or the TwilioAccount grants for adoption:
    /// it comes before any Twilio call about that SID. A SID only the object's own credentials
    /// vouch for is claimed once they have reached it ([`Subaccounts::ensure_account`]), so
    /// credentials that do not authenticate, or cannot see it, take no claim.
    pub(super) async fn claim_known(
        &self,
        sub: &TwilioSubaccount,
        resolved: &Resolved,
        st: &TwilioSubaccountStatus,
    ) -> Result<(), Stop> {
        let granted = sub.spec.sid.as_deref().filter(|_| resolved.policy.is_some());
        match granted.or(st.sid.as_deref()) {
            Some(sid) => self.claim(sid, sub).await,
            None => Ok(()),
        }
    }

    /// The subaccount at Twilio, found or created, recorded in `st`.
    pub(super) async fn ensure_account(
        &self,
        sub: &TwilioSubaccount,
        resolved: &Resolved,
        st: &mut TwilioSubaccountStatus,
        now: Timestamp,
    ) -> Result<Account, Stop> {
        let ctx = &self.ctx;
        let parent = &resolved.parent;
        let found = self.observe(sub, resolved, st).await?;
        let account = match plan::existence(found, parent.account_sid())? {
            Existence::Exists(account) => {
                self.claim(&account.sid, sub).await?;
                account
            }
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
                if let Some(policy) = &resolved.policy {
                    tenancy::check_create(policy)?;
                }
                let name = &resolved.settings.creation_name;
                // The intent names the parent, so only that parent's subaccounts can be found
                // under the creation name later.
                st.owner_account_sid = Some(parent.account_sid().to_owned());
                let create = ctx.twilio.create_account(parent, Some(name));
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
        copy_to_status(st, &account);
        if let Some(token) = &account.auth_token {
            // The usage-trigger endpoint verifies Twilio's calls with it.
            ctx.remember_subaccount_token(&account.sid, token.clone());
        }
        Ok(account)
    }

    /// Brings the subaccount to the state the spend step wants and the spec's name, announcing
    /// a change of state with its cause.
    pub(super) async fn enforce(
        &self,
        sub: &TwilioSubaccount,
        resolved: &Resolved,
        account: Account,
        spend: &Spend,
        st: &mut TwilioSubaccountStatus,
    ) -> Result<Account, Stop> {
        let name = &resolved.settings.display_name;
        let Some(update) = plan::account_update(spend.wanted, name, &account)? else {
            return Ok(account);
        };
        let updated = self
            .update(sub, &resolved.parent, &account.sid, &update, st)
            .await?;
        if let Some(status) = update.status {
            let change = plan::StatusChange {
                sid: &account.sid,
                was: account.status.unwrap_or(AccountStatus::Unknown),
                now: status,
                by_budget: spend.suspends(),
                spec: sub.spec.state,
                budget_lifted: spend.previous.as_ref().is_some_and(|b| b.suspended_by_budget),
                spec_changed: st.applied() != sub.metadata.generation,
            };
            let (type_, reason, note) = change.announcement();
            self.ctx.event(sub, type_, reason, "Update", note).await;
        }
        Ok(updated)
    }

    /// Suspends subaccount `sid` if it is active, for a budget that holds although the spec
    /// cannot be used; nothing else is changed, and nothing is reactivated.
    pub(super) async fn suspend_for_budget(
        &self,
        sub: &TwilioSubaccount,
        parent: &Credentials,
        sid: &str,
        st: &mut TwilioSubaccountStatus,
    ) -> Result<(), Stop> {
        let gone = format!("Subaccount {sid} recorded in status no longer exists at Twilio");
        let account = self.fetch(sub, parent, sid, gone).await?;
        if account.status != Some(AccountStatus::Active) {
            return Ok(());
        }
        let update = AccountUpdate {
            friendly_name: None,
            status: Some(AccountStatus::Suspended),
        };
        self.update(sub, parent, sid, &update, st).await?;
        let note = format!(
            "Suspended subaccount {sid} at Twilio: its spend reached its budget, which holds although the spec cannot be used"
        );
        self.ctx
            .event(sub, EventType::Warning, "BudgetSuspended", "Update", note)
            .await;
        Ok(())
    }

    /// Asks Twilio for `update`, records the outcome in `st` and remembers it.
    async fn update(
        &self,
        sub: &TwilioSubaccount,
        parent: &Credentials,
        sid: &str,
        update: &AccountUpdate,
        st: &mut TwilioSubaccountStatus,
    ) -> Result<Account, Stop> {
        let updated = self.ctx.twilio.update_account(parent, sid, update).await?;
        copy_to_status(st, &updated);
        self.remember_fetched(sub, &updated);
        Ok(updated)
    }

    /// Applies deletionPolicy to the subaccount the status recorded (or an interrupted create
    /// made), with credentials of the parent the status recorded: the policy the TwilioAccount
    /// allows, or else the mildest one it does allow, with a Warning.
    pub(super) async fn apply_deletion_policy(
        &self,
        sub: &TwilioSubaccount,
        st: &TwilioSubaccountStatus,
    ) -> Result<Action, Stop> {
        let ctx = &self.ctx;
        let kept = st.sid.as_deref().unwrap_or("no subaccount");
        let ns = sub.namespace().unwrap_or_default();
        let refs = (sub.spec.account_ref.as_ref(), sub.spec.credentials_ref.as_ref());
        let parent = target::parent(ctx, &ns, refs.0, refs.1, Use::Cleanup).await.ok();
        let asked = sub.spec.deletion_policy;
        let nothing_made = st.sid.is_none() && st.pending_since.is_none();
        // Whatever the spec says by now (a tenant may switch it just before deleting), what is
        // applied is a policy the TwilioAccount allows.
        let policy = match parent.as_ref().map(|p| &p.account) {
            Some(Some(account)) => {
                let (policy, refusal) = tenancy::effective_deletion_policy(account, asked);
                if let Some(refusal) = refusal.filter(|_| !nothing_made) {
                    let note = format!(
                        "deletionPolicy {asked:?} is not applied: {}; {policy:?}, the mildest policy it allows (Retain when it allows none), is applied to {kept} instead",
                        refusal.message
                    );
                    ctx.event(sub, EventType::Warning, "DeletionPolicyReplaced", "Delete", note)
                        .await;
                }
                Some(policy)
            }
            Some(None) => Some(asked),
            None if sub.spec.credentials_ref.is_some() => Some(asked),
            None => None,
        };
        let retained = policy.unwrap_or(asked) == SubaccountDeletionPolicy::Retain;
        if retained {
            return Ok(reconcile::retained(ctx, sub, kept).await);
        }
        if nothing_made {
            // Nothing was ever asked of Twilio for this object.
            return Ok(Action::await_change());
        }
        let wanted = match policy {
            Some(SubaccountDeletionPolicy::Close) => AccountStatus::Closed,
            Some(_) => AccountStatus::Suspended,
            None => {
                let note = format!(
                    "deletionPolicy {asked:?} is not applied: its TwilioAccount cannot be read, so whether the policy is allowed is unknown; {kept} is retained"
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
        };
        let candidates = self.candidates(sub, parent.map(|p| p.creds), st);
        let recorded = st.sid.clone();
        // From the UID alone: a spec that no longer validates must not hide an interrupted create.
        let creation_name = Some(tagging::creation_name(&sub.uid().unwrap_or_default()));
        let apply_policy = |creds: Credentials| {
            let (recorded, creation_name) = (recorded.clone(), creation_name.clone());
            async move {
                let sid = match (recorded, creation_name) {
                    (Some(sid), _) => sid,
                    (None, Some(name)) => {
                        let owner = st.owner_account_sid.as_deref();
                        let Some(found) = self.find_created(&creds, &name, owner).await? else {
                            return Ok(None);
                        };
                        // Its name alone proves nothing (a tenant can rename a subaccount it
                        // holds the token of): acting needs this object's claim on it too.
                        if let Err(stop) = claims::claim(ctx, &found.sid, sub).await {
                            let why = match stop {
                                Stop::Problem(p) => p.message,
                                Stop::Kube(e) => e.to_string(),
                            };
                            return Ok(Some(Note {
                                reason: "DeletionPolicySkipped",
                                text: format!(
                                    "Subaccount {} carries this object's creation name but is not proven its own ({}); it is left as it is",
                                    found.sid, why
                                ),
                            }));
                        }
                        found.sid
                    }
                    _ => return Ok(None),
                };
                let update = AccountUpdate {
                    friendly_name: None,
                    status: Some(wanted),
                };
                let applied = ctx.twilio.update_account(&creds, &sid, &update).await;
                if st.sid.is_none() {
                    // The claim taken above for a subaccount found by name; the recorded one is
                    // released with the object.
                    let _ = claims::release(ctx, &sid, &sub.uid().unwrap_or_default()).await;
                }
                match applied {
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

    /// The credentials a deletion step may use: the object's own (`own`) and, unless they come
    /// from its credentialsRef, the operator's; only those of the parent the status recorded,
    /// which alone may act on what it recorded.
    pub(super) fn candidates(
        &self,
        sub: &TwilioSubaccount,
        own: Option<Credentials>,
        st: &TwilioSubaccountStatus,
    ) -> Candidates {
        let owner = st.owner_account_sid.as_deref();
        let of_owner = |c: &Credentials| owner.is_none_or(|o| o == c.account_sid());
        let all = Candidates::new(&self.ctx, own, sub.spec.credentials_ref.is_some());
        Candidates {
            own: all.own.filter(of_owner),
            operator: all.operator.filter(of_owner),
        }
    }

    /// Looks for the subaccount at Twilio: the one spec.sid adopts, the one status records, or
    /// the one an interrupted create may have made.
    async fn observe(
        &self,
        sub: &TwilioSubaccount,
        resolved: &Resolved,
        st: &TwilioSubaccountStatus,
    ) -> Result<Found, Stop> {
        let parent = &resolved.parent;
        if let Some(sid) = sub.spec.sid.as_deref() {
            let missing = format!(
                "spec.sid {sid} does not exist at Twilio, or account {} cannot see it: check the SID and spec.credentialsRef",
                parent.account_sid()
            );
            return Ok(Found::Adopted(self.fetch(sub, parent, sid, missing).await?));
        }
        if let Some(sid) = st.sid.as_deref() {
            return Ok(Found::Recorded(self.fetch_recorded(sub, parent, sid).await?));
        }
        if st.pending_since.is_some() {
            let name = &resolved.settings.creation_name;
            let owner = st.owner_account_sid.as_deref();
            return Ok(Found::Interrupted(self.find_created(parent, name, owner).await?));
        }
        Ok(Found::Nothing)
    }

    /// Subaccount `sid`, which the status records.
    pub(super) async fn fetch_recorded(
        &self,
        sub: &TwilioSubaccount,
        parent: &Credentials,
        sid: &str,
    ) -> Result<Account, Stop> {
        let missing = format!(
            "Subaccount {sid} recorded in status no longer exists at Twilio (Twilio deletes closed subaccounts after 30 days)"
        );
        self.fetch(sub, parent, sid, missing).await
    }

    /// Subaccount `sid`: as this process fetched it lately for `sub` as it now is, or fetched
    /// now; a subaccount Twilio does not have is a `NotFound` problem saying `missing`.
    async fn fetch(
        &self,
        sub: &TwilioSubaccount,
        parent: &Credentials,
        sid: &str,
        missing: String,
    ) -> Result<Account, Stop> {
        let (edits, fresh_for) = (edits_hash(sub), self.ctx.fresh_for());
        let lately = self.memory.recall(&sub.uid().unwrap_or_default(), |r| {
            let fetched = r.fetched.as_ref()?;
            let fresh = fetched.at.elapsed() < fresh_for && fetched.edits == edits;
            (fresh && fetched.account.sid == sid).then(|| fetched.account.clone())
        });
        if let Some(account) = lately {
            return Ok(account);
        }
        let fetched = self.ctx.twilio.fetch_account(parent, sid).await;
        let account = fetched.map_err(|e| match e.class() {
            ErrorClass::NotFound => Problem::new(Reason::NotFound, missing),
            _ => e.into(),
        })?;
        self.remember_fetched(sub, &account);
        Ok(account)
    }

    /// Holds the claim on `sid` for `sub`, asking the apiserver only until it has been seen held.
    async fn claim(&self, sid: &str, sub: &TwilioSubaccount) -> Result<(), Stop> {
        let uid = sub.uid().unwrap_or_default();
        let held = self
            .memory
            .recall(&uid, |r| r.claimed.as_deref().map(|c| c == sid));
        if held != Some(true) {
            claims::claim(&self.ctx, sid, sub).await?;
            self.memory.note(&uid, |r| r.claimed = Some(sid.to_owned()));
        }
        Ok(())
    }

    /// Remembers the subaccount as Twilio just described it, for `sub` as it now is.
    fn remember_fetched(&self, sub: &TwilioSubaccount, account: &Account) {
        let fetched = Fetched {
            at: Instant::now(),
            edits: edits_hash(sub),
            account: account.clone(),
        };
        self.memory
            .note(&sub.uid().unwrap_or_default(), |r| r.fetched = Some(fetched));
    }

    /// The subaccount created under `creation_name`, if an interrupted create made one, of the
    /// owner its intent recorded (`recorded`; else of `parent`, for intents written before owners
    /// were recorded).
    pub(super) async fn find_created(
        &self,
        parent: &Credentials,
        creation_name: &str,
        recorded: Option<&str>,
    ) -> Result<Option<Account>, crate::twilio::Error> {
        let owner = recorded.unwrap_or(parent.account_sid());
        let filter = AccountFilter {
            friendly_name: Some(creation_name.to_owned()),
            status: None,
        };
        let found = self.ctx.twilio.list_accounts(parent, &filter).await?;
        Ok(found
            .into_iter()
            .find(|a| a.sid != parent.account_sid() && a.owner_account_sid.as_deref() == Some(owner)))
    }
}

/// Copies what Twilio says of the account into the status.
fn copy_to_status(st: &mut TwilioSubaccountStatus, account: &Account) {
    st.sid = Some(account.sid.clone());
    st.owner_account_sid = account.owner_account_sid.clone();
    st.friendly_name = account.friendly_name.clone();
    st.twilio_status = account.status.map(|s| s.as_str().to_owned());
}
