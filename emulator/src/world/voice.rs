//! Voice dialing geo permissions, per account: which countries may be dialled, and whether each
//! country's high-risk special and toll-fraud ranges may be. A subaccount inherits its parent's
//! permissions until it turns `DialingPermissionsInheritance` off; then its own apply, starting
//! from Twilio's default (low-risk numbers in the US and Canada only).

use super::{ApiError, World};
use std::collections::BTreeMap;

/// A country Twilio lists: ISO code, name, continent and calling codes.
pub struct Country {
    pub iso_code: &'static str,
    pub name: &'static str,
    pub continent: &'static str,
    pub country_codes: &'static [&'static str],
}

/// A sample of Twilio's country list, with every continent and the high-risk destinations toll
/// fraud favours.
pub const COUNTRIES: [Country; 16] = [
    Country {
        iso_code: "AU",
        name: "Australia",
        continent: "OCEANIA",
        country_codes: &["+61"],
    },
    Country {
        iso_code: "BR",
        name: "Brazil",
        continent: "SOUTH_AMERICA",
        country_codes: &["+55"],
    },
    Country {
        iso_code: "CA",
        name: "Canada",
        continent: "NORTH_AMERICA",
        country_codes: &["+1"],
    },
    Country {
        iso_code: "CU",
        name: "Cuba",
        continent: "NORTH_AMERICA",
        country_codes: &["+53"],
    },
    Country {
        iso_code: "DE",
        name: "Germany",
        continent: "EUROPE",
        country_codes: &["+49"],
    },
    Country {
        iso_code: "FR",
        name: "France",
        continent: "EUROPE",
        country_codes: &["+33"],
    },
    Country {
        iso_code: "GB",
        name: "United Kingdom",
        continent: "EUROPE",
        country_codes: &["+44"],
    },
    Country {
        iso_code: "IN",
        name: "India",
        continent: "ASIA",
        country_codes: &["+91"],
    },
    Country {
        iso_code: "JP",
        name: "Japan",
        continent: "ASIA",
        country_codes: &["+81"],
    },
    Country {
        iso_code: "LV",
        name: "Latvia",
        continent: "EUROPE",
        country_codes: &["+371"],
    },
    Country {
        iso_code: "MX",
        name: "Mexico",
        continent: "NORTH_AMERICA",
        country_codes: &["+52"],
    },
    Country {
        iso_code: "NG",
        name: "Nigeria",
        continent: "AFRICA",
        country_codes: &["+234"],
    },
    Country {
        iso_code: "SN",
        name: "Senegal",
        continent: "AFRICA",
        country_codes: &["+221"],
    },
    Country {
        iso_code: "SO",
        name: "Somalia",
        continent: "AFRICA",
        country_codes: &["+252"],
    },
    Country {
        iso_code: "TV",
        name: "Tuvalu",
        continent: "OCEANIA",
        country_codes: &["+688"],
    },
    Country {
        iso_code: "US",
        name: "United States/Canada",
        continent: "NORTH_AMERICA",
        country_codes: &["+1"],
    },
];

/// What may be dialled in one country.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permission {
    pub low_risk: bool,
    pub high_risk_special: bool,
    pub high_risk_tollfraud: bool,
}

/// One account's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialing {
    /// Whether a subaccount uses its parent's permissions instead of its own.
    pub inherit: bool,
    pub countries: BTreeMap<&'static str, Permission>,
}

