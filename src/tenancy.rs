//! Who may use a TwilioAccount for what. Pure: decided from the account's spec, the object's
//! namespace and its labels, and what the object asks. A namespace is admitted when
//! `spec.namespaces.names` lists it or `spec.namespaces.selector` matches its labels (absent or
//! empty admits none). Every refusal is a `NotPermitted` [`Problem`] naming the TwilioAccount and
//! the rule, made before any Twilio call.

use crate::api::TwilioAccount;
use crate::api::account::HighRiskPolicy;
use crate::api::apikey::KeyType;
use crate::api::subaccount::{Budget, BudgetAction, SubaccountDeletionPolicy, SubaccountVoice};
use crate::conditions::{Problem, Reason};
use crate::dialing;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// The TwilioAccount objects use when they name none.
pub const DEFAULT_ACCOUNT: &str = "default";

fn refused(account: &TwilioAccount, rule: &str) -> Problem {
    Problem::new(
        Reason::NotPermitted,
        format!("TwilioAccount {} {rule}", account.name_any()),
    )
}

/// Whether `account` admits `namespace`, whose labels are `labels`.
pub fn admits(account: &TwilioAccount, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
    let policy = &account.spec.namespaces;
    let by_label = policy
        .selector
        .clone()
        .and_then(|s| Selector::try_from(s).ok())
        .is_some_and(|selector| selector.matches(labels));
    policy.names.iter().any(|n| n == namespace) || by_label
}

/// Refuses a namespace the account does not admit.
pub fn check_namespace(
    account: &TwilioAccount,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Problem> {
    if admits(account, namespace, labels) {
        return Ok(());
    }
    Err(refused(
        account,
        &format!(
            "does not admit namespace {namespace} (spec.namespaces): a cluster admin can add it to spec.namespaces.names or label it to match spec.namespaces.selector"
        ),
    ))
}

/// Refuses a key type or a permission the account does not allow.
pub fn check_key(account: &TwilioAccount, key_type: KeyType, permissions: &[String]) -> Result<(), Problem> {
    let policy = &account.spec.api_keys;
    if !policy.key_types.contains(&key_type) {
        return Err(refused(
            account,
            &format!(
                "does not allow {key_type:?} keys (spec.apiKeys.keyTypes: {:?})",
                policy.key_types
            ),
        ));
    }
    if let Some(patterns) = &policy.permissions
        && let Some(denied) = permissions
            .iter()
            .find(|p| !patterns.iter().any(|pattern| permits(pattern, p)))
    {
        return Err(refused(
            account,
            &format!("does not allow permission {denied} (spec.apiKeys.permissions: {patterns:?})"),
        ));
    }
    Ok(())
}

/// Whether permission `pattern` (a path, or a path ending in `/*`) admits `permission`.
pub fn permits(pattern: &str, permission: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(prefix) => permission
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/')),
        None => pattern == permission,
    }
}

/// The refusal of an object of `kind` past the account's `field` limit of `max` per namespace.
pub fn over_quota(account: &TwilioAccount, kind: &str, field: &str, namespace: &str, max: u32) -> Problem {
    Problem::new(
        Reason::QuotaExceeded,
        format!(
            "TwilioAccount {} allows {max} {kind}s per namespace ({field}), and namespace {namespace} has as many created before this one: delete one of them (this object then proceeds), or a cluster admin raises the limit",
            account.name_any()
        ),
    )
}

/// Refuses creating a subaccount when the account does not allow it.
pub fn check_create(account: &TwilioAccount) -> Result<(), Problem> {
    if account.spec.subaccounts.create {
        return Ok(());
    }
    Err(refused(
        account,
        "does not allow creating subaccounts (spec.subaccounts.create is false)",
    ))
}

