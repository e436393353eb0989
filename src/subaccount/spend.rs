//! The subaccount's spend: month-to-date usage read from Twilio when the budget's schedule, a
//! verified trigger callback or a person's change asks ([`crate::budget::reads`]), judged
//! against the budget ([`crate::budget::judge`]), reported in status, the Budget condition,
//! events and metrics, and the budget's usage triggers kept at Twilio.
//!
//! The budget keeps no intent: its suspension is derived afresh from each read. Triggers are
//! found by name before any is made, and removed with the budget, the webhook URL or the object.
//! A spec that cannot be used still holds a recorded subaccount to its budget ([`Guard`]).

use super::{Guard, Resolved, Subaccounts, edits_hash};
use crate::api::schedule;
use crate::api::subaccount::{
    BudgetStatus, BudgetTrigger, SubaccountState, SubaccountUsage, TwilioSubaccount, TwilioSubaccountStatus,
};
use crate::budget::reads::{self, CALLBACK_SPACING, FRESH_BEFORE_LIFTING, LOOK_SPACING};
use crate::budget::{self, triggers};
use crate::conditions;
use crate::reconcile::{self, Note, Stop};
use crate::target::{self, Use};
use crate::twilio::{Credentials, ErrorClass};
use crate::{api::subaccount::Budget, tenancy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use rust_decimal::Decimal;
use std::time::{Duration, Instant};

/// How often the budget triggers at Twilio are listed again to confirm they are as recorded
/// (somebody holding the subaccount's token may have deleted or moved them).
const TRIGGER_CONFIRMATION: Duration = Duration::from_secs(6 * 3600);

/// Spend as a pass knows it: what the spend step hands the account step and the report.
pub(super) struct Spend {
    /// What it means for the budget, if there is one.
    pub judgement: Option<budget::Judgement>,
    /// The state the subaccount must have at Twilio ([`budget::wanted_state`]).
    pub wanted: SubaccountState,
    /// The budget status before this pass: kept until the pass judges anew, so a pass that
    /// fails first does not forget which thresholds were announced, the suspension or the
    /// triggers.
    pub previous: Option<BudgetStatus>,
    /// When spend is read again.
    pub next_read: Timestamp,
}

impl Spend {
    /// Whether the budget suspends the subaccount.
    pub fn suspends(&self) -> bool {
        self.judgement.as_ref().is_some_and(|j| j.suspend)
    }
}

impl Subaccounts {
    /// Month-to-date spend of subaccount `sid` and what it means for the budget: the newest
    /// known read, or a new one when the schedule says so or a verified trigger callback asks;
    /// before a budget suspension is lifted, a read at most a minute old.
    pub(super) async fn spend(
        &self,
        sub: &TwilioSubaccount,
        resolved: &Resolved,
        sid: &str,
        st: &mut TwilioSubaccountStatus,
        now: Timestamp,
    ) -> Result<Spend, Stop> {
        let limit = resolved.settings.budget.as_ref();
        self.judge_spend(sub, limit, &resolved.parent, sid, st, now).await
    }

    /// [`Self::spend`] with the budget `limit` to judge against.
    async fn judge_spend(
        &self,
        sub: &TwilioSubaccount,
        limit: Option<&(Budget, Decimal)>,
        parent: &Credentials,
        sid: &str,
        st: &mut TwilioSubaccountStatus,
        now: Timestamp,
    ) -> Result<Spend, Stop> {
        let previous = st.budget.clone();
        let uid = sub.uid().unwrap_or_default();
        let (remembered, last_forced) = self
            .memory
            .recall(&uid, |r| {
                let usage = r.usage.as_ref().filter(|(of, ..)| of == sid);
                Some((usage.map(|(_, u, l)| (u.clone(), *l)), r.callback_read))
            })
            .unwrap_or_default();
        // With a budget, what a person changes (a new limit, an annotation to force a look) is
        // judged against fresh spend, read at most every few seconds however often it changes.
        let touched = limit.is_some() && remembered.as_ref().is_some_and(|(_, l)| *l != edits_hash(sub));
        let mut usage = reads::newest_usage(st.usage.clone(), remembered.map(|(u, _)| u));
        let triggered = previous.as_ref().is_some_and(|b| !b.triggers.is_empty());
        let rate = |b: Option<&BudgetStatus>| b.and_then(|b| b.rate_per_hour.clone());
        let previous_rate = rate(previous.as_ref());
        let due = usage
            .as_ref()
            .map(|u| reads::next_usage_read(u, limit, previous_rate.as_deref(), triggered));
        let called_back = self.callbacks.last_arrival(sid);
        let asked = |u: &SubaccountUsage| {
            let callback = reads::asked_read_at(u, called_back, last_forced, CALLBACK_SPACING);
            let look = reads::asked_read_at(u, touched.then_some(now), Some(u.observed_at.0), LOOK_SPACING);
            (callback, look)
        };
        let (callback, look_at) = usage.as_ref().map(asked).unwrap_or_default();
        let earliest = callback.into_iter().chain(look_at).min();
        if reads::read_due(usage.as_ref(), due, earliest, now) {
            if callback.is_some_and(|at| now >= at) {
                self.memory.note(&uid, |r| r.callback_read = Some(now));
            }
            usage = Some(self.read_usage(sub, parent, sid, now).await?);
        }
        let judge = |usage: &SubaccountUsage| {
            limit
                .map(|(b, monthly)| budget::judge(b, *monthly, usage, previous.as_ref(), sub.spec.state))
                .transpose()
        };
        let read = usage.expect("read when none was known");
        let mut judgement = judge(&read)?;
        let was_suspended = previous.as_ref().is_some_and(|b| b.suspended_by_budget);
        let lifting = was_suspended && judgement.as_ref().is_some_and(|j| !j.suspend);
        let read = if lifting && now >= schedule::after(read.observed_at.0, FRESH_BEFORE_LIFTING) {
            let fresh = self.read_usage(sub, parent, sid, now).await?;
            judgement = judge(&fresh)?;
            fresh
        } else {
            read
        };
        let rate = judgement.as_ref().and_then(|j| j.status.rate_per_hour.as_deref());
        let scheduled = reads::next_usage_read(&read, limit, rate, triggered);
        // A read asked for that this pass could not make yet is made as soon as it may.
        let (callback, look_at) = asked(&read);
        let next_read = callback
            .into_iter()
            .chain(look_at)
            .chain([scheduled])
            .min()
            .unwrap_or(scheduled);
        st.usage = Some(read);
        Ok(Spend {
            wanted: budget::wanted_state(judgement.as_ref(), sub.spec.state),
            judgement,
            previous,
            next_read,
        })
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
        let remembered = (sid.to_owned(), usage.clone(), edits_hash(sub));
        self.memory
            .note(&sub.uid().unwrap_or_default(), |r| r.usage = Some(remembered));
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

    /// Reports the budget's judgement and keeps its usage triggers at Twilio.
    pub(super) async fn settle_budget(
        &self,
        sub: &TwilioSubaccount,
        resolved: &Resolved,
        sid: &str,
        spend: &Spend,
        st: &mut TwilioSubaccountStatus,
        now: Timestamp,
    ) {
        let limit = resolved.settings.budget.as_ref();
        self.report_budget(sub, limit, st, sid, spend, now).await;
        let triggers = self
            .keep_triggers(sub, limit, &resolved.parent, sid, spend.previous.as_ref())
            .await;
        if let Some(budget) = st.budget.as_mut() {
            budget.triggers = triggers;
        }
    }

    /// Holds recorded subaccount `sid` to its budget (its own, or the one its account imposes)
    /// while its spec cannot be used, suspending it if its spend says so. Nothing else is changed,
    /// and nothing is reactivated.
    pub(super) async fn hold_to_budget(
        &self,
        sub: &TwilioSubaccount,
        guard: &Guard<'_>,
        st: &mut TwilioSubaccountStatus,
        now: Timestamp,
    ) -> Result<(), Stop> {
        let Ok(mut limit) = budget::limit(sub.spec.budget.as_ref()) else {
            return Ok(());
        };
        let Guard { sid, parent, policy } = *guard;
        if let Some(policy) = policy
            && tenancy::check_budget(policy, sub.spec.budget.as_ref()).is_err()
        {
            limit = tenancy::imposed_budget(policy, sub.spec.budget.as_ref());
        }
        if limit.is_none() {
            return Ok(());
        }
        let spend = self
            .judge_spend(sub, limit.as_ref(), parent, sid, st, now)
            .await?;
        if spend.suspends() {
            self.suspend_for_budget(sub, parent, sid, st).await?;
        }
        self.report_budget(sub, limit.as_ref(), st, sid, &spend, now)
            .await;
        Ok(())
    }

    /// Records the budget's judgement in status, the Budget condition and the metric, and
    /// announces each threshold newly reached.
    async fn report_budget(
        &self,
        sub: &TwilioSubaccount,
        limit: Option<&(Budget, Decimal)>,
        st: &mut TwilioSubaccountStatus,
        sid: &str,
        spend: &Spend,
        now: Timestamp,
    ) {
        let (ns, name) = (sub.namespace().unwrap_or_default(), sub.name_any());
        let (Some(judgement), Some((spec, monthly))) = (&spend.judgement, limit) else {
            st.budget = None;
            st.conditions.retain(|c| c.type_ != budget::CONDITION);
            self.ctx.metrics.budget_ratio(&ns, &name, None);
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
            .budget_ratio(&ns, &name, Some(budget::ratio(&status, *monthly)));
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
        limit: Option<&(Budget, Decimal)>,
        parent: &Credentials,
        sid: &str,
        previous: Option<&BudgetStatus>,
    ) -> Vec<BudgetTrigger> {
        let uid = sub.uid().unwrap_or_default();
        let (ns, name) = (sub.namespace().unwrap_or_default(), sub.name_any());
        let url = self.callbacks.url(&ns, &name);
        let wanted = triggers::wanted_triggers(limit.map(|(b, m)| (b, *m)), &uid, url.as_deref());
        let recorded = previous.map(|p| p.triggers.as_slice()).unwrap_or_default();
        let confirmed = self
            .memory
            .recall(&uid, |r| r.triggers_confirmed)
            .is_some_and(|at| at.elapsed() < TRIGGER_CONFIRMATION);
        let settled = recorded.is_empty() && wanted.is_empty()
            || confirmed && triggers::recorded_as_wanted(recorded, &wanted);
        let kept = if settled {
            Ok(recorded.to_vec())
        } else {
            self.sync_triggers(parent, sid, &uid, &wanted).await
        };
        let kept = match kept {
            Ok(kept) => kept,
            Err(e) => {
                let first = !self
                    .memory
                    .note(&uid, |r| std::mem::replace(&mut r.triggers_failing, true));
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
        self.memory.note(&uid, |r| {
            r.triggers_failing = false;
            if !settled {
                r.triggers_confirmed = Some(Instant::now());
            }
        });
        let routed = (!kept.is_empty()).then_some((ns.as_str(), name.as_str()));
        self.callbacks.route(sid, routed);
        if !settled && !wanted.is_empty() && !triggers::recorded_as_wanted(recorded, &wanted) {
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
        kept
    }

    /// Makes the usage triggers of the object with `uid` on subaccount `sid` those `wanted`,
    /// from what Twilio lists: found by name, so none is ever made twice.
    async fn sync_triggers(
        &self,
        parent: &Credentials,
        sid: &str,
        uid: &str,
        wanted: &[triggers::Wanted],
    ) -> Result<Vec<BudgetTrigger>, crate::twilio::Error> {
        let twilio = &self.ctx.twilio;
        let existing = twilio.list_usage_triggers(parent, sid).await?;
        let plan = triggers::trigger_plan(uid, wanted, &existing);
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
            kept.push(triggers::recorded(trigger, want));
        }
        for want in &plan.create {
            let made = twilio.create_usage_trigger(parent, sid, &want.request()).await?;
            kept.push(triggers::recorded(&made.sid, want));
        }
        kept.sort_by_key(|t| t.percent);
        Ok(kept)
    }

    /// Deletes the budget's usage triggers at Twilio before the object goes, as keys are
    /// revoked: a passing failure holds the deletion, and when nothing reaches Twilio a Warning
    /// names what was left.
    pub(super) async fn remove_triggers(
        &self,
        sub: &TwilioSubaccount,
        st: &TwilioSubaccountStatus,
    ) -> Result<(), Stop> {
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
        let maybe_made = self.callbacks.base().is_some() && sub.spec.budget.is_some();
        if recorded.is_empty() && !maybe_made {
            return Ok(());
        }
        let ns = sub.namespace().unwrap_or_default();
        let refs = (sub.spec.account_ref.as_ref(), sub.spec.credentials_ref.as_ref());
        let parent = target::parent(ctx, &ns, refs.0, refs.1, Use::Cleanup).await.ok();
        let candidates = self.candidates(sub, parent.map(|p| p.creds), st);
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
}
