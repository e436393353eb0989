//! Rolling the workloads that read a key's Secret: a pod-template annotation set to the current
//! key SID, so each workload in `restartWorkloads` rolls once per key, never twice.

use super::plan::Settings;
use super::{ApiKeys, ROLLOUT_ANNOTATION};
use crate::api::apikey::{TwilioApiKey, TwilioApiKeyStatus, WorkloadKind};
use crate::reconcile::Stop;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

impl ApiKeys {
    /// Rolls each restartWorkloads entry by setting a pod-template annotation to the current key
    /// SID: the same value twice changes nothing, so each workload rolls once per key.
    pub(super) async fn roll_workloads(
        &self,
        key: &TwilioApiKey,
        settings: &Settings,
        st: &mut TwilioApiKeyStatus,
    ) -> Result<(), Stop> {
        let Some(sid) = st.key_sid.clone() else {
            return Ok(());
        };
        let patch = Patch::Merge(
            json!({"spec": {"template": {"metadata": {"annotations": {ROLLOUT_ANNOTATION: sid}}}}}),
        );
        let params = PatchParams::default();
        let (client, ns) = (self.ctx.client.clone(), settings.namespace.as_str());
        for workload in &key.spec.restart_workloads {
            let name = workload.name.as_str();
            let result = match workload.kind {
                WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
                    .patch(name, &params, &patch)
                    .await
                    .map(drop),
                WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
                    .patch(name, &params, &patch)
                    .await
                    .map(drop),
                WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
                    .patch(name, &params, &patch)
                    .await
                    .map(drop),
            };
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    let note = format!(
                        "{:?} {name} in restartWorkloads does not exist; it was not restarted for key {sid}",
                        workload.kind
                    );
                    self.ctx
                        .event(key, EventType::Warning, "WorkloadMissing", "Restart", note)
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        st.workloads_rolled_for = Some(sid);
        Ok(())
    }
}