/// Refuses adopting subaccount `sid` from `namespace` without an explicit grant.
pub fn check_adopt(account: &TwilioAccount, sid: &str, namespace: &str) -> Result<(), Problem> {
    if account
        .spec
        .subaccounts
        .adopt
        .iter()
        .any(|g| g.sid == sid && g.namespace == namespace)
    {
        return Ok(());
    }
    Err(refused(
        account,
        &format!(
            "does not grant namespace {namespace} the adoption of {sid} (spec.subaccounts.adopt needs {{sid: {sid}, namespace: {namespace}}})"
        ),
    ))
}

/// Refuses a deletionPolicy the account does not allow.
pub fn check_deletion_policy(
    account: &TwilioAccount,
    policy: SubaccountDeletionPolicy,
) -> Result<(), Problem> {
    let allowed = &account.spec.subaccounts.deletion_policies;
    if allowed.contains(&policy) {
        return Ok(());
    }
    Err(refused(
        account,
        &format!("does not allow deletionPolicy {policy:?} (spec.subaccounts.deletionPolicies: {allowed:?})"),
    ))
}

/// The deletion policy to apply for an object that asks for `asked`: that one when `account`
/// allows it, else the mildest it allows (Retain, then Suspend, then Close) with the reason, so
/// what is applied at deletion is always a policy the account allows, Retain included. An
/// account that allows none leaves the subaccount as it is.
pub fn effective_deletion_policy(
    account: &TwilioAccount,
    asked: SubaccountDeletionPolicy,
) -> (SubaccountDeletionPolicy, Option<Problem>) {
    let Err(refusal) = check_deletion_policy(account, asked) else {
        return (asked, None);
    };
    let allowed = &account.spec.subaccounts.deletion_policies;
    let mildest = [
        SubaccountDeletionPolicy::Retain,
        SubaccountDeletionPolicy::Suspend,
        SubaccountDeletionPolicy::Close,
    ]
    .into_iter()
    .find(|p| allowed.contains(p))
    .unwrap_or(SubaccountDeletionPolicy::Retain);
    (mildest, Some(refusal))
}

/// Refuses a budget the account does not allow: none where one is required, a monthly above
/// the cap, or an action not allowed.
pub fn check_budget(account: &TwilioAccount, budget: Option<&Budget>) -> Result<(), Problem> {
    let Some(policy) = &account.spec.subaccounts.budget else {
        return Ok(());
    };
    let Some(budget) = budget else {
        if policy.required {
            return Err(refused(
                account,
                "requires spec.budget on every TwilioSubaccount (spec.subaccounts.budget.required): set spec.budget.monthly",
            ));
        }
        return Ok(());
    };
    if let Some(max) = &policy.max_monthly {
        let cap = crate::budget::amount("spec.subaccounts.budget.maxMonthly", max)?;
        let monthly = crate::budget::amount("spec.budget.monthly", &budget.monthly)?;
        if monthly > cap {
            return Err(refused(
                account,
                &format!(
                    "allows spec.budget.monthly up to {max} (spec.subaccounts.budget.maxMonthly), not {}: lower it",
                    budget.monthly
                ),
            ));
        }
    }
    if !policy.actions.contains(&budget.action) {
        return Err(refused(
            account,
            &format!(
                "does not allow spec.budget.action {:?} (spec.subaccounts.budget.actions: {:?})",
                budget.action, policy.actions
            ),
        ));
    }
    Ok(())
}

