//! restartWorkloads: workloads named or selected by labels, Argo Rollouts through their
//! restartAt, each counted, and no second roll when a GitOps tool re-applies the workload.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use std::time::Duration;
use support::fixture::{Fixture, WAIT};
use support::operator::{sample, wait_for};
use twilio_operator::api::TwilioApiKey;

const ANNOTATION: &str = "twilio.operator.dev/api-key-sid";

/// Installs Argo Rollouts' Rollout kind (its CRD, without the controller, which plays no part in
/// what the operator writes) and waits until it is served.
async fn install_rollout_crd(f: &Fixture) -> ApiResource {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "rollouts.argoproj.io"},
        "spec": {
            "group": "argoproj.io", "scope": "Namespaced",
            "names": {"kind": "Rollout", "plural": "rollouts", "singular": "rollout", "listKind": "RolloutList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(f.client.clone());
    crds.patch(
        "rollouts.argoproj.io",
        &PatchParams::apply("test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"));
    let rollouts: Api<DynamicObject> = Api::namespaced_with(f.client.clone(), &f.ns, &resource);
    let deadline = std::time::Instant::now() + WAIT;
    while rollouts.list(&Default::default()).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the Rollout kind is never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    resource
}

/// A workload of `kind` (apps/v1 or a Rollout) named `name` with `labels`, as Git holds it.
fn workload(kind: &str, name: &str, labels: Value) -> Value {
    let api_version = if kind == "Rollout" {
        "argoproj.io/v1alpha1"
    } else {
        "apps/v1"
    };
    json!({
        "apiVersion": api_version, "kind": kind, "metadata": {"name": name, "labels": labels},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}}},
    })
}

fn dynamic(f: &Fixture, kind: &str) -> Api<DynamicObject> {
    let (group, version) = if kind == "Rollout" {
        ("argoproj.io", "v1alpha1")
    } else {
        ("apps", "v1")
    };
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(f.client.clone(), &f.ns, &resource)
}

/// Server-side applies `obj` under `manager`, as a GitOps tool would.
async fn apply(f: &Fixture, obj: &Value, manager: &str, force: bool) -> DynamicObject {
    let kind = obj["kind"].as_str().unwrap();
    let api = dynamic(f, kind);
    let mut params = PatchParams::apply(manager);
    params.force = force;
    api.patch(
        obj["metadata"]["name"].as_str().unwrap(),
        &params,
        &Patch::Apply(obj),
    )
    .await
    .unwrap_or_else(|e| panic!("{manager} applies {kind}: {e}"))
}

fn key_sid(k: &TwilioApiKey) -> Option<String> {
    k.status.as_ref().and_then(|s| s.key_sid.clone())
}

