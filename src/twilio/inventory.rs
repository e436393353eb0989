//! Each account's keys at Twilio, read once and shared by every object in that account: one paged
//! list per account per resync interval, so drift detection costs O(accounts), not O(keys).
//! Concurrent askers wait for one read ([`Busy::Wait`]) or go on without it ([`Busy::Skip`]);
//! readers get a shared snapshot, find their own keys through its index by tag, and compare with
//! [`Inventory::read_at`] instead of adding to a snapshot others hold; a key found missing but then
//! fetched is [`Inventory::confirm`]ed, so it is fetched once per snapshot at most.

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

    /// A snapshot that knows nothing: read at the epoch, it lists no key, and no key (all made
    /// since) can be judged missing from it.
    pub fn unknown() -> Self {
        Inventory::new(Timestamp::UNIX_EPOCH, [])
    }

    /// Whether this is [`Inventory::unknown`].
    pub fn is_unknown(&self) -> bool {
        self.read_at == Timestamp::UNIX_EPOCH
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

/// One account's last snapshot, and the lock that makes concurrent askers share one read.
#[derive(Default)]
struct Slot {
    /// The last snapshot and when it was read.
    last: Mutex<Option<(Instant, Arc<Inventory>)>>,
    /// Held while the account's keys are being listed.
    reading: tokio::sync::Mutex<()>,
}

impl Slot {
    /// The last snapshot, if it was read at most `max_age` ago.
    fn fresh(&self, max_age: Duration) -> Option<Arc<Inventory>> {
        let last = self.last.lock().expect("inventory snapshot");
        last.as_ref()
            .filter(|(read, _)| read.elapsed() < max_age)
            .map(|(_, inventory)| inventory.clone())
    }

    /// Lists the account's keys (the caller holds `reading`) unless a read that finished
    /// meanwhile is fresh enough.
    async fn refresh(
        &self,
        twilio: &TwilioClient,
        account: &str,
        creds: &Credentials,
        max_age: Duration,
    ) -> Result<Arc<Inventory>, Error> {
        if let Some(inventory) = self.fresh(max_age) {
            return Ok(inventory);
        }
        let (read_at, started) = (Timestamp::now(), Instant::now());
        let keys = twilio.list_keys(creds, account).await?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(
            account,
            keys = keys.len(),
            elapsed_ms,
            "listed the account's keys"
        );
        let inventory = Arc::new(Inventory::new(
            read_at,
            keys.into_iter().map(|k| (k.sid, k.friendly_name)),
        ));
        *self.last.lock().expect("inventory snapshot") = Some((Instant::now(), inventory.clone()));
        Ok(inventory)
    }
}

/// What a reader does while another reads the same account's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Waits for that read, and shares it.
    Wait,
    /// Goes on without: its drift check can wait for its next look, but not for a list of many
    /// pages.
    Skip,
}

/// How long a slot whose credentials nobody uses keeps its snapshot.
const KEEP_UNUSED: Duration = Duration::from_secs(3600);

/// The last inventory of every account the operator acts in, per credentials acting there.
#[derive(Default)]
pub struct Inventories {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Inventories {
    /// The slot of `account` as `creds` read it: a failing read with other credentials that
    /// name the account holds no lock and no snapshot the others use.
    fn slot(&self, account: &str, creds: &Credentials) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("inventory map");
        let id = format!("{account} {}", creds.identity());
        if let Some(slot) = slots.get(&id) {
            return slot.clone();
        }
        // New credentials (a rotated token, a tenant's attempt): the slots of credentials no
        // longer in use go, with their snapshots, so this costs O(credentials in use).
        slots.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.fresh(KEEP_UNUSED).is_some());
        slots.entry(id).or_default().clone()
    }

    /// The keys of `account`, read at most `max_age` ago. While another pass lists them, `busy`
    /// says whether to wait for that list, or to answer at once with [`Inventory::unknown`].
    pub async fn read(
        &self,
        twilio: &TwilioClient,
        account: &str,
        creds: &Credentials,
        max_age: Duration,
        busy: Busy,
    ) -> Result<Arc<Inventory>, Error> {
        let slot = self.slot(account, creds);
        if let Some(inventory) = slot.fresh(max_age) {
            return Ok(inventory);
        }
        let _reading = match busy {
            Busy::Wait => slot.reading.lock().await,
            Busy::Skip => match slot.reading.try_lock() {
                Ok(reading) => reading,
                Err(_) => return Ok(Arc::new(Inventory::unknown())),
            },
        };
        slot.refresh(twilio, account, creds, max_age).await
    }
}
