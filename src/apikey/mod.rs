//! The TwilioApiKey reconciler: one lifecycle for one Twilio key and its Secret. A pass reads
//! validate ([`plan::settings`]) → resolve the account and credentials → observe the Secret and
//! the account's keys → [`plan::plan`] (pure) → act → record the outcome in status. Create is
//! crash-safe (intent first, tag on the key, Secret before status); a retiring key lives until
//! its revokeAt; no secret value reaches a log, status or event. What it remembers (`memory`)
//! is forgotten with the object. ARCHITECTURE.md tells the story.

mod memory;
pub mod plan;
mod rollout;

use crate::api::TwilioSubaccount;
use crate::api::apikey::{KeyDeletionPolicy, KeyType, TwilioApiKey, TwilioApiKeyStatus};
use crate::api::{duration, schedule};
use crate::conditions::{LifecycleStatus, Problem, Reason, is_ready};
use crate::context::Context;
use crate::objects::object_id;
use crate::quota::Quota;
use crate::reconcile::{self, Candidates, Done, Lifecycle, Note, Stop};
use crate::secret::{self, Observed};
use crate::target::{self, Target, Use};
use crate::twilio::{Busy, Credentials, Error as TwilioError, ErrorClass};
use crate::{failpoint, tagging, template, tenancy};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use memory::{Memory, SecretSeen};
use plan::{Cause, Change, Observation, Plan, Settings};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use plan::ROTATE_ANNOTATION;
/// Pod-template annotation whose value (the current key SID) rolls restartWorkloads.
pub const ROLLOUT_ANNOTATION: &str = "twilio.operator.dev/api-key-sid";
/// How long a key naming a subaccount waits for the first list of subaccounts.
const SUBACCOUNT_LIST_WAIT: Duration = Duration::from_secs(30);
/// When a pass that could not look at the account's keys (another pass was listing them) looks
/// again.
const DRIFT_UNCHECKED_RETRY: Duration = Duration::from_secs(5);

/// The scope's subaccounts, and whether their first list is complete.
pub type ListedSubaccounts = (Store<TwilioSubaccount>, tokio::sync::watch::Receiver<bool>);

/// The TwilioApiKey reconciler.
pub struct ApiKeys {
    ctx: Arc<Context>,
    subaccounts: ListedSubaccounts,
    /// The version each of the scope's owned Secrets is at, from their watch.
    secrets: Arc<secret::Versions>,
    /// The scope's keys by TwilioAccount and namespace, for spec.apiKeys.maxPerNamespace.
    quota: Arc<Quota<TwilioApiKey>>,
    memory: Memory,
}

/// A key a pass issued, to announce.
struct Issued {
    sid: String,
    cause: Cause,
    /// The key it replaces, now retiring.
    replaced: Option<String>,
    type_: EventType,
    reason: &'static str,
}

impl Issued {
    /// The event's note; `replaced_gone` when the replaced key was revoked in the same pass.
    fn note(&self, replaced_gone: bool, settings: &Settings) -> String {
        let retiring = match &self.replaced {
            Some(old) if replaced_gone => {
                format!(
                    "; {old} was revoked, its grace period ({}) being over",
                    duration::format(settings.grace)
                )
            }
            Some(old) => format!("; {old} stays valid for {}", duration::format(settings.grace)),
            None => String::new(),
        };
        format!(
            "Key {} {} and published in Secret {}{retiring}",
            self.sid,
            self.cause.describe(),
            settings.secret_name
        )
    }
}

impl ApiKeys {
    /// A reconciler acting through `ctx`, remembering nothing yet.
    pub fn new(
        ctx: Arc<Context>,
        subaccounts: ListedSubaccounts,
        secrets: Arc<secret::Versions>,
        quota: Arc<Quota<TwilioApiKey>>,
    ) -> Self {
        Self {
            ctx,
            subaccounts,
            secrets,
            quota,
            memory: Memory::default(),
        }
    }

    /// Whether the last pass over key `uid` read or wrote its Secret at `version`: a watch event
    /// bringing that version tells the key nothing new.
    pub fn has_seen_secret(&self, uid: &str, version: Option<&str>) -> bool {
        self.memory.has_seen_secret(uid, version)
    }
}

