//! Voice dialing geo permissions: what a subaccount's spec and its TwilioAccount's policy want
//! Twilio to hold, and the fewest writes that get it there. Pure.
//!
//! A declaration with `inherit: false` is deny by default: every country it does not list is
//! disabled. The policy narrows whatever is wanted (a declaration, or what Twilio holds when the
//! policy requires one and none is made) to the countries and ranges it allows, so a guardrail
//! never fails open; [`narrow`] also says what it took away, for the refusal and the event.

use crate::api::account::{HighRiskPolicy, VoicePolicy};
use crate::api::subaccount::{CountryPermission, DialingPermissions};
use crate::twilio::types::DialingCountry;
use std::collections::BTreeMap;

/// The condition reporting whether Twilio holds the declared permissions, beside Ready.
pub const CONDITION: &str = "DialingPermissions";

/// What may be dialled in one country.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// Ordinary numbers.
    pub low_risk: bool,
    /// Premium and shared-cost ranges.
    pub high_risk_special: bool,
    /// The ranges Twilio sees used for revenue-share fraud.
    pub high_risk_toll_fraud: bool,
}

impl Flags {
    /// Whether any number of the country may be dialled.
    pub fn enabled(self) -> bool {
        self.low_risk || self.high_risk()
    }

    /// Whether a high-risk range of the country may be dialled.
    pub fn high_risk(self) -> bool {
        self.high_risk_special || self.high_risk_toll_fraud
    }

    fn of(country: &DialingCountry) -> Self {
        Self {
            low_risk: country.low_risk_numbers_enabled,
            high_risk_special: country.high_risk_special_numbers_enabled,
            high_risk_toll_fraud: country.high_risk_tollfraud_numbers_enabled,
        }
    }

    fn declared(country: &CountryPermission) -> Self {
        Self {
            low_risk: country.low_risk,
            high_risk_special: country.high_risk_special,
            high_risk_toll_fraud: country.high_risk_toll_fraud,
        }
    }

    fn update(self, iso_code: &str) -> DialingCountry {
        DialingCountry {
            iso_code: iso_code.to_owned(),
            low_risk_numbers_enabled: self.low_risk,
            high_risk_special_numbers_enabled: self.high_risk_special,
            high_risk_tollfraud_numbers_enabled: self.high_risk_toll_fraud,
        }
    }
}

/// What Twilio should hold for one subaccount.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Wanted {
    /// The parent account's permissions.
    Inherit,
    /// Its own: the countries listed, with their flags; every other country disabled.
    Own(BTreeMap<String, Flags>),
}

impl Wanted {
    /// What a spec's `dialingPermissions` declares.
    pub fn declared(permissions: &DialingPermissions) -> Self {
        if permissions.inherit {
            return Self::Inherit;
        }
        Self::Own(
            permissions
                .countries
                .iter()
                .map(|c| (c.iso_code.clone(), Flags::declared(c)))
                .filter(|(_, flags)| flags.enabled())
                .collect(),
        )
    }

    /// What Twilio holds now, taken as the subaccount's own: the base a policy narrows when
    /// it requires a declaration and the spec makes none.
    pub fn held(observed: &Observed) -> Self {
        Self::Own(observed.enabled().map(|(iso, f)| (iso.to_owned(), f)).collect())
    }
}

/// What Twilio reported: whether the subaccount inherits, and the flags of every country it
/// lists (the parent's while it inherits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Whether the parent's permissions apply.
    pub inherit: bool,
    /// Every country Twilio lists, by ISO code.
    pub countries: BTreeMap<String, Flags>,
}

impl Observed {
    /// `inherit` and the countries Twilio listed.
    pub fn new(inherit: bool, countries: &[DialingCountry]) -> Self {
        Self {
            inherit,
            countries: countries
                .iter()
                .map(|c| (c.iso_code.clone(), Flags::of(c)))
                .collect(),
        }
    }

    fn enabled(&self) -> impl Iterator<Item = (&str, Flags)> {
        self.countries
            .iter()
            .filter(|(_, f)| f.enabled())
            .map(|(iso, f)| (iso.as_str(), *f))
    }

    /// How many countries may be dialled, and which of them (ISO codes) have a high-risk range
    /// enabled.
    pub fn summary(&self) -> (u32, Vec<String>) {
        let enabled = u32::try_from(self.enabled().count()).unwrap_or(u32::MAX);
        let high_risk = self
            .enabled()
            .filter(|(_, f)| f.high_risk())
            .map(|(iso, _)| iso.to_owned())
            .collect();
        (enabled, high_risk)
    }
}