/// Refuses voice dialing permissions the account does not allow: none declared where a
/// declaration is required, inheriting the parent's under a policy that restricts anything, a
/// country not listed, or a high-risk range where they are forbidden. An existing subaccount is
/// narrowed at Twilio instead ([`crate::dialing::narrow`]).
pub fn check_voice(account: &TwilioAccount, voice: Option<&SubaccountVoice>) -> Result<(), Problem> {
    let policy = &account.spec.subaccounts.voice;
    let Some(permissions) = voice.map(|v| &v.dialing_permissions) else {
        if policy.required {
            return Err(refused(
                account,
                "requires spec.voice.dialingPermissions with inherit: false on every TwilioSubaccount (spec.subaccounts.voice.required): list the countries it calls in spec.voice.dialingPermissions.countries",
            ));
        }
        return Ok(());
    };
    if permissions.inherit && dialing::restricts(policy) {
        return Err(refused(
            account,
            "does not allow spec.voice.dialingPermissions.inherit: true, since its spec.subaccounts.voice restricts what subaccounts may dial: set inherit: false and list the countries in spec.voice.dialingPermissions.countries",
        ));
    }
    if let Some(allowed) = &policy.countries {
        // A country listed with every range off is a country disabled, which any policy allows.
        let outside: Vec<&str> = permissions
            .countries
            .iter()
            .filter(|c| c.low_risk || c.high_risk_special || c.high_risk_toll_fraud)
            .map(|c| c.iso_code.as_str())
            .filter(|iso| !allowed.iter().any(|a| a == iso))
            .collect();
        if !outside.is_empty() {
            return Err(refused(
                account,
                &format!(
                    "does not allow dialing {} (spec.subaccounts.voice.countries: {allowed:?}): remove them from spec.voice.dialingPermissions.countries",
                    outside.join(", ")
                ),
            ));
        }
    }
    let high_risk: Vec<&str> = permissions
        .countries
        .iter()
        .filter(|c| c.high_risk_special || c.high_risk_toll_fraud)
        .map(|c| c.iso_code.as_str())
        .collect();
    if policy.high_risk == HighRiskPolicy::Forbid && !high_risk.is_empty() {
        return Err(refused(
            account,
            &format!(
                "forbids high-risk number ranges (spec.subaccounts.voice.highRisk: Forbid), which spec.voice.dialingPermissions.countries enables for {}: set highRiskSpecial and highRiskTollFraud to false",
                high_risk.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The budget `account` holds an existing subaccount to while its spec's budget breaks the
/// policy (see [`check_budget`]), so editing the spec never lifts the account's limit: the
/// spec's budget with monthly capped at maxMonthly and an allowed action (Suspend when allowed),
/// or, without one, maxMonthly with the default thresholds. `None` when the policy sets no cap
/// to fall back on.
pub fn imposed_budget(account: &TwilioAccount, budget: Option<&Budget>) -> Option<(Budget, Decimal)> {
    let policy = account.spec.subaccounts.budget.as_ref()?;
    let cap = policy
        .max_monthly
        .as_deref()
        .and_then(|m| crate::budget::amount("maxMonthly", m).ok());
    let asked = budget.and_then(|b| {
        crate::budget::amount("monthly", &b.monthly)
            .ok()
            .map(|m| (b.monthly.clone(), m))
    });
    let (text, monthly) = match (asked, cap) {
        (Some((_, asked)), Some(cap)) if asked > cap => (policy.max_monthly.clone()?, cap),
        (Some(asked), _) => asked,
        (None, Some(cap)) => (policy.max_monthly.clone()?, cap),
        (None, None) => return None,
    };
    let wanted = budget.map_or(BudgetAction::Suspend, |b| b.action);
    let action = if policy.actions.contains(&wanted) {
        wanted
    } else if policy.actions.contains(&BudgetAction::Suspend) {
        BudgetAction::Suspend
    } else {
        BudgetAction::Alert
    };
    let imposed = Budget {
        monthly: text,
        warn_at: budget.map_or_else(|| vec![80], |b| b.warn_at.clone()),
        action,
    };
    Some((imposed, monthly))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::account::{AdoptGrant, TwilioAccountSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn account(spec: serde_json::Value) -> TwilioAccount {
        let spec: TwilioAccountSpec = serde_json::from_value(spec).unwrap();
        TwilioAccount::new("default", spec)
    }
    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }
    const ENV: &str = r#"{"fromEnvironment": true}"#;

    #[test]
    fn the_deletion_policy_applied_is_always_one_the_account_allows() {
        use SubaccountDeletionPolicy::{Close, Retain, Suspend};
        let allowing = |policies: &[&str]| {
            account(
                serde_json::json!({"credentials": {"fromEnvironment": true}, "subaccounts": {"deletionPolicies": policies}}),
            )
        };
        for (allowed, asked, applied, replaced) in [
            (&["Retain", "Suspend", "Close"][..], Retain, Retain, false),
            (&["Suspend"][..], Retain, Suspend, true),
            (&["Suspend", "Close"][..], Retain, Suspend, true),
            (&["Close"][..], Suspend, Close, true),
            (&["Retain", "Suspend"][..], Close, Retain, true),
            (&[][..], Close, Retain, true),
        ] {
            let (policy, refusal) = effective_deletion_policy(&allowing(allowed), asked);
            assert_eq!(
                (policy, refusal.is_some()),
                (applied, replaced),
                "{asked:?} with {allowed:?}"
            );
        }
    }

    #[test]
    fn no_namespace_is_admitted_by_default() {
        let bare = account(
            serde_json::json!({"credentials": serde_json::from_str::<serde_json::Value>(ENV).unwrap()}),
        );
        assert!(!admits(&bare, "team-a", &labels(&[])));
        let problem = check_namespace(&bare, "team-a", &labels(&[])).unwrap_err();
        assert_eq!(problem.reason, Reason::NotPermitted);
        assert!(problem.message.contains("TwilioAccount default") && problem.message.contains("team-a"));
    }

    #[test]
    fn namespaces_are_admitted_by_name_or_label() {
        let mut a = account(
            serde_json::json!({"credentials": {"fromEnvironment": true}, "namespaces": {"names": ["team-a"]}}),
        );
        assert!(admits(&a, "team-a", &labels(&[])) && !admits(&a, "team-b", &labels(&[])));
        a.spec.namespaces.selector = Some(LabelSelector {
            match_labels: Some(labels(&[("tenant", "true")])),
            ..Default::default()
        });
        assert!(admits(&a, "team-b", &labels(&[("tenant", "true")])));
        assert!(!admits(&a, "team-b", &labels(&[("tenant", "false")])));
        a.spec.namespaces.selector = Some(LabelSelector::default());
        assert!(
            admits(&a, "anything", &labels(&[])),
            "an empty selector admits every namespace"
        );
    }

    #[test]
    fn key_types_and_permissions_follow_the_policy() {
        let a = account(serde_json::json!({
            "credentials": {"fromEnvironment": true},
            "apiKeys": {"keyTypes": ["Restricted"], "permissions": ["/twilio/messaging/*", "/twilio/voice/calls/read"]}
        }));
        assert!(
            check_key(&a, KeyType::Standard, &[])
                .unwrap_err()
                .message
                .contains("Standard")
        );
        let ok = [
            "/twilio/messaging/messages/create".to_owned(),
            "/twilio/voice/calls/read".to_owned(),
        ];
        assert!(check_key(&a, KeyType::Restricted, &ok).is_ok());
        let denied = check_key(
            &a,
            KeyType::Restricted,
            &["/twilio/voice/calls/create".to_owned()],
        )
        .unwrap_err();
        assert!(
            denied.message.contains("/twilio/voice/calls/create"),
            "{}",
            denied.message
        );
        assert!(
            !permits("/twilio/messaging/*", "/twilio/messagingx/read"),
            "a prefix ends at a segment"
        );
        assert!(permits("/*", "/twilio/anything"));
        let defaults = account(serde_json::json!({"credentials": {"fromEnvironment": true}}));
        assert!(
            check_key(&defaults, KeyType::Standard, &[]).is_ok(),
            "both types by default"
        );
    }

    #[test]
    fn subaccount_rules_default_to_create_yes_adopt_no_close_no() {
        let mut a = account(serde_json::json!({"credentials": {"fromEnvironment": true}}));
        let sid = format!("AC{}", "a".repeat(32));
        assert!(check_create(&a).is_ok());
        assert!(check_adopt(&a, &sid, "team-a").is_err());
        assert!(check_deletion_policy(&a, SubaccountDeletionPolicy::Suspend).is_ok());
        assert!(
            check_deletion_policy(&a, SubaccountDeletionPolicy::Close)
                .unwrap_err()
                .message
                .contains("Close")
        );
        a.spec.subaccounts.adopt.push(AdoptGrant {
            sid: sid.clone(),
            namespace: "team-a".into(),
        });
        a.spec.subaccounts.create = false;
        assert!(check_adopt(&a, &sid, "team-a").is_ok());
        assert!(
            check_adopt(&a, &sid, "team-b").is_err(),
            "a grant names one namespace"
        );
        assert!(check_create(&a).is_err());
    }

    #[test]
    fn voice_permissions_follow_the_policy() {
        let mut a = account(serde_json::json!({"credentials": {"fromEnvironment": true}}));
        let voice = |v: serde_json::Value| -> SubaccountVoice {
            serde_json::from_value(serde_json::json!({"dialingPermissions": v})).expect("a voice spec")
        };
        let us = voice(serde_json::json!({"countries": [{"isoCode": "US"}]}));
        let toll = voice(serde_json::json!({"countries": [{"isoCode": "US", "highRiskTollFraud": true}]}));
        let inherit = voice(serde_json::json!({"inherit": true}));
        assert!(check_voice(&a, None).is_ok(), "declaring is optional by default");
        assert!(check_voice(&a, Some(&us)).is_ok());
        let refusal = check_voice(&a, Some(&toll)).unwrap_err().message;
        assert!(
            refusal.contains("highRisk: Forbid") && refusal.contains("US"),
            "{refusal}"
        );
        assert!(
            check_voice(&a, Some(&inherit)).is_err(),
            "the default policy restricts"
        );
        a.spec.subaccounts.voice.high_risk = HighRiskPolicy::Allow;
        assert!(check_voice(&a, Some(&toll)).is_ok());
        assert!(check_voice(&a, Some(&inherit)).is_ok(), "nothing restricted");
        a.spec.subaccounts.voice.countries = Some(vec!["CA".into()]);
        let refusal = check_voice(&a, Some(&us)).unwrap_err().message;
        assert!(refusal.contains("dialing US"), "{refusal}");
        a.spec.subaccounts.voice.countries = None;
        a.spec.subaccounts.voice.required = true;
        assert!(check_voice(&a, None).unwrap_err().message.contains("required"));
        assert!(
            check_voice(&a, Some(&inherit)).is_err(),
            "required means inherit: false"
        );
    }

    #[test]
    fn budgets_follow_the_policy() {
        use crate::api::subaccount::BudgetAction;
        let budget = |monthly: &str, action: BudgetAction| Budget {
            monthly: monthly.into(),
            warn_at: vec![80],
            action,
        };
        let free = account(serde_json::json!({"credentials": {"fromEnvironment": true}}));
        assert!(check_budget(&free, None).is_ok(), "no policy, no budget needed");
        let strict = account(serde_json::json!({
            "credentials": {"fromEnvironment": true},
            "subaccounts": {"budget": {"required": true, "maxMonthly": "100.00", "actions": ["Suspend"]}},
        }));
        let missing = check_budget(&strict, None).unwrap_err();
        assert_eq!(missing.reason, Reason::NotPermitted);
        assert!(
            missing.message.contains("requires spec.budget"),
            "{}",
            missing.message
        );
        let over = check_budget(&strict, Some(&budget("100.01", BudgetAction::Suspend))).unwrap_err();
        assert!(over.message.contains("maxMonthly"), "{}", over.message);
        assert!(check_budget(&strict, Some(&budget("100", BudgetAction::Suspend))).is_ok());
        let alert = check_budget(&strict, Some(&budget("5", BudgetAction::Alert))).unwrap_err();
        assert!(
            alert.message.contains("spec.budget.action Alert"),
            "{}",
            alert.message
        );
    }
}
