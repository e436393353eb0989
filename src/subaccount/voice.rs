//! The subaccount's voice dialing geo permissions, kept at Twilio as `spec.voice` declares them
//! and the TwilioAccount's policy allows ([`crate::dialing`] decides). Twilio is read with the
//! subaccount's own token (the Voice API acts on the caller's account) once per resync round,
//! and sooner after a change of the spec or the policy; only the countries that differ are
//! written, in one bulk update. A change made at Twilio by anybody else is put back and
//! announced; a suspended or closed subaccount is left alone. Best effort beside Ready: the
//! outcome is the DialingPermissions condition, and a failed check is tried again a minute later.

use super::{Subaccounts, edits_hash};
use crate::api::subaccount::{TwilioSubaccount, TwilioSubaccountStatus, VoiceStatus};
use crate::api::{TwilioAccount, account::VoicePolicy};
use crate::budget::reads::LOOK_SPACING;
use crate::conditions::{self, Problem, Reason};
use crate::dialing::{self, CONDITION, Observed, Wanted};
use crate::target;
use crate::twilio::MAX_COUNTRY_UPDATES;
use crate::twilio::types::{Account, AccountStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::events::EventType;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

/// How soon a failed check is tried again.
const RETRY: SignedDuration = SignedDuration::from_secs(60);

/// The condition reason while Twilio holds exactly what the spec declares.
const MATCHED: &str = "Matched";
/// The condition reason while the policy holds Twilio to less than the spec declares.
const NARROWED: &str = "Narrowed";
/// The condition reason while the spec lists a country Twilio does not.
const UNKNOWN_COUNTRY: &str = "UnknownCountry";

/// Why a check ended as it did, for the condition.
struct Outcome {
    status: &'static str,
    reason: String,
    message: String,
}

impl Subaccounts {
    /// Keeps the subaccount's dialing permissions as declared and allowed, when the spec
    /// declares them or the policy requires it. Returns when to look again, after a failure.
    pub(super) async fn keep_dialing(
        &self,
        sub: &TwilioSubaccount,
        policy: Option<&TwilioAccount>,
        account: &Account,
        st: &mut TwilioSubaccountStatus,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let (ns, name) = (sub.namespace().unwrap_or_default(), sub.name_any());
        let rules = policy.map(|a| &a.spec.subaccounts.voice);
        let declared = sub
            .spec
            .voice
            .as_ref()
            .map(|v| Wanted::declared(&v.dialing_permissions));
        if declared.is_none() && !rules.is_some_and(|p| p.required) {
            st.voice = None;
            st.conditions.retain(|c| c.type_ != CONDITION);
            self.ctx.metrics.voice(&ns, &name, None);
            return None;
        }
        let generation = sub.metadata.generation;
        if account.status != Some(AccountStatus::Active) {
            let message = format!(
                "Subaccount {} is {}: its dialing permissions are checked again once it is active",
                account.sid,
                account.status.unwrap_or(AccountStatus::Unknown).as_str()
            );
            let (reason, status) = ("SubaccountNotActive", "Unknown");
            conditions::set(
                &mut st.conditions,
                CONDITION,
                status,
                reason,
                message,
                generation,
                now,
            );
            return None;
        }
        let uid = sub.uid().unwrap_or_default();
        let asked = asked_hash(generation, declared.as_ref(), rules);
        let edits = edits_hash(sub);
        let fresh = self.ctx.fresh_for();
        // A person's annotation forces a look, but no more often than LOOK_SPACING: an editor
        // looping on annotations must not spend the subaccount's Twilio rate on reads.
        let checked = self.memory.recall(&uid, |r| {
            r.dialing_read.filter(|(at, hash, seen)| {
                *hash == asked && at.elapsed() < fresh && (*seen == edits || at.elapsed() < LOOK_SPACING)
            })
        });
        let done = st
            .conditions
            .iter()
            .any(|c| c.type_ == CONDITION && settled(&c.reason));
        if checked.is_some() && done {
            return None;
        }
        let previous = st.conditions.iter().find(|c| c.type_ == CONDITION).cloned();
        let outcome = match self
            .check_dialing(sub, policy, account, declared, previous.as_ref(), st, now)
            .await
        {
            Ok(outcome) => {
                self.memory
                    .note(&uid, |r| r.dialing_read = Some((Instant::now(), asked, edits)));
                outcome
            }
            Err(problem) if problem.reason == Reason::AuthenticationFailed => {
                // The token this process holds may have been replaced (a promotion made with
                // it): the next pass fetches the subaccount, and its token, anew.
                self.memory.note(&uid, |r| r.fetched = None);
                Outcome {
                    status: "False",
                    reason: problem.reason.as_str().to_owned(),
                    message: format!(
                        "Twilio refused subaccount {}'s own auth token, which the dialing permissions are read with: it was changed outside this object (a promoted or rotated token). The operator fetches the new one and tries again within a minute",
                        account.sid
                    ),
                }
            }
            Err(problem) => Outcome {
                status: "False",
                reason: problem.reason.as_str().to_owned(),
                message: format!(
                    "Could not check the dialing permissions at Twilio with the subaccount's own token: {}",
                    problem.message
                ),
            },
        };
        let news = previous.as_ref().is_none_or(|c| c.reason != outcome.reason);
        if outcome.status == "False" && outcome.reason != NARROWED && news {
            self.ctx
                .event(
                    sub,
                    EventType::Warning,
                    &outcome.reason,
                    "DialingPermissions",
                    outcome.message.clone(),
                )
                .await;
        }
        let retry = (!settled(&outcome.reason)).then(|| now + RETRY);
        conditions::set(
            &mut st.conditions,
            CONDITION,
            outcome.status,
            &outcome.reason,
            outcome.message,
            generation,
            now,
        );
        retry
    }

    /// Reads Twilio, writes what differs, announces it, and records what Twilio now holds.
    #[allow(clippy::too_many_arguments)]
    async fn check_dialing(
        &self,
        sub: &TwilioSubaccount,
        policy: Option<&TwilioAccount>,
        account: &Account,
        declared: Option<Wanted>,
        previous: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
        st: &mut TwilioSubaccountStatus,
        now: Timestamp,
    ) -> Result<Outcome, Problem> {
        let (ctx, uid) = (&self.ctx, sub.uid().unwrap_or_default());
        let (ns, name) = (sub.namespace().unwrap_or_default(), sub.name_any());
        let token = account
            .auth_token
            .clone()
            .ok_or_else(|| target::no_token(&account.sid))?;
        let creds = target::token_credentials(&account.sid, token)?;
        let (settings, countries) = tokio::try_join!(
            ctx.twilio.fetch_dialing_settings(&creds),
            ctx.twilio.list_dialing_countries(&creds)
        )?;
        let mut observed = Observed::new(settings.dialing_permissions_inheritance, &countries);
        let base = declared.unwrap_or_else(|| Wanted::held(&observed));
        let (wanted, removed) = match policy {
            Some(a) => dialing::narrow(&base, &a.spec.subaccounts.voice, &observed),
            None => (base, Vec::new()),
        };
        let plan = dialing::plan(&wanted, &observed);
        let wanted_hash = hash_of(&wanted);
        if !plan.is_empty() {
            // Settled on this very table before, by this process or (across a restart) by the
            // condition at this generation: so the difference was made at Twilio.
            let drift = match self.memory.recall(&uid, |r| r.dialing_settled) {
                Some(settled) => settled == wanted_hash,
                None => previous.is_some_and(|c| {
                    c.reason == MATCHED
                        && c.observed_generation == sub.metadata.generation
                        && removed.is_empty()
                }),
            };
            for chunk in plan.updates.chunks(MAX_COUNTRY_UPDATES) {
                ctx.twilio.update_dialing_countries(&creds, chunk).await?;
            }
            if let Some(inherit) = plan.inherit {
                ctx.twilio.update_dialing_settings(&creds, inherit).await?;
            }
            observed = dialing::after(&observed, &plan);
            if let Some(inherit) = plan.inherit {
                // What applies now is the parent's, or the subaccount's own as written while it
                // inherited: read it rather than trust what a bulk update did to hidden settings.
                observed = Observed::new(inherit, &ctx.twilio.list_dialing_countries(&creds).await?);
            }
            let changes = dialing::listed(&plan.changes);
            let (kind, reason, note) = if drift {
                ctx.metrics.dialing_repaired(&ns, &name);
                let note = format!(
                    "The dialing permissions of subaccount {} were changed at Twilio, not through this object; put back: {changes}",
                    account.sid
                );
                (EventType::Warning, "DialingPermissionsRepaired", note)
            } else if !removed.is_empty() {
                let note = format!(
                    "TwilioAccount {} does not allow {} (spec.subaccounts.voice), so Twilio is held to less than spec.voice declares: {changes}",
                    policy.map(ResourceExt::name_any).unwrap_or_default(),
                    dialing::listed(&removed)
                );
                (EventType::Warning, "DialingPermissionsNarrowed", note)
            } else {
                let note = format!("Set the dialing permissions at Twilio: {changes}");
                (EventType::Normal, "DialingPermissionsApplied", note)
            };
            ctx.event(sub, kind, reason, "DialingPermissions", note).await;
        }
        self.memory.note(&uid, |r| r.dialing_settled = Some(wanted_hash));
        let (enabled, high_risk) = observed.summary();
        ctx.metrics.voice(
            &ns,
            &name,
            Some((enabled, u32::try_from(high_risk.len()).unwrap_or(u32::MAX))),
        );
        let summary = match (observed.inherit, high_risk.is_empty()) {
            (true, _) => format!("inherits its parent's dialing permissions ({enabled} countries)"),
            (false, true) => format!("may call {enabled} countries, no high-risk range"),
            (false, false) => format!(
                "may call {enabled} countries, high-risk ranges in {}",
                high_risk.join(", ")
            ),
        };
        st.voice = Some(VoiceStatus {
            inherit: observed.inherit,
            countries_enabled: enabled,
            high_risk,
            observed_at: Time(now),
        });
        Ok(if !plan.unknown.is_empty() {
            Outcome {
                status: "False",
                reason: UNKNOWN_COUNTRY.to_owned(),
                message: format!(
                    "Twilio lists no country {} (spec.voice.dialingPermissions.countries): use ISO 3166-1 alpha-2 codes Twilio supports. Subaccount {} {summary}",
                    plan.unknown.join(", "),
                    account.sid
                ),
            }
        } else if !removed.is_empty() {
            Outcome {
                status: "False",
                reason: NARROWED.to_owned(),
                message: format!(
                    "TwilioAccount {} does not allow {} (spec.subaccounts.voice): subaccount {} {summary}",
                    policy.map(ResourceExt::name_any).unwrap_or_default(),
                    dialing::listed(&removed),
                    account.sid
                ),
            }
        } else {
            Outcome {
                status: "True",
                reason: MATCHED.to_owned(),
                message: format!("As declared, subaccount {} {summary}", account.sid),
            }
        })
    }
}

/// A hash of what decides the wanted permissions besides Twilio itself: the object's
/// generation, the declaration and the policy.
fn asked_hash(generation: Option<i64>, declared: Option<&Wanted>, policy: Option<&VoicePolicy>) -> u64 {
    let rules = policy.map(|p| (&p.countries, format!("{:?}", p.high_risk), p.required));
    hash_of(&(generation, declared, rules))
}

/// Whether a check that ended with `reason` is done until the next round: Twilio matched, or
/// what differs needs a person (the policy, an unknown country), not another try.
fn settled(reason: &str) -> bool {
    matches!(reason, MATCHED | NARROWED | UNKNOWN_COUNTRY)
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hash = DefaultHasher::new();
    value.hash(&mut hash);
    hash.finish()
}