impl Lifecycle for ApiKeys {
    type Kind = TwilioApiKey;
    type Status = TwilioApiKeyStatus;

    fn context(&self) -> &Context {
        &self.ctx
    }

    fn account_name(key: &TwilioApiKey) -> Option<&str> {
        let spec = &key.spec;
        let own = spec.subaccount_ref.is_some() || spec.credentials_ref.is_some();
        (!own).then(|| {
            spec.account_ref
                .as_ref()
                .map_or(tenancy::DEFAULT_ACCOUNT, |r| r.name.as_str())
        })
    }

    async fn converge(
        &self,
        key: &TwilioApiKey,
        st: &mut TwilioApiKeyStatus,
        now: Timestamp,
    ) -> Result<Done, Stop> {
        let outcome = self.pass(key, st, now).await;
        if let (Err(Stop::Problem(p)), Some(account)) = (&outcome, &st.account_sid)
            && p.reason == Reason::AuthenticationFailed
            && key.spec.subaccount_ref.is_some()
        {
            // The cached subaccount token is what Twilio refused: read it afresh next time. Other
            // credentials that fail (a tenant's own, naming any SID) leave the cache alone.
            self.ctx.forget_subaccount_token(account);
        }
        if let Some(created) = &st.key_created_at {
            let seconds = |t: &Time| t.0.as_millisecond() as f64 / 1000.0;
            let (ns, name) = (key.namespace().unwrap_or_default(), key.name_any());
            self.ctx.metrics.key(
                &ns,
                &name,
                seconds(created),
                st.next_rotation_at.as_ref().map(seconds),
            );
        }
        outcome
    }

    fn forget(&self, key: &TwilioApiKey) {
        self.ctx
            .metrics
            .forget(Self::KIND, &key.namespace().unwrap_or_default(), &key.name_any());
        self.memory.forget(&key.uid().unwrap_or_default());
    }

    async fn cleanup(&self, key: &TwilioApiKey) -> Result<Action, Stop> {
        let ctx = &self.ctx;
        let st = key.status.clone().unwrap_or_default();
        if key.spec.deletion_policy == KeyDeletionPolicy::Retain {
            let limited = Self::account_name(key)
                .and_then(|name| ctx.cluster.accounts.get(&ObjectRef::new(name)))
                .filter(|account| account.spec.api_keys.max_per_namespace.is_some());
            match limited {
                Some(account) if plan::may_hold_keys(&st) => {
                    // A retained key would outlive the object the limit counts: a namespace could
                    // create, retain and delete its way past it.
                    let note = format!(
                        "deletionPolicy Retain is not applied: TwilioAccount {} limits keys per namespace (spec.apiKeys.maxPerNamespace), which counts only keys that have an object, so this object's keys are revoked instead",
                        account.name_any()
                    );
                    ctx.event(key, EventType::Warning, "DeletionPolicyReplaced", "Delete", note)
                        .await;
                }
                _ => {
                    let kept = st.key_sid.as_deref().unwrap_or("no key");
                    return Ok(reconcile::retained(ctx, key, kept).await);
                }
            }
        }
        if !plan::may_hold_keys(&st) {
            // Nothing was ever asked of Twilio for this object: nothing to revoke, no call.
            return Ok(Action::await_change());
        }
        // The object's own credentials first; if they are gone (a namespace being deleted takes
        // its Secrets with it) or refused, the operator's own, which reach subaccounts as their
        // parent, unless the object brought its own (credentialsRef). Either way only the account
        // the status recorded is touched, and in it only the keys that carry this object's tag.
        let own = resolve(ctx, &self.subaccounts, key, Use::Cleanup, None)
            .await
            .ok();
        let Some(account) = st
            .account_sid
            .clone()
            .or_else(|| own.as_ref().map(|t| t.account_sid.clone()))
        else {
            return Ok(Action::await_change());
        };
        let uid = key.uid().unwrap_or_default();
        let (account, uid) = (account.as_str(), uid.as_str());
        let revoked = |creds: Credentials| async move {
            let sids = self.revoke_tagged(&creds, account, uid).await?;
            let what = if sids.is_empty() {
                "no key was left".to_owned()
            } else {
                format!("Revoked {}", sids.join(", "))
            };
            Ok(Some(Note {
                reason: "KeysRevoked",
                text: what,
            }))
        };
        let recorded = plan::recorded_keys(&st).join(", ");
        let failed = |why: &str| Note {
            reason: "RevokeFailed",
            text: format!(
                "Could not revoke the keys of this object ({recorded}) in account {account} ({why}); left behind at Twilio: revoke them in the Twilio Console"
            ),
        };
        let work = format!("Revoking {recorded} in account {account}");
        let brings_own = key.spec.credentials_ref.is_some();
        let candidates = Candidates::new(ctx, own.map(|t| t.creds), brings_own);
        let released = reconcile::release(ctx, key, candidates, &work, revoked, failed).await;
        if let Err(Stop::Problem(held)) = &released
            && held.reason == Reason::AuthenticationFailed
            && key.spec.subaccount_ref.is_some()
        {
            // The subaccount's token may have been rotated elsewhere: read it again next time.
            ctx.forget_subaccount_token(account);
        }
        released
    }
}

