//! The usage triggers a budget keeps at Twilio, calling the operator at each threshold. Pure.
//!
//! [`trigger_plan`] keeps one recurring monthly price trigger per threshold, found again by a
//! name derived from the object's UID, so a create interrupted before it was recorded is
//! found, not made twice; triggers of other objects, or made by people, are left alone.

use super::{threshold_value, thresholds};
use crate::api::subaccount::{Budget, BudgetTrigger};
use crate::twilio::types::{NewUsageTrigger, UsageTrigger};
use rust_decimal::Decimal;
use std::str::FromStr;

/// The name a budget trigger of the object with `uid` carries for threshold `percent`.
pub fn trigger_name(uid: &str, percent: u8) -> String {
    format!("{}{percent}", trigger_prefix(uid))
}

fn trigger_prefix(uid: &str) -> String {
    format!("twilio-operator budget {uid} ")
}

/// A trigger the budget wants at Twilio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Its threshold.
    pub percent: u8,
    /// The spend at which it fires.
    pub value: String,
    /// Its name, from the object's UID and the threshold.
    pub name: String,
    /// Where Twilio calls.
    pub callback_url: String,
}

impl Wanted {
    /// The create request for this trigger.
    pub fn request(&self) -> NewUsageTrigger {
        NewUsageTrigger {
            callback_url: self.callback_url.clone(),
            trigger_value: self.value.clone(),
            usage_category: "totalprice".into(),
            friendly_name: Some(self.name.clone()),
            recurring: Some("monthly".into()),
            trigger_by: Some("price".into()),
        }
    }
}

/// The triggers the object with `uid` wants: one per threshold of `budget`, calling
/// `callback_url`; none without a budget or a URL.
pub fn wanted_triggers(
    budget: Option<(&Budget, Decimal)>,
    uid: &str,
    callback_url: Option<&str>,
) -> Vec<Wanted> {
    let (Some((budget, monthly)), Some(url)) = (budget, callback_url) else {
        return Vec::new();
    };
    thresholds(budget)
        .into_iter()
        .map(|percent| Wanted {
            percent,
            value: threshold_value(monthly, percent),
            name: trigger_name(uid, percent),
            callback_url: url.to_owned(),
        })
        .collect()
}

/// Whether the triggers recorded in status are exactly those wanted.
pub fn recorded_as_wanted(recorded: &[BudgetTrigger], wanted: &[Wanted]) -> bool {
    recorded.len() == wanted.len()
        && wanted.iter().all(|w| {
            recorded
                .iter()
                .any(|r| r.percent == w.percent && r.value == w.value && r.callback_url == w.callback_url)
        })
}

/// What to change at Twilio so the object's triggers are those wanted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerPlan {
    /// Triggers already right: recorded as they are.
    pub keep: Vec<BudgetTrigger>,
    /// Triggers right but for their callback URL: `(sid, wanted)`.
    pub repoint: Vec<(String, Wanted)>,
    /// Triggers to create.
    pub create: Vec<Wanted>,
    /// SIDs of this object's triggers nobody wants (changed value, duplicates, no budget).
    pub delete: Vec<String>,
}

