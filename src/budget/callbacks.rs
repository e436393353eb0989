//! What the operator knows of the calls Twilio's usage triggers make to it: the public URL they
//! call, which object each subaccount's triggers call about, and when calls arrived. Shared by
//! the usage-trigger endpoint (`webhook`), which records calls, and the subaccount reconciler's
//! spend step, which routes triggers and reads spend when a call asks. No I/O.
//!
//! A verified call wakes its object at most once per [`CALLBACK_SPACING`]; one within it is not
//! dropped but wakes the object once the spacing has passed.

use super::reads::CALLBACK_SPACING;
use k8s_openapi::jiff::Timestamp;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The usage-trigger calls of every subaccount, and where Twilio sends them.
#[derive(Default)]
pub struct Callbacks {
    /// The public base URL Twilio reaches the operator's usage-trigger endpoint at, if any.
    base: Option<String>,
    by_sid: Mutex<HashMap<String, SubaccountCalls>>,
}

/// The usage-trigger calls about one subaccount.
#[derive(Default)]
struct SubaccountCalls {
    /// The TwilioSubaccount `(namespace, name)` its budget triggers call about.
    object: Option<(String, String)>,
    /// When a verified call last arrived.
    arrived: Option<Timestamp>,
    /// When one last woke the object.
    woke: Option<Timestamp>,
    /// Whether a wake is already scheduled.
    pending: bool,
}

/// When a verified call wakes its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Now.
    Now,
    /// After this long: one woke it less than [`CALLBACK_SPACING`] ago.
    After(Duration),
    /// A wake is already scheduled.
    Pending,
}

/// The path of the callback URL of TwilioSubaccount `namespace/name`.
pub fn path(namespace: &str, name: &str) -> String {
    format!("/usage-triggers/{namespace}/{name}")
}

impl Callbacks {
    /// Calls reaching the operator at public base URL `base`; `None` when Twilio cannot reach it.
    pub fn new(base: Option<String>) -> Self {
        Self {
            base: base.map(|b| b.trim_end_matches('/').to_owned()),
            by_sid: Mutex::default(),
        }
    }

    /// The public base URL of the usage-trigger endpoint, if there is one.
    pub fn base(&self) -> Option<&str> {
        self.base.as_deref()
    }

    /// The URL Twilio calls for the budget of TwilioSubaccount `namespace/name`, when the
    /// operator is reachable from Twilio.
    pub fn url(&self, namespace: &str, name: &str) -> Option<String> {
        let base = self.base.as_deref()?;
        Some(format!("{base}{}", path(namespace, name)))
    }

    /// Records a verified call about subaccount `sid` at `now`, and says when it wakes the object.
    pub fn arrived(&self, sid: &str, now: Timestamp) -> Wake {
        let mut by_sid = self.by_sid.lock().expect("callback memory");
        let entry = by_sid.entry(sid.to_owned()).or_default();
        entry.arrived = Some(now);
        if entry.pending {
            return Wake::Pending;
        }
        let since = entry.woke.map(|w| now.duration_since(w).unsigned_abs());
        match since {
            Some(since) if since < CALLBACK_SPACING => {
                entry.pending = true;
                Wake::After(CALLBACK_SPACING - since)
            }
            _ => {
                entry.woke = Some(now);
                Wake::Now
            }
        }
    }

    /// Records that the wake [`Callbacks::arrived`] scheduled for `sid` happens at `now`.
    pub fn woke_late(&self, sid: &str, now: Timestamp) {
        if let Some(entry) = self.by_sid.lock().expect("callback memory").get_mut(sid) {
            entry.pending = false;
            entry.woke = Some(now);
        }
    }

    /// When a verified call about subaccount `sid` last arrived.
    pub fn last_arrival(&self, sid: &str) -> Option<Timestamp> {
        let by_sid = self.by_sid.lock().expect("callback memory");
        by_sid.get(sid).and_then(|c| c.arrived)
    }

    /// Records that the budget triggers of subaccount `sid` call about TwilioSubaccount
    /// `namespace/name`; `None`: about no object.
    pub fn route(&self, sid: &str, object: Option<(&str, &str)>) {
        let mut by_sid = self.by_sid.lock().expect("callback memory");
        match object {
            Some((ns, name)) => {
                by_sid.entry(sid.to_owned()).or_default().object = Some((ns.to_owned(), name.to_owned()));
            }
            None => {
                if let Some(entry) = by_sid.get_mut(sid) {
                    entry.object = None;
                }
            }
        }
    }

    /// The TwilioSubaccount whose budget triggers call about subaccount `sid`, if any.
    pub fn object_of(&self, sid: &str) -> Option<(String, String)> {
        let by_sid = self.by_sid.lock().expect("callback memory");
        by_sid.get(sid).and_then(|c| c.object.clone())
    }

    /// Forgets everything about the calls of subaccount `sid`: its object went.
    pub fn forget(&self, sid: &str) {
        self.by_sid.lock().expect("callback memory").remove(sid);
    }
}