impl Dialing {
    fn default_for(subaccount: bool) -> Self {
        let low = Permission {
            low_risk: true,
            ..Permission::default()
        };
        Self {
            inherit: subaccount,
            countries: COUNTRIES
                .iter()
                .map(|c| {
                    (
                        c.iso_code,
                        if matches!(c.iso_code, "US" | "CA") {
                            low
                        } else {
                            Permission::default()
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One change of a bulk update: the country, and the flags it sets.
pub struct CountryUpdate {
    pub iso_code: String,
    pub low_risk: Option<bool>,
    pub high_risk_special: Option<bool>,
    pub high_risk_tollfraud: Option<bool>,
}

impl World {
    fn dialing_mut(&mut self, account: &str) -> &mut Dialing {
        let subaccount = self.accounts.get(account).is_some_and(|a| a.owner.is_some());
        self.dialing
            .entry(account.to_owned())
            .or_insert_with(|| Dialing::default_for(subaccount))
    }

    /// Whether `account` inherits its parent's permissions (a main account never does).
    pub fn dialing_inherits(&mut self, account: &str) -> bool {
        self.dialing_mut(account).inherit
    }

    /// Turns inheritance on or off for `account`; a main account has nothing to inherit from.
    pub fn set_dialing_inheritance(&mut self, account: &str, inherit: bool) -> Result<(), ApiError> {
        let main = self.accounts.get(account).is_some_and(|a| a.owner.is_none());
        if main && inherit {
            return Err(ApiError::new(
                400,
                20001,
                "A main account has no parent to inherit dialing permissions from",
            ));
        }
        self.dialing_mut(account).inherit = inherit;
        Ok(())
    }

    /// The permissions that apply to `account`: its parent's while it inherits, else its own.
    pub fn dialing_permissions(&mut self, account: &str) -> BTreeMap<&'static str, Permission> {
        let parent = self.accounts.get(account).and_then(|a| a.owner.clone());
        match parent {
            Some(parent) if self.dialing_mut(account).inherit => self.dialing_mut(&parent).countries.clone(),
            _ => self.dialing_mut(account).countries.clone(),
        }
    }

    /// Applies `updates` to `account`'s own permissions, all or none; returns how many there were.
    pub fn update_dialing(&mut self, account: &str, updates: &[CountryUpdate]) -> Result<usize, ApiError> {
        let invalid = |message: String| ApiError::new(400, 20001, message);
        if updates.is_empty() || updates.len() > 100 {
            return Err(invalid("UpdateRequest must hold 1 to 100 country updates".into()));
        }
        let mut changed = Vec::new();
        for update in updates {
            let iso = COUNTRIES
                .iter()
                .find(|c| c.iso_code == update.iso_code)
                .map(|c| c.iso_code)
                .ok_or_else(|| invalid(format!("Unknown iso_code {}", update.iso_code)))?;
            changed.push((iso, update));
        }
        let own = &mut self.dialing_mut(account).countries;
        for (iso, update) in &changed {
            let permission = own.entry(iso).or_default();
            permission.low_risk = update.low_risk.unwrap_or(permission.low_risk);
            permission.high_risk_special = update.high_risk_special.unwrap_or(permission.high_risk_special);
            permission.high_risk_tollfraud = update
                .high_risk_tollfraud
                .unwrap_or(permission.high_risk_tollfraud);
        }
        Ok(changed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::tests::world;

    fn update(iso: &str, low: bool, tollfraud: bool) -> CountryUpdate {
        CountryUpdate {
            iso_code: iso.into(),
            low_risk: Some(low),
            high_risk_special: None,
            high_risk_tollfraud: Some(tollfraud),
        }
    }

    #[test]
    fn a_subaccount_follows_its_parent_until_it_stops_inheriting() {
        let (mut world, caller) = world();
        let sub = world.create_subaccount(&caller, None).unwrap().sid;
        let main = caller.account_sid;
        assert!(world.dialing_inherits(&sub) && !world.dialing_inherits(&main));
        world.update_dialing(&main, &[update("DE", true, false)]).unwrap();
        assert!(
            world.dialing_permissions(&sub)["DE"].low_risk,
            "inherited from the parent"
        );
        world.set_dialing_inheritance(&sub, false).unwrap();
        assert!(
            !world.dialing_permissions(&sub)["DE"].low_risk,
            "its own list, from the defaults"
        );
        assert!(world.dialing_permissions(&sub)["US"].low_risk);
        world.update_dialing(&sub, &[update("CU", true, true)]).unwrap();
        assert!(world.dialing_permissions(&sub)["CU"].high_risk_tollfraud);
        assert!(
            !world.dialing_permissions(&main)["CU"].low_risk,
            "the parent is untouched"
        );
        assert_eq!(
            world.set_dialing_inheritance(&main, true).unwrap_err().status,
            400
        );
    }

    #[test]
    fn a_bulk_update_is_all_or_none() {
        let (mut world, main) = world();
        let main = main.account_sid;
        let err = world
            .update_dialing(&main, &[update("DE", true, false), update("XX", true, false)])
            .unwrap_err();
        assert!(err.message.contains("XX"), "{}", err.message);
        assert!(
            !world.dialing_permissions(&main)["DE"].low_risk,
            "nothing applied"
        );
        assert!(world.update_dialing(&main, &[]).is_err());
    }
}
