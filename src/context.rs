//! What every reconcile shares: the Kubernetes and Twilio clients, the operator's own
//! credentials, the event recorder, per-account key inventories and per-object backoff.
//!
//! Contract:
//! - [`Context::inventory`] reads an account's keys at most once per `max_age`, however many
//!   objects ask (one paged list per account per resync interval: drift detection costs
//!   O(accounts), not O(keys)), and concurrent askers share one read;
//! - [`Context::backoff`] grows exponentially per object (5 s doubling to 10 min, with jitter)
//!   until [`Context::succeeded`] resets it, so no failure is retried in a hot loop.

use crate::api::subaccount::SubaccountUsage;
use crate::apikey::plan::Inventory;
use crate::conditions::Reason;
use crate::twilio::{Credentials, Error as TwilioError, ErrorClass, TwilioClient};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder};
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Field manager of every write the operator makes.
pub const MANAGER: &str = "twilio-operator";
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_CAP: Duration = Duration::from_secs(600);

pub struct Context {
    pub client: kube::Client,
    pub twilio: TwilioClient,
    /// The operator's own credentials, from its environment; `None` when it has none.
    pub default_credentials: Option<Credentials>,
    pub recorder: Recorder,
    /// How often drift at Twilio is looked for.
    pub resync: Duration,
    pub metrics: Arc<crate::metrics::Metrics>,
    inventories: Mutex<HashMap<String, InventorySlot>>,
    failures: Mutex<HashMap<String, u32>>,
    subaccount_tokens: Mutex<HashMap<String, SecretString>>,
    usage: Mutex<HashMap<String, SubaccountUsage>>,
    revoked: Mutex<HashMap<String, Instant>>,
    applied: Mutex<HashMap<String, Option<i64>>>,
}

/// How long this process remembers a key it revoked, to skip repeating the call.
const REVOKED_MEMORY: Duration = Duration::from_secs(600);

/// One account's last key list and when it was read; the async lock makes concurrent askers
/// wait for one read instead of each making their own.
type InventorySlot = Arc<tokio::sync::Mutex<Option<(Instant, Inventory)>>>;

/// A reason the object cannot make progress, reported in its Ready condition.
#[derive(Debug, Clone)]
pub struct Problem {
    pub reason: Reason,
    pub message: String,
}

impl Problem {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl From<TwilioError> for Problem {
    fn from(e: TwilioError) -> Self {
        let reason = match (e.class(), e.code()) {
            (ErrorClass::Credentials, _) => Reason::AuthenticationFailed,
            (ErrorClass::RateLimited, _) => Reason::RateLimited,
            (_, Some(21479)) => Reason::SubaccountClosed,
            (_, Some(21101)) => Reason::CredentialsNotParent,
            (_, Some(21480)) => Reason::LimitReached,
            _ => Reason::TwilioError,
        };
        let hint = match reason {
            Reason::AuthenticationFailed => {
                " Check the Secret named in spec.credentialsRef (or the operator's TWILIO_* settings): it must hold an account SID with its auth token, or a Main API key."
            }
            Reason::RateLimited => " The operator backs off and tries again.",
            Reason::SubaccountClosed => " A closed subaccount cannot be reopened; delete this object.",
            Reason::CredentialsNotParent => {
                " The credentials belong to a subaccount, and subaccounts cannot have subaccounts: use the parent (main) account's credentials."
            }
            Reason::LimitReached => {
                " The parent account has as many subaccounts as Twilio allows (1000 by default): close unused ones, or ask Twilio support to raise the limit."
            }
            _ => "",
        };
        Problem::new(reason, format!("{e}.{hint}"))
    }
}

impl Context {
    pub fn new(
        client: kube::Client,
        twilio: TwilioClient,
        default_credentials: Option<Credentials>,
        recorder: Recorder,
        resync: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            client,
            twilio,
            default_credentials,
            recorder,
            resync,
            metrics,
            inventories: Mutex::default(),
            failures: Mutex::default(),
            subaccount_tokens: Mutex::default(),
            usage: Mutex::default(),
            revoked: Mutex::default(),
            applied: Mutex::default(),
        }
    }