/// Plans the triggers of the object with `uid` from those Twilio lists for its subaccount:
/// others' triggers are never touched, and of two triggers for one threshold one is deleted.
pub fn trigger_plan(uid: &str, wanted: &[Wanted], existing: &[UsageTrigger]) -> TriggerPlan {
    let prefix = trigger_prefix(uid);
    let mut plan = TriggerPlan::default();
    let mut used = Vec::new();
    for w in wanted {
        let same = |t: &&UsageTrigger| {
            t.friendly_name.as_deref() == Some(w.name.as_str())
                && t.trigger_value
                    .as_deref()
                    .and_then(|v| Decimal::from_str(v).ok())
                    .zip(Decimal::from_str(&w.value).ok())
                    .is_some_and(|(a, b)| a == b)
                && !used.contains(&t.sid)
        };
        let found = existing
            .iter()
            .filter(same)
            .min_by_key(|t| t.callback_url.as_deref() != Some(w.callback_url.as_str()));
        match found {
            Some(t) => {
                used.push(t.sid.clone());
                if t.callback_url.as_deref() == Some(w.callback_url.as_str()) {
                    plan.keep.push(recorded(&t.sid, w));
                } else {
                    plan.repoint.push((t.sid.clone(), w.clone()));
                }
            }
            None => plan.create.push(w.clone()),
        }
    }
    plan.delete = existing
        .iter()
        .filter(|t| t.friendly_name.as_deref().is_some_and(|n| n.starts_with(&prefix)))
        .filter(|t| !used.contains(&t.sid))
        .map(|t| t.sid.clone())
        .collect();
    plan
}

/// The status record of trigger `sid`, made as `wanted` says.
pub fn recorded(sid: &str, wanted: &Wanted) -> BudgetTrigger {
    BudgetTrigger {
        percent: wanted.percent,
        sid: sid.to_owned(),
        value: wanted.value.clone(),
        callback_url: wanted.callback_url.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::subaccount::BudgetAction;
    use crate::budget::tests::budget;

    fn existing(sid: &str, name: &str, value: &str, url: &str) -> UsageTrigger {
        serde_json::from_value(serde_json::json!({
            "sid": sid, "friendly_name": name, "trigger_value": value, "callback_url": url,
        }))
        .unwrap()
    }

    #[test]
    fn triggers_are_found_by_name_never_duplicated_and_others_left_alone() {
        let (b, m) = budget("50", &[80], BudgetAction::Suspend);
        let url = "https://op.example.com/usage-triggers/ns/a";
        let wanted = wanted_triggers(Some((&b, m)), "uid-1", Some(url));
        assert_eq!(
            wanted
                .iter()
                .map(|w| (w.percent, w.value.as_str()))
                .collect::<Vec<_>>(),
            vec![(80, "40"), (100, "50")]
        );
        assert!(
            wanted_triggers(Some((&b, m)), "uid-1", None).is_empty(),
            "no public URL"
        );
        assert!(wanted_triggers(None, "uid-1", Some(url)).is_empty(), "no budget");
        let fresh = trigger_plan("uid-1", &wanted, &[]);
        assert_eq!(fresh.create.len(), 2);
        let made = [
            existing("UT1", &trigger_name("uid-1", 80), "40.00", url),
            existing("UT2", &trigger_name("uid-1", 100), "50", url),
            // Made twice by an interrupted pass, or left by an old limit: deleted.
            existing("UT3", &trigger_name("uid-1", 100), "50", url),
            existing("UT4", &trigger_name("uid-1", 50), "25", url),
            // Somebody else's, or another object's: never touched.
            existing("UT5", "alerts for finance", "40", url),
            existing("UT6", &trigger_name("uid-2", 80), "40", url),
        ];
        let plan = trigger_plan("uid-1", &wanted, &made);
        assert!(plan.create.is_empty() && plan.repoint.is_empty());
        assert_eq!(
            plan.keep.iter().map(|t| t.sid.as_str()).collect::<Vec<_>>(),
            vec!["UT1", "UT2"]
        );
        assert_eq!(plan.delete, vec!["UT3", "UT4"]);
        assert!(recorded_as_wanted(&plan.keep, &wanted));
        let moved = wanted_triggers(
            Some((&b, m)),
            "uid-1",
            Some("https://new.example.com/usage-triggers/ns/a"),
        );
        let plan = trigger_plan("uid-1", &moved, &made[..2]);
        assert_eq!(plan.repoint.len(), 2, "a new URL updates, it does not re-create");
        assert!(!recorded_as_wanted(&[], &moved));
        let gone = trigger_plan("uid-1", &[], &made);
        assert_eq!(gone.delete, vec!["UT1", "UT2", "UT3", "UT4"]);
    }
}