/// The account a key lives in and the credentials to act there with (a subaccount as
/// `subaccounts` holds it); to act, its TwilioAccount must also allow the key's type and
/// permissions, and, when `quota` is given, one more key in its namespace.
async fn resolve(
    ctx: &Context,
    (subaccounts, listed): &ListedSubaccounts,
    key: &TwilioApiKey,
    purpose: Use,
    quota: Option<&Quota<TwilioApiKey>>,
) -> Result<Target, Problem> {
    let ns = key.namespace().unwrap_or_default();
    let spec = &key.spec;
    if let Some(sub) = &spec.subaccount_ref {
        // Keys are reconciled as they are listed; the subaccounts must all be known first, or
        // one not listed yet would look missing. A list that never completes holds the pass no
        // longer than this: the subaccount then reads as not ready, with backoff.
        let mut complete = listed.clone();
        let _ = tokio::time::timeout(SUBACCOUNT_LIST_WAIT, complete.wait_for(|l| *l)).await;
        let found = subaccounts.get(&ObjectRef::new(&sub.name).within(&ns));
        return target::subaccount(ctx, found, &ns, &sub.name, purpose).await;
    }
    let parent = target::parent(
        ctx,
        &ns,
        spec.account_ref.as_ref(),
        spec.credentials_ref.as_ref(),
        purpose,
    )
    .await?;
    if purpose == Use::Act
        && let Some(account) = &parent.account
    {
        tenancy::check_key(
            account,
            spec.key_type,
            spec.permissions.as_deref().unwrap_or_default(),
        )?;
        if let (Some(quota), Some(max)) = (quota, account.spec.api_keys.max_per_namespace)
            && !quota.admits(key, &account.name_any(), max)
        {
            let field = "spec.apiKeys.maxPerNamespace";
            return Err(tenancy::over_quota(account, "TwilioApiKey", field, &ns, max));
        }
    }
    Ok(Target {
        account_sid: parent.creds.account_sid().to_owned(),
        creds: parent.creds,
    })
}

impl ApiKeys {
    /// One pass of the lifecycle.
    async fn pass(
        &self,
        key: &TwilioApiKey,
        st: &mut TwilioApiKeyStatus,
        now: Timestamp,
    ) -> Result<Done, Stop> {
        let settings = plan::settings(key)?;
        self.memory.settle_revoked(&settings.uid, &st.retiring_keys);
        // An object that may already hold keys is past admission: the limit never strands them.
        let quota = (!plan::may_hold_keys(st)).then_some(self.quota.as_ref());
        let target = resolve(&self.ctx, &self.subaccounts, key, Use::Act, quota).await?;
        st.account_sid = Some(target.account_sid.clone());
        let seen = self.observe(&settings, &target, st).await?;
        let applied_here = self.memory.applied(&settings.uid, settings.generation);
        let plan = plan::plan(&settings, st, &seen, applied_here, now);
        self.act(key, &settings, &target, &seen.secret, plan, st, now)
            .await?;
        let message = format!(
            "Key {} is published in Secret {}",
            st.key_sid.as_deref().unwrap_or("?"),
            settings.secret_name
        );
        if let Some(e) = &settings.window_error {
            return Err(Problem::new(Reason::InvalidSpec, e.clone()).into());
        }
        let deadline = plan::next_deadline(st);
        let unchecked = seen
            .inventory
            .is_unknown()
            .then(|| schedule::after(now, DRIFT_UNCHECKED_RETRY));
        Ok(Done {
            message,
            deadline: deadline.into_iter().chain(unchecked).min(),
        })
    }

