//! A Deployment's rollout as its pods show it: which ReplicaSet serves, at which revision, and
//! whether every pod is Running. Used to prove that a rotation reaches the pods, and only once.
//!
//! Contract: [`settled`] waits (up to a timeout) until the Deployment has finished rolling out:
//! its controller has seen the latest spec, every replica is updated and ready, and the only pods
//! left are the current ReplicaSet's, all Running. [`rolled_once`] compares two settled views.

use crate::cluster::Error;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use std::time::Duration;

const REVISION: &str = "deployment.kubernetes.io/revision";

/// A finished rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// The Deployment's revision (one more per rollout).
    pub revision: u64,
    /// The ReplicaSet whose pods serve.
    pub replica_set: String,
    /// How many ReplicaSets the Deployment has made so far.
    pub replica_sets: usize,
    /// The Running pods, all of `replica_set`.
    pub pods: Vec<String>,
}

/// Waits until the Deployment `name` has settled and returns its rollout; the error says what it
/// was still waiting for.
pub async fn settled(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Rollout, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let waiting = match observe(client, namespace, name).await? {
            Ok(rollout) => return Ok(rollout),
            Err(waiting) => waiting,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "Deployment {namespace}/{name} did not settle within {timeout:?}: {waiting}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `after` is exactly one rollout past `before`: one new ReplicaSet, whose pods replaced
/// every pod of the old one.
pub fn rolled_once(before: &Rollout, after: &Rollout) -> Result<(), String> {
    if after.revision != before.revision + 1 || after.replica_sets != before.replica_sets + 1 {
        return Err(format!(
            "expected exactly one rollout: revision {} -> {}, ReplicaSets {} -> {}",
            before.revision, after.revision, before.replica_sets, after.replica_sets
        ));
    }
    if let Some(old) = after.pods.iter().find(|p| before.pods.contains(p)) {
        return Err(format!("pod {old} of the old ReplicaSet still runs"));
    }
    Ok(())
}

/// The rollout if it has settled, or what it still waits for.
async fn observe(client: &Client, namespace: &str, name: &str) -> Result<Result<Rollout, String>, Error> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    if status.observed_generation < deployment.metadata.generation {
        return Ok(Err(
            "the deployment controller has not seen the latest spec".into()
        ));
    }
    let counts = [
        status.replicas,
        status.updated_replicas,
        status.ready_replicas,
        status.available_replicas,
    ];
    if counts.iter().any(|c| c.unwrap_or(0) != wanted) {
        return Ok(Err(format!(
            "replicas/updated/ready/available are {counts:?}, want {wanted} each"
        )));
    }
    let Some(revision) = deployment
        .annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
    else {
        return Ok(Err("no revision yet".into()));
    };
    let uid = deployment.uid().unwrap_or_default();
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let list = ListParams::default().labels(&selector);
    let sets = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
        .list(&list)
        .await?;
    let owned: Vec<&ReplicaSet> = sets
        .items
        .iter()
        .filter(|rs| rs.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    let Some(current) = owned
        .iter()
        .find(|rs| rs.annotations().get(REVISION).and_then(|r| r.parse::<u64>().ok()) == Some(revision))
    else {
        return Ok(Err(format!("no ReplicaSet of revision {revision}")));
    };
    let current_uid = current.uid().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&list)
        .await?;
    let mut running = Vec::new();
    for pod in &pods.items {
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Unknown");
        let ours = pod.owner_references().iter().any(|o| o.uid == current_uid);
        if !ours || pod.metadata.deletion_timestamp.is_some() || phase != "Running" {
            return Ok(Err(format!(
                "pod {} is {phase}, of an older ReplicaSet or going",
                pod.name_any()
            )));
        }
        running.push(pod.name_any());
    }
    if running.len() != usize::try_from(wanted).unwrap_or(0) {
        return Ok(Err(format!("{} pods Running, want {wanted}", running.len())));
    }
    running.sort();
    Ok(Ok(Rollout {
        revision,
        replica_set: current.name_any(),
        replica_sets: owned.len(),
        pods: running,
    }))
}
