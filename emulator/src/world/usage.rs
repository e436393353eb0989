//! Spend and usage triggers: month-to-date spend per account on the emulated clock, and price
//! triggers that fire once per recurrence period, calling their URL signed as Twilio signs
//! webhooks.

use super::{ApiError, World, check_friendly_name};
use crate::ids;
use jiff::Timestamp;

#[derive(Debug, Clone)]
pub struct Trigger {
    pub seq: u64,
    pub sid: String,
    pub account_sid: String,
    pub friendly_name: Option<String>,
    pub usage_category: String,
    pub trigger_by: String,
    pub trigger_value: String,
    pub recurring: Option<String>,
    pub callback_url: String,
    pub callback_method: String,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// The value at which it fires; `None` when trigger_value is not a number.
    pub fires_at: Option<f64>,
    /// When it last fired, and the period (by its recurrence) it fired for.
    pub fired: Option<(Timestamp, String)>,
    /// How often it has fired.
    pub fires: u64,
}

/// A trigger's call to its callback URL, signed as Twilio signs webhooks.
#[derive(Debug, Clone)]
pub struct Callback {
    pub url: String,
    pub method: String,
    pub params: Vec<(String, String)>,
    /// `X-Twilio-Signature`: base64 HMAC-SHA1, keyed with the account's auth token, of the URL
    /// followed by each parameter's name and value, sorted by name.
    pub signature: String,
}

/// The fields of a usage trigger create.
pub struct NewTrigger {
    pub callback_url: String,
    pub trigger_value: String,
    pub usage_category: String,
    pub callback_method: Option<String>,
    pub friendly_name: Option<String>,
    pub recurring: Option<String>,
    pub trigger_by: Option<String>,
}

impl World {
    pub fn create_trigger(&mut self, account_sid: &str, new: NewTrigger) -> Result<Trigger, ApiError> {
        let friendly_name = new
            .friendly_name
            .map(|n| check_friendly_name(n, 20002, "Invalid FriendlyName"))
            .transpose()?;
        let now = Timestamp::now();
        let seq = self.next_seq();
        let trigger = Trigger {
            seq,
            sid: ids::sid("UT"),
            account_sid: account_sid.to_owned(),
            friendly_name,
            usage_category: new.usage_category,
            trigger_by: new.trigger_by.unwrap_or_else(|| "usage".into()),
            // "+30" is 30 above the value when the trigger is made.
            fires_at: match new.trigger_value.strip_prefix('+') {
                Some(offset) => offset.parse::<f64>().ok().map(|o| self.spend(account_sid) + o),
                None => new.trigger_value.parse::<f64>().ok(),
            },
            trigger_value: new.trigger_value,
            recurring: new.recurring.filter(|r| !r.is_empty()),
            callback_url: new.callback_url,
            callback_method: new.callback_method.unwrap_or_else(|| "POST".into()),
            created: now,
            updated: now,
            fired: None,
            fires: 0,
        };
        self.triggers.insert(trigger.sid.clone(), trigger.clone());
        Ok(trigger)
    }

    /// Points trigger `sid` of `account_sid` elsewhere or renames it; value, category and
    /// recurrence cannot change, as at Twilio.
    pub fn update_trigger(
        &mut self,
        account_sid: &str,
        sid: &str,
        callback_url: Option<String>,
        callback_method: Option<String>,
        friendly_name: Option<String>,
        path: &str,
    ) -> Result<Trigger, ApiError> {
        let friendly_name = friendly_name
            .map(|n| check_friendly_name(n, 20002, "Invalid FriendlyName"))
            .transpose()?;
        let now = self.now();
        let trigger = self
            .triggers
            .get_mut(sid)
            .filter(|t| t.account_sid == account_sid)
            .ok_or_else(|| ApiError::not_found(path))?;
        if let Some(url) = callback_url {
            trigger.callback_url = url;
        }
        if let Some(method) = callback_method {
            trigger.callback_method = method;
        }
        if friendly_name.is_some() {
            trigger.friendly_name = friendly_name;
        }
        trigger.updated = now;
        Ok(trigger.clone())
    }

    /// Month-to-date spend of `account_sid`: nothing yet in a month it recorded nothing for.
    pub fn spend(&self, account_sid: &str) -> f64 {
        let account = &self.accounts[account_sid];
        if account.usage_period == self.period() {
            account.usage_total
        } else {
            0.0
        }
    }

    /// Sets the month-to-date spend of `account_sid`.
    pub fn set_spend(&mut self, account_sid: &str, total: f64) {
        let period = self.period();
        if let Some(account) = self.accounts.get_mut(account_sid) {
            account.usage_total = total;
            account.usage_period = period;
        }
    }

    /// Fires every price trigger on total price whose value this month's spend has reached and
    /// that has not fired in its period yet; returns the calls to make.
    pub fn fire_triggers(&mut self) -> Vec<Callback> {
        let now = self.now();
        let utc = now.to_zoned(jiff::tz::TimeZone::UTC);
        let mut due = Vec::new();
        for trigger in self.triggers.values() {
            if trigger.usage_category != "totalprice" || trigger.trigger_by != "price" {
                continue;
            }
            let period = match trigger.recurring.as_deref() {
                Some("daily") => utc.strftime("%Y-%m-%d").to_string(),
                Some("monthly") => utc.strftime("%Y-%m").to_string(),
                Some("yearly") => utc.strftime("%Y").to_string(),
                _ => "once".to_owned(),
            };
            let current = self.spend(&trigger.account_sid);
            let reached = trigger.fires_at.is_some_and(|value| current >= value);
            let fired = trigger.fired.as_ref().is_some_and(|(_, p)| *p == period);
            if reached && !fired {
                due.push((trigger.sid.clone(), period, current));
            }
        }
        let mut calls = Vec::new();
        for (sid, period, current) in due {
            let trigger = self.triggers.get_mut(&sid).expect("listed above");
            trigger.fired = Some((now, period.clone()));
            trigger.fires += 1;
            let trigger = trigger.clone();
            let token = &self.accounts[&trigger.account_sid].auth_token;
            let params: Vec<(String, String)> = [
                ("AccountSid", trigger.account_sid.clone()),
                ("UsageTriggerSid", trigger.sid.clone()),
                ("DateFired", ids::rfc2822(now)),
                ("Recurring", trigger.recurring.clone().unwrap_or_default()),
                ("UsageCategory", trigger.usage_category.clone()),
                ("TriggerBy", trigger.trigger_by.clone()),
                ("TriggerValue", trigger.trigger_value.clone()),
                ("CurrentValue", format!("{current}")),
                (
                    "UsageRecordUri",
                    format!(
                        "/2010-04-01/Accounts/{}/Usage/Records.json?Category={}",
                        trigger.account_sid, trigger.usage_category
                    ),
                ),
                (
                    "IdempotencyToken",
                    format!("{}-FIRES-{}-{period}", trigger.account_sid, trigger.sid),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let signature = ids::webhook_signature(token, &trigger.callback_url, &params);
            calls.push(Callback {
                url: trigger.callback_url.clone(),
                method: trigger.callback_method.clone(),
                params,
                signature,
            });
        }
        calls
    }

    pub fn account_triggers(&self, account_sid: &str) -> Vec<Trigger> {
        let mut triggers: Vec<Trigger> = self
            .triggers
            .values()
            .filter(|t| t.account_sid == account_sid)
            .cloned()
            .collect();
        triggers.sort_by_key(|t| t.seq);
        triggers
    }
}