    /// Reads the Secret and, unless it belongs to somebody else, the account's keys.
    async fn observe(
        &self,
        settings: &Settings,
        target: &Target,
        st: &TwilioApiKeyStatus,
    ) -> Result<Observation, Stop> {
        let current = self.secrets.current(&settings.namespace, &settings.secret_name);
        let remembered = self.memory.seen(
            &settings.uid,
            current.as_deref(),
            (settings.generation, &target.account_sid),
            self.ctx.fresh_for(),
        );
        let secret = match remembered {
            Some(observed) => observed,
            // Nothing was ever asked of Twilio for this object, and the watch of the operator's
            // Secrets knows none by this name: there is nothing of ours to read. A Secret of
            // somebody else's by that name is found by the dry-run create that comes before any
            // key is made, as a SecretConflict, without a read per new object.
            None if current.is_none() && !plan::may_hold_keys(st) => Observed::Missing,
            None => {
                let found = Api::<Secret>::namespaced(self.ctx.client.clone(), &settings.namespace)
                    .get_opt(&settings.secret_name)
                    .await?;
                self.judge_secret(settings, &target.account_sid, found.as_ref())
            }
        };
        if secret == Observed::Conflict {
            // Nothing can be published, so nothing is asked of Twilio.
            return Err(Problem::secret_conflict(&settings.secret_name, "TwilioApiKey").into());
        }
        let inventories = &self.memory.inventories;
        let (twilio, account, creds) = (&self.ctx.twilio, &target.account_sid, &target.creds);
        // Unless a create may have been interrupted, only drift is looked for in the list: with
        // thousands of keys (after a restart, say) a pass does not queue behind another's list of
        // many pages, but looks again soon.
        let (max_age, busy) = if plan::needs_fresh_inventory(st, &secret) {
            (Duration::ZERO, Busy::Wait)
        } else {
            (self.ctx.fresh_for(), Busy::Skip)
        };
        let inventory = inventories.read(twilio, account, creds, max_age, busy).await?;
        // One list that misses the current key is not proof it was revoked: fetch it to be sure.
        let missing = st
            .key_sid
            .as_deref()
            .filter(|_| plan::revoked_outside(st, &inventory));
        let current_key_fetched = match missing {
            Some(sid) => {
                let found = self.fetch_key(target, sid).await?;
                if found.is_some() {
                    inventory.confirm(sid);
                }
                found.is_some()
            }
            None => false,
        };
        // A key the Secret names that neither the status nor the (older) list knows: fetch it
        // and check its tag, rather than take it for an edit and issue another key.
        let unlisted =
            plan::unrecorded_named_key(st, &secret).filter(|sid| !inventory.lists_tagged(&settings.uid, sid));
        let named_key_tagged = match unlisted {
            Some(sid) => self
                .fetch_key(target, sid)
                .await?
                .is_some_and(|name| tagging::is_tagged(name.as_deref(), &settings.uid)),
            None => false,
        };
        Ok(Observation {
            account_sid: target.account_sid.clone(),
            secret,
            inventory,
            current_key_fetched,
            named_key_tagged,
        })
    }

    /// What `found` (the object's Secret as just read or written) holds, remembered for the
    /// passes that find it still at this version.
    fn judge_secret(&self, settings: &Settings, account_sid: &str, found: Option<&Secret>) -> Observed {
        let expected = settings.expected_data(account_sid);
        let observed = secret::observe(found, &settings.uid, settings.shape(&expected));
        self.memory.note_seen(&settings.uid, found, |version| SecretSeen {
            version,
            generation: settings.generation,
            account_sid: account_sid.to_owned(),
            observed: observed.clone(),
            at: Instant::now(),
        });
        observed
    }