fn template_annotation(obj: &DynamicObject) -> Option<String> {
    obj.data["spec"]["template"]["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn selected_workloads_and_rollouts_roll_once_per_key_and_are_counted() {
    let f = Fixture::new("restarts", &[]).await;
    install_rollout_crd(&f).await;
    let web = json!({"tier": "web"});
    for (kind, name, labels) in [
        ("Deployment", "web-a", &web),
        ("Deployment", "web-b", &web),
        ("Deployment", "other", &json!({"tier": "batch"})),
        ("DaemonSet", "agent", &json!({})),
        ("Rollout", "canary", &web),
    ] {
        apply(&f, &workload(kind, name, labels.clone()), "git", false).await;
    }
    let selector = json!({"matchLabels": {"tier": "web"}});
    f.create(
        "api",
        json!({"restartWorkloads": [
            {"kind": "Deployment", "selector": selector},
            {"kind": "DaemonSet", "name": "agent"},
            {"kind": "Rollout", "selector": selector},
        ]}),
    )
    .await;
    let first = f.ready("api").await;
    let read = |kind: &str, name: &str| {
        let api = dynamic(&f, kind);
        let name = name.to_owned();
        async move { api.get(&name).await.unwrap() }
    };
    let check = |key: TwilioApiKey| {
        let read = &read;
        async move {
            let sid = key_sid(&key);
            let created = key.status.as_ref().unwrap().key_created_at.as_ref().unwrap().0;
            for (kind, name) in [
                ("Deployment", "web-a"),
                ("Deployment", "web-b"),
                ("DaemonSet", "agent"),
            ] {
                assert_eq!(
                    template_annotation(&read(kind, name).await),
                    sid,
                    "{kind} {name} rolled to the key"
                );
            }
            assert_eq!(
                template_annotation(&read("Deployment", "other").await),
                None,
                "not selected"
            );
            let canary = read("Rollout", "canary").await;
            let restart_at: k8s_openapi::jiff::Timestamp = canary.data["spec"]["restartAt"]
                .as_str()
                .expect("restartAt is set")
                .parse()
                .unwrap();
            assert!(
                restart_at > created,
                "the Rollout restarts every pod made before the key: {restart_at}"
            );
            assert_eq!(
                canary.metadata.annotations.as_ref().unwrap()[ANNOTATION],
                sid.clone().unwrap()
            );
            assert_eq!(template_annotation(&canary), None, "no new Rollout revision");
        }
    };
    check(first.clone()).await;
    f.wait_event("api", "WorkloadsRestarted").await;
    let restarts = |text: &str, kind: &str| {
        sample(
            text,
            &format!("twilio_operator_workload_restarts_total{{kind=\"{kind}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let text = f.operator.as_ref().unwrap().metrics().await;
    assert_eq!(
        [
            restarts(&text, "Deployment"),
            restarts(&text, "DaemonSet"),
            restarts(&text, "Rollout")
        ],
        [2.0, 1.0, 1.0]
    );

    f.annotate("api", "twilio.operator.dev/rotate", "again").await;
    let rotated = f
        .ready_where("api", "rotated", |k| key_sid(k) != key_sid(&first))
        .await;
    wait_for(
        &f.keys(),
        "api",
        WAIT,
        "rolled to the new key",
        |k: &TwilioApiKey| {
            k.status
                .as_ref()
                .is_some_and(|s| s.workloads_rolled_for == s.key_sid)
        },
    )
    .await;
    check(rotated).await;
    let text = f.operator.as_ref().unwrap().metrics().await;
    assert_eq!(
        [
            restarts(&text, "Deployment"),
            restarts(&text, "DaemonSet"),
            restarts(&text, "Rollout")
        ],
        [4.0, 2.0, 2.0],
        "each workload counted once per key"
    );
}

/// Plays Flux or Argo CD with self-heal: after each roll, the workload's Git version (which does
/// not hold the operator's annotation) is server-side applied under the tool's own field manager,
/// with and without force. Nothing rolls a second time, and the operator does not answer back.
#[tokio::test]
async fn a_gitops_tool_reapplying_the_workload_causes_no_second_roll_and_no_loop() {
    let f = Fixture::new("restarts-gitops", &[]).await;
    let git = workload("Deployment", "web", json!({"app": "web"}));
    apply(&f, &git, "argocd-controller", false).await;
    f.create(
        "api",
        // No grace period, so each round's rotation happens at once.
        json!({"rotation": {"every": "720h", "gracePeriod": "0s"}, "restartWorkloads": [{"kind": "Deployment", "name": "web"}]}),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), &f.ns);
    let generation = || async { deployments.get("web").await.unwrap().metadata.generation.unwrap() };
    let mut sid = None;
    for round in 0..3 {
        // A roll: the first key, then a rotation.
        if round > 0 {
            f.annotate("api", "twilio.operator.dev/rotate", &format!("round-{round}"))
                .await;
        }
        let key = wait_for(
            &f.keys(),
            "api",
            WAIT,
            "rolled to a new key",
            |k: &TwilioApiKey| {
                k.status.as_ref().is_some_and(|s| {
                    s.key_sid.is_some() && s.key_sid != sid && s.workloads_rolled_for == s.key_sid
                })
            },
        )
        .await;
        sid = key_sid(&key);
        let rolled = generation().await;
        // Self-heal: the Git version again, as Argo CD (no force) and as Flux (force).
        for (manager, force) in [("argocd-controller", false), ("kustomize-controller", true)] {
            let after = apply(&f, &git, manager, force).await;
            assert_eq!(
                template_annotation(&after),
                sid,
                "round {round}: {manager} left the annotation"
            );
            assert_eq!(
                generation().await,
                rolled,
                "round {round}: {manager} rolled nothing"
            );
        }
        // The operator judges the key again (a spec edit it must apply) and rolls nothing more.
        let edit = json!({"spec": {"secret": {"labels": {"round": round.to_string()}}}});
        f.keys()
            .patch("api", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .unwrap();
        f.ready_where("api", "the edit applied", |k| {
            k.status.as_ref().unwrap().applied_generation == k.metadata.generation
        })
        .await;
        assert_eq!(
            generation().await,
            rolled,
            "round {round}: the operator's next pass rolled nothing"
        );
    }
    assert_eq!(
        generation().await,
        4,
        "created, then exactly one roll for each of three keys"
    );
}