/// Whether `policy` restricts anything (requiring a declaration included), which rules out
/// inheriting the parent's permissions: those are the admin's own and answer to no policy.
pub fn restricts(policy: &VoicePolicy) -> bool {
    policy.required || policy.countries.is_some() || policy.high_risk == HighRiskPolicy::Forbid
}

/// `wanted` held to `policy`, and what the policy took away (each a phrase such as "GB",
/// "inherit: true" or "US high-risk ranges"). Inheriting under a restricting policy becomes the
/// countries `observed` shows enabled, narrowed in turn.
pub fn narrow(wanted: &Wanted, policy: &VoicePolicy, observed: &Observed) -> (Wanted, Vec<String>) {
    let mut removed = Vec::new();
    let own = match wanted {
        Wanted::Inherit if !restricts(policy) => return (Wanted::Inherit, removed),
        Wanted::Inherit => {
            removed.push("inherit: true".to_owned());
            match Wanted::held(observed) {
                Wanted::Own(countries) => countries,
                Wanted::Inherit => unreachable!("held permissions are the subaccount's own"),
            }
        }
        Wanted::Own(countries) => countries.clone(),
    };
    let narrowed = own
        .into_iter()
        .filter_map(|(iso, mut flags)| {
            if let Some(allowed) = &policy.countries
                && !allowed.contains(&iso)
            {
                removed.push(iso);
                return None;
            }
            if policy.high_risk == HighRiskPolicy::Forbid && flags.high_risk() {
                removed.push(format!("{iso} high-risk ranges"));
                flags.high_risk_special = false;
                flags.high_risk_toll_fraud = false;
            }
            flags.enabled().then_some((iso, flags))
        })
        .collect();
    (Wanted::Own(narrowed), removed)
}

/// The writes that bring Twilio from `observed` to `wanted`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Countries to write, each with all its flags, before any change of inheritance.
    pub updates: Vec<DialingCountry>,
    /// The inheritance to set, after the updates, when it differs.
    pub inherit: Option<bool>,
    /// Declared countries Twilio does not list, which cannot be enabled.
    pub unknown: Vec<String>,
    /// What the writes change, one phrase per country (such as "GB enabled" or "US high-risk
    /// toll fraud off"), or "inheritance on/off".
    pub changes: Vec<String>,
}

impl Plan {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.inherit.is_none()
    }
}

/// The plan from `observed` to `wanted`. Only the countries that differ are written. While the
/// subaccount inherits, Twilio shows the parent's permissions, not its own, so leaving
/// inheritance writes every country Twilio lists first and turns inheritance off last: the
/// subaccount's own permissions never apply before they are the declared ones.
pub fn plan(wanted: &Wanted, observed: &Observed) -> Plan {
    let mut plan = Plan::default();
    let Wanted::Own(own) = wanted else {
        if !observed.inherit {
            plan.inherit = Some(true);
            plan.changes.push("inheritance on".to_owned());
        }
        return plan;
    };
    plan.unknown = own
        .keys()
        .filter(|iso| !observed.countries.contains_key(*iso))
        .cloned()
        .collect();
    for (iso, held) in &observed.countries {
        let flags = own.get(iso).copied().unwrap_or_default();
        if observed.inherit || flags != *held {
            plan.updates.push(flags.update(iso));
        }
        if flags != *held {
            plan.changes.push(change(iso, *held, flags));
        }
    }
    if observed.inherit {
        plan.inherit = Some(false);
        plan.changes.push("inheritance off".to_owned());
    }
    plan
}

/// What became of one country, in words.
fn change(iso: &str, from: Flags, to: Flags) -> String {
    if !to.enabled() {
        return format!("{iso} disabled");
    }
    if !from.enabled() && !to.high_risk() {
        return format!("{iso} enabled");
    }
    let on = |b: bool| if b { "on" } else { "off" };
    let flags = [
        ("low-risk", from.low_risk, to.low_risk),
        ("high-risk special", from.high_risk_special, to.high_risk_special),
        (
            "high-risk toll fraud",
            from.high_risk_toll_fraud,
            to.high_risk_toll_fraud,
        ),
    ];
    let said: Vec<String> = flags
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, _, b)| format!("{name} {}", on(*b)))
        .collect();
    format!("{iso} {}", said.join(", "))
}

/// Twilio's state once `plan` is carried out over `observed` (while it goes on inheriting, what
/// it showed).
pub fn after(observed: &Observed, plan: &Plan) -> Observed {
    let mut next = observed.clone();
    for update in &plan.updates {
        next.countries.insert(update.iso_code.clone(), Flags::of(update));
    }
    if let Some(inherit) = plan.inherit {
        next.inherit = inherit;
    }
    next
}

