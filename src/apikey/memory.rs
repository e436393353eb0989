//! What the key reconciler remembers between passes: each account's key inventory, and one
//! record per object (the generation applied, Kubernetes' verdict on the last Secret written,
//! the Secret as last seen, keys revoked lately, a refused template), so a pass that read an
//! older status or a wake-up does not repeat a call this process already made. Correctness never
//! depends on it, and an object's record is forgotten with it.

use crate::api::apikey::RetiringKey;
use crate::objects;
use crate::secret::Observed;
use crate::template;
use crate::twilio::Inventories;
use k8s_openapi::api::core::v1::Secret;
use std::time::{Duration, Instant};

/// How long this process remembers a key it revoked once its status no longer lists it: a key
/// list read before the revocation may still show it until then.
const REVOKED_MEMORY: Duration = Duration::from_secs(600);

/// What this reconciler remembers between passes, so a pass that read an older status does not
/// repeat a Twilio call this process already made.
#[derive(Default)]
pub(super) struct Memory {
    /// Each account's keys at Twilio, shared by every key of that account.
    pub inventories: Inventories,
    /// What is remembered of each object: one record each, however much it holds.
    objects: objects::Memory<Remembered>,
}

/// What is remembered of one object.
#[derive(Default)]
struct Remembered {
    /// The generation last applied at Twilio.
    applied: Option<Option<i64>>,
    /// Whether Kubernetes took (`true`) or refused the last Secret written, and for which
    /// generation.
    verdict: Option<(Option<i64>, bool)>,
    /// The Secret as last read or written: while the watch says it is still at that version, a
    /// pass need not read it again.
    secret: Option<SecretSeen>,
    /// Keys of this object revoked, with when: kept while its status may still list them (its
    /// write may have failed), and [`REVOKED_MEMORY`] after, so nothing is revoked or announced
    /// twice.
    revoked: Vec<(String, Instant)>,
    /// A generation whose template failed with real values: it asks Twilio for no more keys.
    refused: Option<(Option<i64>, template::Invalid)>,
}

/// An object's Secret as a pass observed it, and what the observation depended on.
pub(super) struct SecretSeen {
    /// The Secret's resourceVersion.
    pub version: String,
    /// The object's generation, which decides the Secret's expected shape.
    pub generation: Option<i64>,
    /// The account whose SID the Secret's data must carry.
    pub account_sid: String,
    pub observed: Observed,
    /// When it was read or written.
    pub at: Instant,
}

impl Memory {
    pub(super) fn note_revoked(&self, uid: &str, sid: &str) {
        self.note(uid, |r| r.revoked.push((sid.to_owned(), Instant::now())));
    }

    /// Whether this process revoked key `sid` of object `uid`.
    pub(super) fn was_revoked(&self, uid: &str, sid: &str) -> bool {
        self.recall(uid, |r| {
            r.revoked.iter().any(|(revoked, _)| revoked == sid).then_some(())
        })
        .is_some()
    }

    /// Forgets the revoked keys that `recorded` (the status as a pass read it) no longer lists
    /// as retiring and that were revoked over [`REVOKED_MEMORY`] ago: their revocation was
    /// written, and any key list is newer by now.
    pub(super) fn settle_revoked(&self, uid: &str, recorded: &[RetiringKey]) {
        let listed = |sid: &str| recorded.iter().any(|r| r.sid == sid);
        self.note(uid, |r| {
            r.revoked
                .retain(|(sid, at)| listed(sid) || at.elapsed() < REVOKED_MEMORY)
        });
    }

    pub(super) fn note_refused(&self, uid: &str, generation: Option<i64>, why: &template::Invalid) {
        self.note(uid, |r| r.refused = Some((generation, why.clone())));
    }

    /// Why this generation cannot publish, if it failed with real values.
    pub(super) fn refused(&self, uid: &str, generation: Option<i64>) -> Option<template::Invalid> {
        self.recall(uid, |r| {
            r.refused
                .clone()
                .filter(|(g, _)| *g == generation)
                .map(|(_, why)| why)
        })
    }

    /// Changes what is remembered of object `uid`.
    fn note(&self, uid: &str, change: impl FnOnce(&mut Remembered)) {
        self.objects.note(uid, change);
    }

    /// What `read` makes of what is remembered of object `uid`, if anything is.
    fn recall<T>(&self, uid: &str, read: impl FnOnce(&Remembered) -> Option<T>) -> Option<T> {
        self.objects.recall(uid, read)
    }

    pub(super) fn note_applied(&self, uid: &str, generation: Option<i64>) {
        self.note(uid, |r| r.applied = Some(generation));
    }

    pub(super) fn applied(&self, uid: &str, generation: Option<i64>) -> bool {
        self.recall(uid, |r| r.applied) == Some(generation)
    }

    pub(super) fn note_verdict(&self, uid: &str, generation: Option<i64>, accepted: bool) {
        self.note(uid, |r| r.verdict = Some((generation, accepted)));
    }

    /// Whether the Secret of `generation` is known to pass Kubernetes' checks, so a key can be
    /// asked of Twilio without a dry run first: Kubernetes took it from this process; or, with
    /// nothing known here (after a restart), `secret` is intact and records this generation, and
    /// the object's status says the last pass over this generation succeeded (`settled`). The
    /// record alone proves nothing, since whoever can edit the Secret can write it; the status
    /// they cannot write, and a refused write leaves it not Ready until a write is taken.
    pub(super) fn secret_proven(
        &self,
        uid: &str,
        generation: Option<i64>,
        secret: &Observed,
        settled: bool,
    ) -> bool {
        let written = matches!(secret, Observed::Ours(r) if r.intact && r.generation == generation);
        match self.recall(uid, |r| r.verdict) {
            Some((judged, accepted)) if judged == generation => accepted,
            _ => generation.is_some() && written && settled,
        }
    }

    /// What the Secret held when last seen, if it is still at that version (`current`), was
    /// judged for this generation and account, and was read within `max_age` (by then a watch
    /// that missed a change is caught up with).
    pub(super) fn seen(
        &self,
        uid: &str,
        current: Option<&str>,
        (generation, account_sid): (Option<i64>, &str),
        max_age: Duration,
    ) -> Option<Observed> {
        self.recall(uid, |r| {
            r.secret
                .as_ref()
                .filter(|s| Some(s.version.as_str()) == current && s.at.elapsed() < max_age)
                .filter(|s| s.generation == generation && s.account_sid == account_sid)
                .map(|s| s.observed.clone())
        })
    }

    pub(super) fn note_seen(
        &self,
        uid: &str,
        secret: Option<&Secret>,
        seen: impl FnOnce(String) -> SecretSeen,
    ) {
        let version = secret.and_then(|s| s.metadata.resource_version.clone());
        self.note(uid, |r| r.secret = version.map(seen));
    }

    /// Whether the last pass over object `uid` read or wrote its Secret at `version`.
    pub(super) fn has_seen_secret(&self, uid: &str, version: Option<&str>) -> bool {
        let seen = |r: &Remembered| {
            r.secret
                .as_ref()
                .filter(|s| Some(s.version.as_str()) == version)
                .map(drop)
        };
        self.recall(uid, seen).is_some()
    }

    pub(super) fn forget(&self, uid: &str) {
        self.objects.forget(uid);
    }
}
