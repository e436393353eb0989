//! Each account's keys at Twilio, read once and shared by every object in that account.
//!
//! Contract:
//! - [`Inventories::read`] lists an account's keys at most once per `max_age`, however many
//!   objects ask (one paged list per account per resync interval: drift detection costs
//!   O(accounts), not O(keys)), and concurrent askers wait for one read instead of each making
//!   their own;
//! - a reader gets a shared snapshot ([`Arc`]), never a copy of the list;
//! - [`Inventories::remember`] adds a key this process just created, so a cached snapshot read
//!   before the create does not make it look revoked.

use super::{Credentials, Error, TwilioClient};
use k8s_openapi::jiff::Timestamp;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The keys of one account at Twilio, as read at `read_at`.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// When the list was read: a key created after this moment cannot be in it.
    pub read_at: Timestamp,
    /// `(sid, friendly_name)` of every key.
    pub keys: Vec<(String, Option<String>)>,
}

impl Inventory {
    /// Whether the key `sid` was listed.
    pub fn contains(&self, sid: &str) -> bool {
        self.keys.iter().any(|(s, _)| s == sid)
    }
}

/// One account's last snapshot and when it was read; the async lock is what makes concurrent
/// askers share one read.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Arc<Inventory>)>>>;

/// The last inventory of every account the operator acts in.
#[derive(Default)]
pub struct Inventories {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Inventories {
    /// The keys of `account`, read at most `max_age` ago.
    pub async fn read(
        &self,
        twilio: &TwilioClient,
        account: &str,
        creds: &Credentials,
        max_age: Duration,
    ) -> Result<Arc<Inventory>, Error> {
        let slot = self
            .slots
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
        let keys = twilio.list_keys(creds, account).await?;
        let inventory = Arc::new(Inventory {
            read_at,
            keys: keys.into_iter().map(|k| (k.sid, k.friendly_name)).collect(),
        });
        *cached = Some((Instant::now(), inventory.clone()));
        Ok(inventory)
    }

    /// Records a key this process just created in `account`'s cached snapshot, if there is one.
    pub async fn remember(&self, account: &str, sid: &str, friendly_name: &str) {
        let slot = self.slots.lock().expect("inventory map").get(account).cloned();
        if let Some(slot) = slot
            && let Some((_, inventory)) = slot.lock().await.as_mut()
        {
            Arc::make_mut(inventory)
                .keys
                .push((sid.to_owned(), Some(friendly_name.to_owned())));
        }
    }
}