/// `phrases` for a message: the first few, and how many more.
pub fn listed(phrases: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut text = phrases.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if phrases.len() > SHOWN {
        text.push_str(&format!(" and {} more", phrases.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn low() -> Flags {
        Flags {
            low_risk: true,
            ..Flags::default()
        }
    }

    fn observed(inherit: bool, enabled: &[(&str, Flags)]) -> Observed {
        let mut countries: BTreeMap<String, Flags> = ["US", "CA", "GB", "FR", "CU"]
            .into_iter()
            .map(|iso| (iso.to_owned(), Flags::default()))
            .collect();
        for (iso, flags) in enabled {
            countries.insert((*iso).to_owned(), *flags);
        }
        Observed { inherit, countries }
    }

    fn own(countries: &[(&str, Flags)]) -> Wanted {
        Wanted::Own(countries.iter().map(|(i, f)| ((*i).to_owned(), *f)).collect())
    }

    fn policy(countries: Option<&[&str]>, high_risk: HighRiskPolicy) -> VoicePolicy {
        VoicePolicy {
            countries: countries.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
            high_risk,
            required: false,
        }
    }

    #[test]
    fn writes_only_the_countries_that_differ() {
        let now = observed(false, &[("US", low()), ("GB", low())]);
        let plan = plan(&own(&[("US", low()), ("CA", low())]), &now);
        let written: Vec<&str> = plan.updates.iter().map(|u| u.iso_code.as_str()).collect();
        assert_eq!(written, ["CA", "GB"], "{plan:?}");
        assert_eq!(plan.changes, ["CA enabled", "GB disabled"]);
        assert_eq!(plan.inherit, None);
        let then = after(&now, &plan);
        assert!(super::plan(&own(&[("US", low()), ("CA", low())]), &then).is_empty());
    }

    #[test]
    fn leaving_inheritance_writes_every_country_then_turns_it_off() {
        let now = observed(true, &[("US", low())]);
        let plan = plan(&own(&[("US", low())]), &now);
        assert_eq!(
            plan.updates.len(),
            5,
            "the own settings are unknown while inheriting"
        );
        assert_eq!(plan.inherit, Some(false));
        assert_eq!(plan.changes, ["inheritance off"]);
        let back = super::plan(&Wanted::Inherit, &after(&now, &plan));
        assert_eq!(back.inherit, Some(true));
        assert!(back.updates.is_empty());
    }

    #[test]
    fn names_high_risk_changes_and_unknown_countries() {
        let toll = Flags {
            high_risk_toll_fraud: true,
            ..low()
        };
        let now = observed(false, &[("CU", toll)]);
        let plan = plan(&own(&[("CU", low()), ("ZZ", low())]), &now);
        assert_eq!(plan.changes, ["CU high-risk toll fraud off"]);
        assert_eq!(plan.unknown, ["ZZ"]);
        assert_eq!(after(&now, &plan).summary(), (1, vec![]));
        assert_eq!(now.summary(), (1, vec!["CU".to_owned()]));
    }

    #[test]
    fn a_policy_narrows_countries_ranges_and_inheritance() {
        let special = Flags {
            high_risk_special: true,
            ..low()
        };
        let now = observed(true, &[("US", low()), ("FR", low())]);
        let strict = policy(Some(&["US", "CA"]), HighRiskPolicy::Forbid);
        let (wanted, removed) = narrow(&own(&[("US", special), ("GB", low())]), &strict, &now);
        assert_eq!(wanted, own(&[("US", low())]));
        assert_eq!(removed, ["GB", "US high-risk ranges"]);
        let (wanted, removed) = narrow(&Wanted::Inherit, &strict, &now);
        assert_eq!(wanted, own(&[("US", low())]), "what it inherited, narrowed");
        assert_eq!(removed, ["inherit: true", "FR"]);
        let open = policy(None, HighRiskPolicy::Allow);
        assert!(!restricts(&open));
        assert_eq!(narrow(&Wanted::Inherit, &open, &now), (Wanted::Inherit, vec![]));
        assert!(
            restricts(&VoicePolicy::default()),
            "high-risk ranges are forbidden by default"
        );
        let required = VoicePolicy {
            required: true,
            ..open
        };
        let (wanted, removed) = narrow(&Wanted::Inherit, &required, &now);
        assert_eq!(
            wanted,
            own(&[("US", low()), ("FR", low())]),
            "required means its own"
        );
        assert_eq!(removed, ["inherit: true"]);
    }

    #[test]
    fn a_long_list_is_cut() {
        let many: Vec<String> = (0..10).map(|i| format!("C{i}")).collect();
        assert_eq!(listed(&many), "C0, C1, C2, C3, C4, C5, C6, C7 and 2 more");
    }
}
