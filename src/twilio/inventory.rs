//! Each account's keys at Twilio, read once and shared by every object in that account.
//!
//! Contract:
//! - [`Inventories::read`] lists an account's keys at most once per `max_age`, however many
//!   objects ask (one paged list per account per resync interval: drift detection costs
//!   O(accounts), not O(keys)), and concurrent askers wait for one read instead of each making
//!   their own;
//! - a reader gets a shared snapshot ([`Arc`]), never a copy of the list, and finds its own keys
//!   through the snapshot's index by tag, without looking at anybody else's;
//! - a key created after a snapshot was read is simply not in it: readers compare with
//!   [`Inventory::read_at`] instead of adding to a snapshot others hold, and a key found missing
//!   but then fetched is [`Inventory::confirm`]ed, so it is fetched once per snapshot at most.

use super::{Credentials, Error, TwilioClient};
use crate::tagging;
use k8s_openapi::jiff::Timestamp;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The keys of one account at Twilio, as read at `read_at`.
#[derive(Debug, Default)]
pub struct Inventory {
    /// When the list was read: a key created after this moment cannot be in it.
    pub read_at: Timestamp,
    /// Every listed key SID.
    sids: HashSet<String>,
    /// The SIDs of the keys whose friendly name carries an object's tag, by tag.
    by_tag: HashMap<String, Vec<String>>,
    /// Keys a fetch found after this list missed them.
    confirmed: Mutex<HashSet<String>>,
}

impl Inventory {
    /// The snapshot of `keys`, as `(sid, friendly name)`, listed at `read_at`.
    pub fn new(read_at: Timestamp, keys: impl IntoIterator<Item = (String, Option<String>)>) -> Self {
        let mut inventory = Inventory {
            read_at,
            ..Inventory::default()
        };
        for (sid, name) in keys {
            if let Some(tag) = name.as_deref().and_then(tagging::tag_in) {
                inventory
                    .by_tag
                    .entry(tag.to_owned())
                    .or_default()
                    .push(sid.clone());
            }
            inventory.sids.insert(sid);
        }
        inventory
    }

    /// Whether the key `sid` was listed, or confirmed since.
    pub fn contains(&self, sid: &str) -> bool {
        self.sids.contains(sid) || self.confirmed.lock().expect("confirmed keys").contains(sid)
    }

    /// Records that a fetch found the key `sid` although the list missed it.
    pub fn confirm(&self, sid: &str) {
        self.confirmed
            .lock()
            .expect("confirmed keys")
            .insert(sid.to_owned());
    }

    /// Whether key `sid` was listed with the tag of the object with `uid`.
    pub fn lists_tagged(&self, uid: &str, sid: &str) -> bool {
        self.tagged(uid).iter().any(|s| s == sid)
    }

    /// The SIDs of the listed keys that carry the tag of the object with `uid`.
    pub fn tagged(&self, uid: &str) -> &[String] {
        self.by_tag.get(&tagging::tag(uid)).map_or(&[], Vec::as_slice)
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
        let inventory = Arc::new(Inventory::new(
            read_at,
            keys.into_iter().map(|k| (k.sid, k.friendly_name)),
        ));
        *cached = Some((Instant::now(), inventory.clone()));
        Ok(inventory)
    }
}
