//! The sandbox's demo (`demo.yaml`): a namespace admitted to the operator's account, a
//! TwilioSubaccount, a TwilioApiKey in it and a Deployment that reads the key's Secret through
//! `envFrom` and is rolled by each rotation. This module applies it, waits for it to work, drives
//! a rotation and removes it, all through the Kubernetes API as a user would.
//!
//! Contract: every wait has a timeout and its error says what was still missing; nothing here
//! reads or prints a secret value, only SIDs.

use crate::cluster::Error;
use crate::rollout::{self, Rollout};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{Scope, pinned_kind};
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};
use std::time::Duration;

/// The demo's manifests, also shipped as `sandbox/demo.yaml` for people to read.
pub const MANIFESTS: &str = include_str!("../demo.yaml");
pub const NAMESPACE: &str = "demo";
pub const SUBACCOUNT: &str = "demo";
pub const KEY: &str = "checkout";
pub const SECRET: &str = "checkout-twilio";
pub const DEPLOYMENT: &str = "checkout";

const GROUP: &str = "twilio.operator.dev";
const VERSION: &str = "v1alpha1";

fn twilio(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

fn keys(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &twilio("TwilioApiKey", "twilioapikeys"),
    )
}

fn subaccounts(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &twilio("TwilioSubaccount", "twiliosubaccounts"),
    )
}

/// Applies every manifest with server-side apply.
pub async fn apply(client: &Client) -> Result<(), Error> {
    for doc in MANIFESTS.split("\n---\n") {
        let object: Value = serde_saphyr::from_str(doc)?;
        let api_version = object["apiVersion"]
            .as_str()
            .ok_or("a manifest without apiVersion")?;
        let kind = object["kind"].as_str().ok_or("a manifest without kind")?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let (resource, caps) = pinned_kind(client, &GroupVersionKind::gvk(group, version, kind)).await?;
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or("a manifest without a name")?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(client.clone(), NAMESPACE, &resource),
        };
        api.patch(
            name,
            &PatchParams::apply("twilio-sandbox").force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(|e| format!("apply {kind} {name}: {e}"))?;
    }
    Ok(())
}

/// The status of an object of ours, once it is Ready for its current generation and `extra`
/// holds of it.
async fn ready_where(
    api: &Api<DynamicObject>,
    name: &str,
    timeout: Duration,
    extra: impl Fn(&Value) -> bool,
) -> Result<Value, Error> {
    let done = |o: Option<&DynamicObject>| {
        o.is_some_and(|o| {
            let status = &o.data["status"];
            let ready = status["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            ready && status["observedGeneration"].as_i64() == o.metadata.generation && extra(status)
        })
    };
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, done)).await {
        Ok(Ok(Some(o))) => Ok(o.data["status"].clone()),
        _ => {
            let now = api.get_opt(name).await?;
            let why = now
                .as_ref()
                .and_then(|o| o.data["status"]["conditions"].as_array().cloned())
                .and_then(|c| c.into_iter().find(|c| c["type"] == "Ready"))
                .map(|c| format!("{}: {}", c["reason"], c["message"]))
                .unwrap_or_else(|| "no Ready condition".into());
            Err(format!("{name} was not Ready within {timeout:?} ({why})").into())
        }
    }
}

/// What the demo looks like once it works.
pub struct Working {
    pub subaccount_sid: String,
    pub key_sid: String,
    pub rollout: Rollout,
}

/// Waits until the subaccount and the key are Ready, and the Deployment runs with the key.
pub async fn working(client: &Client, timeout: Duration) -> Result<Working, Error> {
    let sub = ready_where(&subaccounts(client), SUBACCOUNT, timeout, |s| {
        s["sid"].is_string()
    })
    .await?;
    let key = ready_where(&keys(client), KEY, timeout, |s| s["keySid"].is_string()).await?;
    let key_sid = key["keySid"].as_str().unwrap_or_default().to_owned();
    let rollout = rollout::settled(client, NAMESPACE, DEPLOYMENT, timeout).await?;
    published(client, &key_sid).await?;
    Ok(Working {
        subaccount_sid: sub["sid"].as_str().unwrap_or_default().to_owned(),
        key_sid,
        rollout,
    })
}

/// Checks that the key's Secret carries `key_sid`.
async fn published(client: &Client, key_sid: &str) -> Result<(), Error> {
    let secret = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .get(SECRET)
        .await?;
    let api_key = secret
        .data
        .as_ref()
        .and_then(|d| d.get("TWILIO_API_KEY"))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned());
    if api_key.as_deref() != Some(key_sid) {
        return Err(format!("Secret {SECRET} carries key {api_key:?}, not {key_sid}").into());
    }
    Ok(())
}

/// The command a person types to rotate the key, as printed by the sandbox.
pub fn rotate_command() -> String {
    format!(
        "kubectl -n {NAMESPACE} annotate twkey {KEY} twilio.operator.dev/rotate=\"$(date +%s)\" --overwrite"
    )
}

/// Asks for a rotation as [`rotate_command`] does, waits until the new key is published, the
/// Deployment rolled exactly once onto it and the old key was revoked after its grace period;
/// returns the new state.
pub async fn rotate(
    client: &Client,
    before: &Working,
    request: &str,
    timeout: Duration,
) -> Result<Working, Error> {
    let annotation = json!({"metadata": {"annotations": {"twilio.operator.dev/rotate": request}}});
    keys(client)
        .patch(KEY, &PatchParams::default(), &Patch::Merge(&annotation))
        .await?;
    let key = ready_where(&keys(client), KEY, timeout, |s| {
        s["lastRotationRequest"] == request && s["keySid"].as_str().is_some_and(|k| k != before.key_sid)
    })
    .await?;
    let key_sid = key["keySid"].as_str().unwrap_or_default().to_owned();
    published(client, &key_sid).await?;
    ready_where(&keys(client), KEY, timeout, |s| {
        s["retiringKeys"].as_array().is_none_or(|r| r.is_empty())
    })
    .await
    .map_err(|e| format!("the old key was not revoked: {e}"))?;
    let rollout = rollout::settled(client, NAMESPACE, DEPLOYMENT, timeout).await?;
    rollout::rolled_once(&before.rollout, &rollout)?;
    Ok(Working {
        subaccount_sid: before.subaccount_sid.clone(),
        key_sid,
        rollout,
    })
}

/// Deletes the key and the subaccount and waits until the operator has let them go (the key
/// revoked, the subaccount closed).
pub async fn remove(client: &Client, timeout: Duration) -> Result<(), Error> {
    for (api, name) in [(keys(client), KEY), (subaccounts(client), SUBACCOUNT)] {
        if api.get_opt(name).await?.is_none() {
            continue;
        }
        api.delete(name, &DeleteParams::default()).await?;
        let gone = |o: Option<&DynamicObject>| o.is_none();
        tokio::time::timeout(timeout, await_condition(api.clone(), name, gone))
            .await
            .map_err(|_| format!("{name} still exists after {timeout:?}"))??;
    }
    Ok(())
}
