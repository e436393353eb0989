//! Rolling the workloads that read a key's Secret, once per key: a Deployment, StatefulSet or
//! DaemonSet gets a pod-template annotation set to the current key SID; an Argo Rollouts Rollout
//! gets the same annotation on itself, with spec.restartAt set to the next whole second, which
//! restarts every pod made before it in place, without a new revision. A Rollout that already
//! carries the key's annotation is left alone, so for both, writing again changes nothing: a pass
//! that repeats itself, or a GitOps tool re-applying the workload without those fields, rolls
//! nothing.

use super::plan::Settings;
use super::{ApiKeys, ROLLOUT_ANNOTATION};
use crate::api::apikey::{TwilioApiKey, TwilioApiKeyStatus, WorkloadKind, WorkloadRef};
use crate::api::schedule;
use crate::reconcile::Stop;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::runtime::events::EventType;
use serde_json::{Value, json};

/// The most workloads one key restarts, named and selected together: a pass that rolls makes
/// at most this many patches.
const MAX_WORKLOADS: usize = 100;

impl ApiKeys {
    /// Rolls each restartWorkloads entry to the current key, counting each workload that changed.
    pub(super) async fn roll_workloads(
        &self,
        key: &TwilioApiKey,
        settings: &Settings,
        st: &mut TwilioApiKeyStatus,
    ) -> Result<(), Stop> {
        let Some(sid) = st.key_sid.clone() else {
            return Ok(());
        };
        let (mut rolled, mut budget) = (Vec::new(), MAX_WORKLOADS);
        for workload in &key.spec.restart_workloads {
            let api = Api::<DynamicObject>::namespaced_with(
                self.ctx.client.clone(),
                &settings.namespace,
                &resource(workload.kind),
            );
            let patch = Patch::Merge(restart(workload.kind, &sid, Timestamp::now()));
            for (name, version) in self.targets(key, &api, workload, &sid, &mut budget).await? {
                let after = api.patch(&name, &PatchParams::default(), &patch).await;
                match after {
                    // An unchanged resourceVersion: the workload already ran this key.
                    Ok(after) if after.metadata.resource_version == version => {}
                    Ok(_) => {
                        self.ctx.metrics.restarted(kind_name(workload.kind));
                        rolled.push(format!("{:?} {name}", workload.kind));
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        self.missing(key, workload, &name, &sid).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if !rolled.is_empty() {
            let note = format!("Restarted {} for key {sid}", rolled.join(", "));
            self.ctx
                .event(key, EventType::Normal, "WorkloadsRestarted", "Restart", note)
                .await;
        }
        st.workloads_rolled_for = Some(sid);
        st.workloads_rolled_digest = Some(settings.workloads_digest.clone());
        Ok(())
    }

    /// The workloads `workload` names or selects, with their resourceVersions, within what is
    /// left of the key's `budget`.
    async fn targets(
        &self,
        key: &TwilioApiKey,
        api: &Api<DynamicObject>,
        workload: &WorkloadRef,
        sid: &str,
        budget: &mut usize,
    ) -> Result<Vec<(String, Option<String>)>, Stop> {
        if *budget == 0 {
            self.too_many(key, workload, sid).await;
            return Ok(vec![]);
        }
        // A Rollout that carries the key's annotation was restarted for it already.
        let fresh = |meta: &kube::api::ObjectMeta| {
            workload.kind != WorkloadKind::Rollout
                || meta
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ROLLOUT_ANNOTATION))
                    .map(String::as_str)
                    != Some(sid)
        };
        if let Some(name) = &workload.name {
            *budget -= 1;
            return match api.get_metadata_opt(name).await? {
                Some(found) if !fresh(&found.metadata) => Ok(vec![]),
                Some(found) => Ok(vec![(name.clone(), found.metadata.resource_version)]),
                None => {
                    self.missing(key, workload, name, sid).await;
                    Ok(vec![])
                }
            };
        }
        let Some(selector) = &workload.selector else {
            return Ok(vec![]);
        };
        let labels: Vec<String> = selector
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let selected = format!("matching {}", labels.join(","));
        let limit = u32::try_from(*budget).unwrap_or(u32::MAX);
        let params = ListParams::default().labels(&labels.join(",")).limit(limit);
        let listed = match api.list_metadata(&params).await {
            Ok(listed) => listed,
            // No such kind here: the Rollout CRD is not installed.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                self.missing(key, workload, &selected, sid).await;
                return Ok(vec![]);
            }
            Err(e) => return Err(e.into()),
        };
        if listed
            .metadata
            .continue_
            .as_deref()
            .is_some_and(|c| !c.is_empty())
        {
            self.too_many(key, workload, sid).await;
        }
        if listed.items.is_empty() {
            self.missing(key, workload, &selected, sid).await;
        }
        *budget -= listed.items.len().min(*budget);
        Ok(listed
            .items
            .into_iter()
            .filter(|w| fresh(&w.metadata))
            .filter_map(|w| Some((w.metadata.name?, w.metadata.resource_version)))
            .collect())
    }

    async fn too_many(&self, key: &TwilioApiKey, workload: &WorkloadRef, sid: &str) {
        let note = format!(
            "spec.restartWorkloads names or selects more than {MAX_WORKLOADS} workloads; those past the first {MAX_WORKLOADS} ({:?}s among them) were not restarted for key {sid}. Narrow the selectors",
            workload.kind
        );
        self.ctx
            .event(key, EventType::Warning, "TooManyWorkloads", "Restart", note)
            .await;
    }

    async fn missing(&self, key: &TwilioApiKey, workload: &WorkloadRef, which: &str, sid: &str) {
        let what = match workload.kind {
            WorkloadKind::Rollout => "; is Argo Rollouts installed?",
            _ => "",
        };
        let note = format!(
            "No {:?} {which} in restartWorkloads exists{what}; none was restarted for key {sid}",
            workload.kind
        );
        self.ctx
            .event(key, EventType::Warning, "WorkloadMissing", "Restart", note)
            .await;
    }
}

/// Where a kind of workload lives in the API.
fn resource(kind: WorkloadKind) -> ApiResource {
    let (group, version) = match kind {
        WorkloadKind::Rollout => ("argoproj.io", "v1alpha1"),
        _ => ("apps", "v1"),
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind_name(kind)))
}

fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::DaemonSet => "DaemonSet",
        WorkloadKind::Rollout => "Rollout",
    }
}

/// The change that restarts a workload for key `sid`, published before `now`.
fn restart(kind: WorkloadKind, sid: &str, now: Timestamp) -> Value {
    match kind {
        WorkloadKind::Rollout => {
            // Rounded up: every pod made until now, all with older keys, is made before it.
            let restart_at = schedule::after(now, std::time::Duration::from_nanos(1));
            json!({"metadata": {"annotations": {ROLLOUT_ANNOTATION: sid}}, "spec": {"restartAt": restart_at.to_string()}})
        }
        _ => json!({"spec": {"template": {"metadata": {"annotations": {ROLLOUT_ANNOTATION: sid}}}}}),
    }
}