    /// The friendly name of key `sid` at Twilio; `None` when Twilio does not have it.
    async fn fetch_key(&self, target: &Target, sid: &str) -> Result<Option<Option<String>>, Stop> {
        match self
            .ctx
            .twilio
            .fetch_key(&target.creds, &target.account_sid, sid)
            .await
        {
            Ok(key) => Ok(Some(key.friendly_name)),
            Err(e) if e.class() == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Carries out `plan`, recording each step in `st` as it completes, so a failure half-way
    /// leaves a status that says what was done.
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        key: &TwilioApiKey,
        settings: &Settings,
        target: &Target,
        secret: &Observed,
        plan: Plan,
        st: &mut TwilioApiKeyStatus,
        now: Timestamp,
    ) -> Result<(), Stop> {
        *st = plan.status;
        if plan.adopted {
            tracing::info!(object = %object_id(key), key = ?st.key_sid, "adopting the key the Secret already carries");
        }
        let mut revoked = Vec::new();
        let retired = self.retire(key, target, st, &plan.revoke, &mut revoked).await;
        self.announce_revoked(key, &revoked).await;
        retired?;
        // A key this process revoked lately still shows in a list read before that: it was
        // published and retired, not left over, and is gone already.
        let uid = &settings.uid;
        let leftovers = plan.sweep.iter().filter(|sid| !self.memory.was_revoked(uid, sid));
        for orphan in leftovers {
            self.revoke(uid, target, orphan).await?;
            let note = format!("Revoked key {orphan}, created before an interruption and never published");
            self.ctx
                .event(key, EventType::Normal, "LeftoverRevoked", "Revoke", note)
                .await;
        }
        st.pending_since = None;
        let issued = match plan.change {
            Change::Issue(cause) => Some(self.issue(key, settings, target, secret, cause, st, now).await?),
            Change::Update => {
                self.update_key(key, settings, target, st).await?;
                None
            }
            Change::None => None,
            Change::Wait { cause, until } => {
                let message = format!(
                    "A new key ({}) waits until {until}: {} keys of this object are live (the published one and two retiring), the most a TwilioApiKey may have. The first retiring key is revoked then, and the new key published",
                    cause.describe(),
                    plan::MAX_LIVE_KEYS
                );
                return Err(Problem::new(Reason::QuotaExceeded, message).until(until).into());
            }
        };
        let mut revoked = Vec::new();
        let finished = async {
            if plan::roll_due(st, settings) {
                self.roll_workloads(key, settings, st).await?;
            }
            // A zero grace period makes a replaced key due at once: it goes only now, once the
            // workloads are rolling to its successor.
            let due = plan::due_revocations(st, Timestamp::now());
            self.retire(key, target, st, &due, &mut revoked).await
        }
        .await;
        if let Some(issued) = issued {
            // The new key is announced even if what follows failed; with the key it replaced
            // when that went at once, in one event.
            let replaced = issued.replaced.as_ref();
            let gone = replaced.and_then(|old| revoked.iter().position(|sid| sid == old));
            let note = issued.note(gone.is_some(), settings);
            gone.map(|i| revoked.remove(i));
            self.ctx
                .event(key, issued.type_, issued.reason, "Issue", note)
                .await;
        }
        self.announce_revoked(key, &revoked).await;
        finished?;
        st.secret_name = Some(settings.secret_name.clone());
        Ok(())
    }

    /// One event for each retiring key revoked, its grace period over.
    async fn announce_revoked(&self, key: &TwilioApiKey, revoked: &[String]) {
        for sid in revoked {
            let note = format!("Key {sid} revoked: its grace period is over");
            self.ctx
                .event(key, EventType::Normal, "KeyRevoked", "Revoke", note)
                .await;
        }
    }

    /// Revokes a key at Twilio; a key already gone counts as revoked.
    /// Answers whether this call revoked it: a pass that read an older status, or whose status
    /// write failed, may list a key this process already revoked, which is neither revoked nor
    /// announced again.
    async fn revoke(&self, uid: &str, target: &Target, sid: &str) -> Result<bool, TwilioError> {
        if self.memory.was_revoked(uid, sid) {
            return Ok(false);
        }
        self.ctx
            .twilio
            .delete_key(&target.creds, &target.account_sid, sid)
            .await?;
        self.memory.note_revoked(uid, sid);
        Ok(true)
    }

    /// Revokes the retiring keys `sids`, dropping each from the status once it is gone and
    /// adding it to `revoked` (which keeps those revoked before a failure, to announce them).
    async fn retire(
        &self,
        key: &TwilioApiKey,
        target: &Target,
        st: &mut TwilioApiKeyStatus,
        sids: &[String],
        revoked: &mut Vec<String>,
    ) -> Result<(), Stop> {
        for sid in sids {
            let home = st
                .retiring_keys
                .iter()
                .find(|r| &r.sid == sid)
                .and_then(|r| r.account_sid.clone());
            match home.filter(|account| account != &target.account_sid) {
                // Revoked where it lives, never with another account's credentials.
                Some(account) => {
                    let note = format!(
                        "Key {sid} lives in account {account}, which this object no longer acts in; it was not revoked: revoke it in the Twilio Console"
                    );
                    self.ctx
                        .event(key, EventType::Warning, "RevokeFailed", "Revoke", note)
                        .await;
                }
                None => {
                    if self.revoke(&key.uid().unwrap_or_default(), target, sid).await? {
                        failpoint::hit("apikey-mid-revoke");
                        tracing::info!(key = %sid, "revoked retiring key");
                        revoked.push(sid.clone());
                    }
                }
            }
            st.retiring_keys.retain(|r| &r.sid != sid);
        }
        Ok(())
    }

    /// Creates a key (intent first), publishes it in the Secret, then records it; answers what
    /// to announce.
    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        key: &TwilioApiKey,
        settings: &Settings,
        target: &Target,
        secret: &Observed,
        cause: Cause,
        st: &mut TwilioApiKeyStatus,
        now: Timestamp,
    ) -> Result<Issued, Stop> {
        let ctx = &self.ctx;
        if let Some(why) = self.memory.refused(&settings.uid, settings.generation) {
            return Err(Problem::from(why).into());
        }
        let spec_secret = key.spec.secret.as_deref().cloned().unwrap_or_default();
        let owner = key
            .controller_owner_ref(&())
            .expect("a stored object has a name and a UID");
        // Stamped when the Secret is built, just before it is written: a Secret adopted after a
        // crash retires the key it replaces for the grace period from then.
        let published = |sid: &str, value: &str, at: Timestamp| -> Result<Secret, template::Invalid> {
            let data = settings.data(&target.account_sid, sid, value, &template::created_at(at))?;
            Ok(secret::build(&secret::Published {
                name: &settings.secret_name,
                namespace: &settings.namespace,
                owner: owner.clone(),
                labels: &spec_secret.labels,
                annotations: &spec_secret.annotations,
                credential_sid: sid,
                created_at: at,
                request: settings.rotate_request.as_deref(),
                type_: &settings.secret_type,
                data: data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                secret_value: value,
                template_digest: settings.template.as_ref().map(|t| t.digest().to_owned()),
                generation: settings.generation,
            }))
        };
        let ours = matches!(secret, Observed::Ours(_));
        let settled = key.status.as_ref().is_some_and(|recorded| {
            recorded.applied() == settings.generation && is_ready(&recorded.conditions)
        });
        // Whatever Kubernetes would refuse (a policy, RBAC, an invalid label) is found out before
        // Twilio is asked, so a refused Secret never costs a key to create and sweep. A Secret of
        // this generation that Kubernetes already took needs no such check.
        if !self
            .memory
            .secret_proven(&settings.uid, settings.generation, secret, settled)
        {
            let placeholder = format!("SK{}", "0".repeat(32));
            let checked = published(&placeholder, &"0".repeat(32), now).map_err(Problem::from)?;
            reconcile::write_secret(ctx, &checked, ours, true).await?;
        }

        let name = tagging::tagged_name(&settings.display_name, &settings.uid);
        let create = async {
            match (key.spec.key_type, &key.spec.permissions) {
                (KeyType::Restricted, Some(permissions)) => {
                    ctx.twilio
                        .create_restricted_key(&target.creds, &target.account_sid, Some(&name), permissions)
                        .await
                }
                _ => {
                    ctx.twilio
                        .create_key(&target.creds, &target.account_sid, Some(&name))
                        .await
                }
            }
        };
        let new = reconcile::create_with_intent(ctx, key, st, now, "apikey-after-create", create).await?;
        // The template passed with placeholders; should it fail with the real values, this
        // generation creates no more keys (the one made is swept as never published).
        let secret = published(&new.sid, new.secret.expose_secret(), Timestamp::now())
            .inspect_err(|why| self.memory.note_refused(&settings.uid, settings.generation, why))
            .map_err(Problem::from)?;
        let written = reconcile::write_secret(ctx, &secret, ours, false).await;
        // After a refusal the next pass asks Kubernetes first again, so it never costs another key.
        self.memory
            .note_verdict(&settings.uid, settings.generation, written.is_ok());
        self.judge_secret(settings, &target.account_sid, Some(&written?));
        failpoint::hit("apikey-after-secret");

        let previous = st.key_sid.clone();
        // Counted from publication, not from the pass's start: the grace period runs from when
        // consumers could first read the new key, and a key list read before this moment may
        // predate the key (and must not make it look revoked).
        *st = plan::issued(settings, st, &new.sid, cause, Timestamp::now());
        self.memory.note_applied(&settings.uid, settings.generation);

        ctx.metrics.rotated("TwilioApiKey", cause.label());
        let (type_, reason) = match cause {
            Cause::Initial => (EventType::Normal, "KeyCreated"),
            Cause::Requested | Cause::Scheduled => (EventType::Normal, "KeyRotated"),
            Cause::RevokedOutside => (EventType::Warning, "KeyRevokedOutside"),
            Cause::SecretLost | Cause::SecretEdited => (EventType::Warning, "KeyReissued"),
        };
        Ok(Issued {
            sid: new.sid,
            cause,
            replaced: previous.filter(|_| cause.retires_current()),
            type_,
            reason,
        })
    }

