//! API keys: Main, Standard and Restricted, at most [`super::Rules::max_keys`] per account,
//! counted per account so a create costs no scan; a secret is kept only as its digest.

use super::{ApiError, World, check_friendly_name};
use crate::ids;
use jiff::Timestamp;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Main,
    Standard,
    Restricted,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub seq: u64,
    pub sid: String,
    pub account_sid: String,
    pub secret_digest: String,
    pub friendly_name: Option<String>,
    pub kind: KeyKind,
    pub policy: Option<Vec<String>>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// What a key create returns: the key and its secret, the one time it is visible.
pub struct NewKey {
    pub key: Key,
    pub secret: String,
}

impl World {
    pub fn create_key(
        &mut self,
        account_sid: &str,
        friendly_name: Option<String>,
        kind: KeyKind,
        policy: Option<Vec<String>>,
    ) -> Result<NewKey, ApiError> {
        if self.keys_held.get(account_sid).copied().unwrap_or(0) >= self.rules.max_keys {
            return Err(ApiError::new(400, 70151, "Maximum Number Of API Keys Exceeded"));
        }
        let friendly_name = friendly_name
            .map(|n| check_friendly_name(n, 70001, "The request has constraint violations"))
            .transpose()?;
        let secret = ids::key_secret();
        let now = Timestamp::now();
        let seq = self.next_seq();
        let key = Key {
            seq,
            sid: ids::sid("SK"),
            account_sid: account_sid.to_owned(),
            secret_digest: ids::digest(&secret),
            friendly_name,
            kind,
            policy,
            created: now,
            updated: now,
        };
        self.keys.insert(key.sid.clone(), key.clone());
        *self.keys_held.entry(key.account_sid.clone()).or_default() += 1;
        Ok(NewKey { key, secret })
    }

    pub fn account_keys(&self, account_sid: &str) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .keys
            .values()
            .filter(|k| k.account_sid == account_sid)
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.seq);
        keys
    }

    /// The key `sid` if it belongs to `account_sid`, else 404 naming `path`.
    pub fn key_in(&self, account_sid: &str, sid: &str, path: &str) -> Result<Key, ApiError> {
        self.keys
            .get(sid)
            .filter(|k| k.account_sid == account_sid)
            .cloned()
            .ok_or_else(|| ApiError::not_found(path))
    }

    pub fn update_key(
        &mut self,
        sid: &str,
        friendly_name: Option<String>,
        policy: Option<Vec<String>>,
    ) -> Result<Key, ApiError> {
        let friendly_name = friendly_name
            .map(|n| check_friendly_name(n, 70001, "The request has constraint violations"))
            .transpose()?;
        let key = self.keys.get_mut(sid).expect("caller checked the key exists");
        if policy.is_some() && key.kind != KeyKind::Restricted {
            return Err(ApiError::new(
                400,
                70002,
                "Policy can only be set on a restricted key",
            ));
        }
        if let Some(name) = friendly_name {
            key.friendly_name = Some(name);
        }
        if let Some(policy) = policy {
            key.policy = Some(policy);
        }
        key.updated = Timestamp::now();
        Ok(key.clone())
    }

    pub fn delete_key(&mut self, sid: &str) {
        if let Some(key) = self.keys.remove(sid)
            && let Some(held) = self.keys_held.get_mut(&key.account_sid)
        {
            *held -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::tests::world;

    #[test]
    fn the_key_limit_counts_each_account_and_frees_a_place_on_delete() {
        let (mut world, main) = world();
        world.rules.max_keys = 2;
        let sub = world.create_subaccount(&main, None).unwrap();
        let mut create = |account: &str| world.create_key(account, None, KeyKind::Standard, None);
        let first = create(&main.account_sid).unwrap();
        create(&main.account_sid).unwrap();
        let refused = create(&main.account_sid).err().unwrap();
        assert_eq!((refused.status, refused.code), (400, 70151));
        create(&sub.sid).unwrap();
        world.delete_key(&first.key.sid);
        world.delete_key(&first.key.sid);
        world
            .create_key(&main.account_sid, None, KeyKind::Standard, None)
            .unwrap();
        let refused = world
            .create_key(&main.account_sid, None, KeyKind::Standard, None)
            .err()
            .unwrap();
        assert_eq!(refused.code, 70151);
    }
}