    /// The keys of `account` at Twilio, read at most `max_age` ago.
    pub async fn inventory(
        &self,
        account: &str,
        creds: &Credentials,
        max_age: Duration,
    ) -> Result<Inventory, TwilioError> {
        let slot = self
            .inventories
            .lock()
            .expect("inventory map")
            .entry(account.to_owned())
            .or_default()
            .clone();
        let mut cached = slot.lock().await;
        if let Some((_, inventory)) = cached.as_ref().filter(|(read, _)| read.elapsed() < max_age) {
            return Ok(inventory.clone());
        }
        let read_at = Timestamp::now();
        let keys = self.twilio.list_keys(creds, account).await?;
        let inventory = Inventory {
            read_at,
            keys: keys.into_iter().map(|k| (k.sid, k.friendly_name)).collect(),
        };
        *cached = Some((Instant::now(), inventory.clone()));
        Ok(inventory)
    }

    /// Records a key this operator just created, so a cached inventory does not miss it.
    pub async fn remember_key(&self, account: &str, sid: &str, friendly_name: &str) {
        let slot = self
            .inventories
            .lock()
            .expect("inventory map")
            .get(account)
            .cloned();
        if let Some(slot) = slot
            && let Some((_, inventory)) = slot.lock().await.as_mut()
        {
            inventory
                .keys
                .push((sid.to_owned(), Some(friendly_name.to_owned())));
        }
    }

    /// The delay before the next attempt for `object`, growing with each failure.
    pub fn backoff(&self, object: &str) -> Duration {
        let mut failures = self.failures.lock().expect("failure map");
        let n = failures.entry(object.to_owned()).or_default();
        *n = n.saturating_add(1);
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << (*n - 1).min(16))
            .min(BACKOFF_CAP);
        // Up to 10% jitter, so objects that failed together do not retry together.
        let jitter = exp.mul_f64(f64::from(rand_fraction(object, *n)) * 0.1);
        exp + jitter
    }

    pub fn succeeded(&self, object: &str) {
        self.failures.lock().expect("failure map").remove(object);
    }

    pub fn subaccount_token(&self, sid: &str) -> Option<SecretString> {
        self.subaccount_tokens
            .lock()
            .expect("token cache")
            .get(sid)
            .cloned()
    }

    pub fn remember_subaccount_token(&self, sid: &str, token: SecretString) {
        self.subaccount_tokens
            .lock()
            .expect("token cache")
            .insert(sid.to_owned(), token);
    }

    pub fn forget_subaccount_token(&self, sid: &str) {
        self.subaccount_tokens.lock().expect("token cache").remove(sid);
    }

    pub fn note_revoked(&self, sid: &str) {
        let mut revoked = self.revoked.lock().expect("revoked keys");
        revoked.retain(|_, at| at.elapsed() < REVOKED_MEMORY);
        revoked.insert(sid.to_owned(), Instant::now());
    }

    pub fn revoked_recently(&self, sid: &str) -> bool {
        self.revoked
            .lock()
            .expect("revoked keys")
            .get(sid)
            .is_some_and(|at| at.elapsed() < REVOKED_MEMORY)
    }

    /// Records that the object with `uid` had its `generation` applied at Twilio.
    pub fn note_applied(&self, uid: &str, generation: Option<i64>) {
        self.applied
            .lock()
            .expect("applied generations")
            .insert(uid.to_owned(), generation);
    }

    pub fn applied(&self, uid: &str, generation: Option<i64>) -> bool {
        self.applied.lock().expect("applied generations").get(uid) == Some(&generation)
    }

    /// The last usage read for a subaccount, whatever a (possibly stale) status says.
    pub fn last_usage(&self, sid: &str) -> Option<SubaccountUsage> {
        self.usage.lock().expect("usage cache").get(sid).cloned()
    }

    pub fn remember_usage(&self, sid: &str, usage: SubaccountUsage) {
        self.usage
            .lock()
            .expect("usage cache")
            .insert(sid.to_owned(), usage);
    }

    /// Publishes an event; a failure to publish is logged, never fatal.
    pub async fn event(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// A stable pseudo-random fraction in [0, 1) for (object, attempt).
fn rand_fraction(object: &str, attempt: u32) -> f32 {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(format!("{object}/{attempt}").as_bytes());
    f32::from(u16::from_be_bytes([hash[0], hash[1]])) / 65536.0
}