    /// Applies a changed friendlyName or permissions to the existing key, in place.
    async fn update_key(
        &self,
        key: &TwilioApiKey,
        settings: &Settings,
        target: &Target,
        st: &TwilioApiKeyStatus,
    ) -> Result<(), Stop> {
        let Some(sid) = st.key_sid.as_deref() else {
            return Ok(());
        };
        let name = tagging::tagged_name(&settings.display_name, &settings.uid);
        let twilio = &self.ctx.twilio;
        match (key.spec.key_type, &key.spec.permissions) {
            (KeyType::Restricted, Some(permissions)) => {
                twilio
                    .update_iam_key(&target.creds, sid, Some(&name), Some(permissions))
                    .await?;
            }
            _ => {
                twilio
                    .update_key(&target.creds, &target.account_sid, sid, &name)
                    .await?;
            }
        }
        self.memory.note_applied(&settings.uid, settings.generation);
        Ok(())
    }

    /// Revokes every key in `account` that carries the tag of the object with `uid`, and says
    /// which. The list read with `creds` also proves they reach the account, so a key missing
    /// from it is gone, not merely out of reach.
    async fn revoke_tagged(
        &self,
        creds: &Credentials,
        account: &str,
        uid: &str,
    ) -> Result<Vec<String>, TwilioError> {
        let twilio = &self.ctx.twilio;
        let inventory = self
            .memory
            .inventories
            .read(twilio, account, creds, Duration::ZERO, Busy::Wait)
            .await?;
        let mut revoked = Vec::new();
        for sid in inventory.tagged(uid) {
            twilio.delete_key(creds, account, sid).await?;
            revoked.push(sid.clone());
        }
        Ok(revoked)
    }
}
