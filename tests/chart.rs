//! Shipping: the Helm chart and the plain manifests against the real apiserver, the operator
//! running under exactly the chart's RBAC, leader election between two processes, metrics,
//! health and graceful shutdown.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use support::emulator::{Emulator, MAIN_SID, MAIN_TOKEN};
use support::operator::{Operator, wait_for, wait_gone};
use support::{ControlPlane, cluster, repo_root};
use twilio_operator::api::{TwilioAccount, TwilioApiKey, TwilioSubaccount};
use twilio_operator::conditions::is_ready;

const WAIT: Duration = Duration::from_secs(60);
const CHART: &str = "charts/twilio-operator";

fn chart() -> String {
    repo_root().join(CHART).display().to_string()
}

fn scratch(cp: &ControlPlane, name: &str) -> PathBuf {
    let dir = cp.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn apply_json<K>(api: &Api<K>, value: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).expect("valid object");
    api.create(&PostParams::default(), &obj).await.expect("create")
}

fn key_ready(k: &TwilioApiKey) -> bool {
    k.status.as_ref().is_some_and(|s| {
        is_ready(&s.conditions) && s.key_sid.is_some() && s.observed_generation == k.metadata.generation
    })
}

#[tokio::test]
async fn the_chart_lints_and_renders_what_the_apiserver_accepts() {
    let cp = cluster();
    cp.run_tool("helm", &["lint", &chart()]);
    cp.run_tool(
        "helm",
        &[
            "lint",
            &chart(),
            "--set",
            "watchNamespaces={a,b}",
            "--set",
            "replicaCount=2",
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set-json",
            r#"networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#,
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.grafanaDashboard.enabled=true",
        ],
    );
    let refused = |set: &[&str], said: &str| {
        let mut args = vec!["template", "x", CHART];
        for s in set {
            args.extend(["--set", s]);
        }
        let out = std::process::Command::new(cp.bin_dir.join("helm"))
            .args(&args)
            .current_dir(repo_root())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(said),
            "{set:?} is refused with {said:?}: {stderr}"
        );
    };
    refused(&["logFormat=yaml"], "logFormat");
    // The NetworkPolicy admits only what is configured: a scraper or webhook caller left unnamed
    // is refused at install, not silently cut off.
    refused(
        &["metrics.serviceMonitor.enabled=true"],
        "networkPolicy.metricsFrom",
    );
    refused(
        &["budget.webhookURL=https://twilio-operator.example.com"],
        "budget.webhookFrom",
    );
    refused(&["budget.webhookURL=twilio-operator.example.com"], "webhookURL");
    // The usage-trigger endpoint exists only with a public URL, on its own Service and port.
    let webhook = |set: &[&str]| {
        let mut args = vec!["template", "x", CHART];
        for s in set {
            args.extend(["--set", s]);
        }
        cp.run_tool("helm", &args)
    };
    let plain = webhook(&["networkPolicy.enabled=true"]);
    assert!(
        !plain.contains("BUDGET_WEBHOOK_URL") && !plain.contains("-webhook"),
        "{plain}"
    );
    let public = webhook(&[
        "networkPolicy.enabled=true",
        "budget.webhookURL=https://twilio-operator.example.com",
        "budget.webhookFrom[0].namespaceSelector.matchLabels.team=ingress",
    ]);
    for expected in [
        "name: BUDGET_WEBHOOK_URL",
        "value: \"https://twilio-operator.example.com\"",
        "value: \"0.0.0.0:8082\"",
        "name: x-twilio-operator-webhook",
        "targetPort: webhook",
        "containerPort: 8082",
        "port: 8082",
    ] {
        assert!(public.contains(expected), "{expected} in:\n{public}");
    }
    refused(&["logLevel=loud"], "logLevel");
    // A PDB that could never let the operator's pod go would block every node drain.
    refused(
        &[
            "podDisruptionBudget.enabled=true",
            "podDisruptionBudget.minAvailable=1",
        ],
        "must be below replicaCount",
    );
    let pdb = cp.run_tool(
        "helm",
        &[
            "template",
            "x",
            &chart(),
            "--set",
            "podDisruptionBudget.enabled=true",
            "--show-only",
            "templates/pdb.yaml",
        ],
    );
    assert!(
        pdb.contains("maxUnavailable: 1") && !pdb.contains("minAvailable"),
        "{pdb}"
    );
    // The series' namespace label is the object's; Prometheus must not rename it for the alerts.
    let monitor = cp.run_tool(
        "helm",
        &[
            "template",
            "x",
            &chart(),
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "networkPolicy.enabled=false",
            "--show-only",
            "templates/servicemonitor.yaml",
        ],
    );
    assert!(monitor.contains("honorLabels: true"), "{monitor}");
    assert!(
        monitor.contains("bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token"),
        "{monitor}"
    );
    let deployment = cp.run_tool(
        "helm",
        &[
            "template",
            "x",
            &chart(),
            "--set",
            "logLevel=debug",
            "--show-only",
            "templates/deployment.yaml",
        ],
    );
    assert!(
        deployment.contains("name: RUST_LOG\n              value: \"debug\""),
        "{deployment}"
    );

    // Patching workloads is granted only with restartWorkloads support on (the default).
    let rbac = |enabled: &str| {
        let set = format!("restartWorkloads.enabled={enabled}");
        cp.run_tool(
            "helm",
            &[
                "template",
                "x",
                &chart(),
                "--show-only",
                "templates/rbac.yaml",
                "--set",
                &set,
            ],
        )
    };
    assert!(rbac("true").contains("deployments") && !rbac("false").contains("deployments"));

    let release_ns = cp.namespace("chart-render").await;
    let watched = cp.namespace("chart-render-team").await;
    let dir = scratch(cp, "render");
    for (name, extra) in [
        ("cluster", vec![]),
        (
            "namespaced",
            vec![
                "--set".to_owned(),
                format!("watchNamespaces={{{watched}}}"),
                "--set".into(),
                "replicaCount=2".into(),
                "--set".into(),
                "podDisruptionBudget.enabled=true".into(),
                "--set".into(),
                "networkPolicy.enabled=true".into(),
                "--set".into(),
                "networkPolicy.restrictEgress=true".into(),
                "--set".into(),
                "metrics.grafanaDashboard.enabled=true".into(),
            ],
        ),
    ] {
        let mut args = vec![
            "template".to_owned(),
            format!("render-{name}"),
            chart(),
            "--namespace".into(),
            release_ns.clone(),
            "--set".into(),
            "crds.install=false".into(),
        ];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let rendered = cp.run_tool("helm", &args);
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        cp.run_tool(
            "kubectl",
            &["apply", "--dry-run=server", "-f", file.to_str().unwrap()],
        );
        for forbidden in ["\"*\"", "- '*'", "- \"*\""] {
            assert!(!rendered.contains(forbidden), "{name}: no wildcard in RBAC");
        }
    }
    // The CRDs as the chart renders them are valid too.
    let crds = cp.run_tool(
        "helm",
        &[
            "template",
            "render-crds",
            &chart(),
            "--show-only",
            "templates/crds.yaml",
        ],
    );
    let file = dir.join("crds.yaml");
    std::fs::write(&file, crds).unwrap();
    cp.run_tool(
        "kubectl",
        &[
            "apply",
            "--dry-run=server",
            "--server-side",
            "--force-conflicts",
            "-f",
            file.to_str().unwrap(),
        ],
    );
}

#[tokio::test]
async fn deploy_manifests_are_the_rendered_chart() {
    let cp = cluster();
    let out = scratch(cp, "deploy");
    let status = std::process::Command::new("bash")
        .arg(repo_root().join("hack/gen-deploy.sh"))
        .arg(&out)
        .env("KUBEBUILDER_ASSETS", &cp.bin_dir)
        .status()
        .unwrap();
    assert!(status.success());
    for file in [
        "namespace.yaml",
        "twilio-operator.yaml",
        "kustomization.yaml",
        "argocd-cm.yaml",
    ] {
        let fresh = std::fs::read_to_string(out.join(file)).unwrap();
        let committed = std::fs::read_to_string(repo_root().join("deploy").join(file)).unwrap_or_default();
        assert!(
            fresh == committed,
            "deploy/{file} differs from the chart: run hack/gen-deploy.sh and commit the result"
        );
    }
    // The namespace must exist for a server-side dry run of what goes into it.
    cp.run_tool(
        "kubectl",
        &[
            "apply",
            "-f",
            repo_root().join("deploy/namespace.yaml").to_str().unwrap(),
        ],
    );
    cp.run_tool(
        "kubectl",
        &[
            "apply",
            "--dry-run=server",
            "-k",
            repo_root().join("deploy").to_str().unwrap(),
        ],
    );
}

/// Hands the CRDs the harness applied to a Helm release, as a user adopting kubectl-applied
/// CRDs would.
fn adopt_crds(cp: &ControlPlane, release: &str, namespace: &str) {
    for crd in [
        "twilioaccounts.twilio.operator.dev",
        "twilioapikeys.twilio.operator.dev",
        "twiliosubaccounts.twilio.operator.dev",
    ] {
        cp.run_tool(
            "kubectl",
            &[
                "label",
                "crd",
                crd,
                "app.kubernetes.io/managed-by=Helm",
                "--overwrite",
            ],
        );
        cp.run_tool(
            "kubectl",
            &[
                "annotate",
                "crd",
                crd,
                &format!("meta.helm.sh/release-name={release}"),
                &format!("meta.helm.sh/release-namespace={namespace}"),
                "--overwrite",
            ],
        );
    }
}

#[tokio::test]
async fn installed_chart_rbac_is_sufficient_and_no_broader() {
    let cp = cluster();
    let release_ns = cp.namespace("chart-op").await;
    let team = cp.namespace("chart-team").await;
    let other = cp.namespace("chart-other").await;
    adopt_crds(cp, "tw", &release_ns);
    cp.run_tool(
        "helm",
        &[
            "install",
            "tw",
            &chart(),
            "--namespace",
            &release_ns,
            "--set",
            &format!("watchNamespaces={{{team}}}"),
            "--set",
            &format!("defaultAccount.namespaces.names={{{team}}}"),
            "--set",
            "defaultAccount.subaccounts.deletionPolicies={Retain,Suspend,Close}",
            // The same policy the other tests' TwilioAccount "default" sets, so the two agree.
            "--set-string",
            "defaultAccount.namespaces.selector.matchLabels.twilio\\.operator\\.dev/tenant=true",
            "--set",
            "twilio.credentialsSecret=twilio-credentials",
            "--wait=false",
        ],
    );
    let deployment: Api<Deployment> = Api::namespaced(cp.admin(), &release_ns);
    let spec = deployment
        .get("tw-twilio-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let container = &spec.containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!(
        (
            security.read_only_root_filesystem,
            security.allow_privilege_escalation
        ),
        (Some(true), Some(false))
    );
    assert_eq!(security.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert_eq!(
        spec.security_context.unwrap().seccomp_profile.unwrap().type_,
        "RuntimeDefault"
    );
    assert!(
        container.liveness_probe.is_some()
            && container.readiness_probe.is_some()
            && container.resources.is_some()
    );

    // The operator under the chart's ServiceAccount, through impersonation.
    let emu = Emulator::start(&[]);
    let kubeconfig = cp.impersonating_kubeconfig(&release_ns, "tw-twilio-operator");
    let operator = Operator::start_as(
        cp,
        &emu,
        &kubeconfig,
        &[
            ("WATCH_NAMESPACES", &team),
            ("POD_NAMESPACE", &release_ns),
            ("DEFAULT_ACCOUNT_CONFIGMAP", "tw-twilio-operator-default-account"),
        ],
    );
    // The operator applies the TwilioAccount "default" the values describe.
    let accounts: Api<TwilioAccount> = Api::all(cp.admin());
    let admits_team = |a: &TwilioAccount| {
        a.spec.namespaces.names.contains(&team)
            && a.status.as_ref().is_some_and(|st| is_ready(&st.conditions))
    };
    let account = wait_for(&accounts, "default", WAIT, "applied from the values", admits_team).await;
    assert_eq!(account.status.unwrap().account_sid.as_deref(), Some(MAIN_SID));
    let client = cp.admin();
    let subs: Api<TwilioSubaccount> = Api::namespaced(client.clone(), &team);
    let keys: Api<TwilioApiKey> = Api::namespaced(client.clone(), &team);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &team);
    apply_json(&deployments, json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
        "spec": {"selector": {"matchLabels": {"app": "app"}}, "template": {"metadata": {"labels": {"app": "app"}},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}}}
    }))
    .await;
    apply_json(&subs, json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount", "metadata": {"name": "tenant"},
        "spec": {"secret": {"name": "tenant-twilio"}, "deletionPolicy": "Close", "authTokenRotation": {"every": "24h", "gracePeriod": "1s"}}})).await;
    apply_json(&keys, json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey", "metadata": {"name": "app"},
        "spec": {"subaccountRef": {"name": "tenant"}, "rotation": {"every": "24h", "gracePeriod": "0s"}, "restartWorkloads": [{"kind": "Deployment", "name": "app"}]}})).await;
    let sub = wait_for(&subs, "tenant", WAIT, "Ready", |s: &TwilioSubaccount| {
        s.status.as_ref().is_some_and(|st| is_ready(&st.conditions))
    })
    .await;
    let key = wait_for(&keys, "app", WAIT, "Ready", key_ready).await;
    let first = key.status.unwrap().key_sid.unwrap();
    keys.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"twilio.operator.dev/rotate": "1"}}})),
    )
    .await
    .unwrap();
    wait_for(&keys, "app", WAIT, "rotated", |k: &TwilioApiKey| {
        key_ready(k) && k.status.as_ref().unwrap().key_sid.as_deref() != Some(first.as_str())
    })
    .await;
    let rolled = deployments.get("app").await.unwrap();
    assert!(
        rolled
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()
            .contains_key("twilio.operator.dev/api-key-sid")
    );
    // The subaccount's auth token rotates too, through create, publish and promote.
    let token_of = |s: &Secret| s.data.as_ref().unwrap()["TWILIO_AUTH_TOKEN"].0.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &team);
    let before = token_of(&secrets.get("tenant-twilio").await.unwrap());
    let rotated = |s: &TwilioSubaccount| {
        s.status
            .as_ref()
            .and_then(|st| st.auth_token.as_ref())
            .is_some_and(|t| t.secondary_published_at.is_none() && t.rotated_at.0.as_second() > 1_700_000_000)
            && s.status.as_ref().is_some_and(|st| is_ready(&st.conditions))
    };
    let fixture_free_time_travel = json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount", "status": {"authToken": {"rotatedAt": "2020-01-01T00:00:00Z"}}});
    for _ in 0..5 {
        subs.patch_status(
            "tenant",
            &PatchParams::apply("time-travel").force(),
            &Patch::Apply(&fixture_free_time_travel),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        if token_of(&secrets.get("tenant-twilio").await.unwrap()) != before {
            break;
        }
    }
    wait_for(&subs, "tenant", WAIT, "rotated", rotated).await;
    assert_ne!(
        token_of(&secrets.get("tenant-twilio").await.unwrap()),
        before,
        "the published token changed"
    );
    keys.delete("app", &DeleteParams::default()).await.unwrap();
    wait_gone(&keys, "app", WAIT).await;
    subs.delete("tenant", &DeleteParams::default()).await.unwrap();
    wait_gone(&subs, "tenant", WAIT).await;
    let state = emu.state().await;
    assert!(
        state["keys"].as_array().unwrap().is_empty(),
        "the keys were revoked: {}",
        state["keys"]
    );
    let sid = sub.status.unwrap().sid.unwrap();
    assert!(
        state["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["sid"] == sid.as_str() && a["status"] == "closed")
    );
    assert!(
        !std::fs::read_to_string(&operator.log)
            .unwrap()
            .contains("Forbidden"),
        "the operator was never refused:\n{}",
        operator.log_tail()
    );

    // No broader than needed.
    let sa = cp.as_service_account(&release_ns, "tw-twilio-operator");
    let forbidden = |what: &str, result: Result<(), kube::Error>| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("the chart's ServiceAccount could {what}: {other:?}"),
    };
    forbidden(
        "list Secrets in another namespace",
        Api::<Secret>::namespaced(sa.clone(), &other)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
    );
    forbidden(
        "list Secrets cluster-wide",
        Api::<Secret>::all(sa.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ()),
    );
    forbidden(
        "create TwilioApiKeys in another namespace",
        Api::<TwilioApiKey>::namespaced(sa.clone(), &other)
            .create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey", "metadata": {"name": "x"}, "spec": {}})).unwrap())
            .await
            .map(|_| ()),
    );
    forbidden(
        "write Namespaces",
        Api::<k8s_openapi::api::core::v1::Namespace>::all(sa.clone())
            .patch(
                &other,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await
            .map(|_| ()),
    );
    forbidden(
        "delete Secrets",
        Api::<Secret>::namespaced(sa.clone(), &team)
            .delete("tenant-twilio", &DeleteParams::default())
            .await
            .map(|_| ()),
    );
    forbidden("create TwilioApiKeys", Api::<TwilioApiKey>::namespaced(sa.clone(), &team).create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey", "metadata": {"name": "x"}, "spec": {}})).unwrap()).await.map(|_| ()));
    // It may get, list and patch workloads, to roll them (a patch answers with the object
    // anyway), but never delete or create one.
    forbidden(
        "delete Deployments",
        Api::<Deployment>::namespaced(sa.clone(), &team)
            .delete("app", &DeleteParams::default())
            .await
            .map(|_| ()),
    );
    forbidden(
        "delete TwilioSubaccounts",
        Api::<TwilioSubaccount>::namespaced(sa.clone(), &team)
            .delete("tenant", &DeleteParams::default())
            .await
            .map(|_| ()),
    );

    // helm upgrade delivers a changed CRD.
    let copy = scratch(cp, "chart-next");
    assert!(
        std::process::Command::new("cp")
            .args(["-r", &chart()])
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    let next = copy.join("twilio-operator");
    let crd_file = next.join("files/crds/twilioapikeys.yaml");
    let text = std::fs::read_to_string(&crd_file)
        .unwrap()
        .replace("SID of the current key", "SID of the current key (next release)");
    std::fs::write(&crd_file, text).unwrap();
    let chart_file = next.join("Chart.yaml");
    std::fs::write(
        &chart_file,
        std::fs::read_to_string(&chart_file)
            .unwrap()
            .replace("version: 0.1.0", "version: 0.1.1"),
    )
    .unwrap();
    cp.run_tool(
        "helm",
        &[
            "upgrade",
            "tw",
            next.to_str().unwrap(),
            "--namespace",
            &release_ns,
            "--reuse-values",
            "--set",
            &format!("defaultAccount.namespaces.names={{{team},{other}}}"),
            "--wait=false",
        ],
    );
    // The upgrade reaches the TwilioAccount "default" through the running operator.
    wait_for(
        &accounts,
        "default",
        WAIT,
        "admitting the new namespace",
        |a: &TwilioAccount| a.spec.namespaces.names.contains(&other),
    )
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let upgraded = crds.get("twilioapikeys.twilio.operator.dev").await.unwrap();
    let columns = upgraded.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap();
    assert!(
        columns
            .iter()
            .any(|c| c.description.as_deref() == Some("SID of the current key (next release)")),
        "the upgrade reached the CRD"
    );
    cp.run_tool("helm", &["uninstall", "tw", "--namespace", &release_ns]);
    assert!(
        crds.get("twilioapikeys.twilio.operator.dev").await.is_ok(),
        "helm uninstall keeps the CRDs"
    );
}

#[tokio::test]
async fn leader_election_hands_over_without_duplicates() {
    let cp = cluster();
    let ns = cp.tenant_namespace("leader").await;
    let emu = Emulator::start(&[]);
    let env = |name: &'static str| {
        vec![
            ("WATCH_NAMESPACES", ns.clone()),
            ("POD_NAMESPACE", ns.clone()),
            ("LEADER_ELECT", "true".into()),
            ("LEADER_ELECTION_LEASE_SECONDS", "4".into()),
            ("POD_NAME", name.into()),
        ]
    };
    let start = |name: &'static str| {
        let env = env(name);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Operator::start_as(cp, &emu, &cp.kubeconfig, &env)
    };
    let mut operators = [("op-a", Some(start("op-a"))), ("op-b", Some(start("op-b")))];
    let client = cp.admin();
    let keys: Api<TwilioApiKey> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let new_key = |name: &str| json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey", "metadata": {"name": name}, "spec": {}});
    apply_json(&keys, new_key("before")).await;
    wait_for(&keys, "before", WAIT, "Ready", key_ready).await;
    let holder = |lease: &Lease| {
        lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default()
    };
    let leader = holder(&leases.get("twilio-operator").await.unwrap());
    assert!(leader == "op-a" || leader == "op-b", "{leader}");

    // Kill the leader the hard way: no chance to release the Lease.
    let dead = operators.iter_mut().find(|(name, _)| *name == leader).unwrap();
    dead.1 = None;
    let killed_at = std::time::Instant::now();
    apply_json(&keys, new_key("after")).await;
    wait_for(
        &keys,
        "after",
        Duration::from_secs(30),
        "Ready under the new leader",
        key_ready,
    )
    .await;
    let took = killed_at.elapsed();
    let new_leader = holder(&leases.get("twilio-operator").await.unwrap());
    assert_ne!(new_leader, leader);
    println!(
        "leader election: {new_leader} took over from {leader}; the next key was Ready {:.1}s after the kill (lease 4s)",
        took.as_secs_f64()
    );

    let state = emu.state().await;
    assert_eq!(
        state["keys"].as_array().unwrap().len(),
        2,
        "one key per object, no duplicates: {}",
        state["keys"]
    );
    // Only the leader writes: every event about a key came from the leader of its time.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    for event in events.list(&ListParams::default()).await.unwrap() {
        let object = event.involved_object.name.clone().unwrap_or_default();
        let by = event.reporting_instance.clone().unwrap_or_default();
        let expected = if object == "before" { &leader } else { &new_leader };
        assert_eq!(&by, expected, "event {:?} about {object}", event.reason);
    }
}

#[tokio::test]
async fn metrics_health_and_graceful_shutdown() {
    let cp = cluster();
    let ns = cp.tenant_namespace("metrics").await;
    let emu = Emulator::start(&[]);
    let operator = Operator::start(cp, &emu, &ns, &[("LOG_FORMAT", "json")]);
    let client = cp.admin();
    let http = reqwest::Client::new();
    let keys: Api<TwilioApiKey> = Api::namespaced(client.clone(), &ns);
    let subs: Api<TwilioSubaccount> = Api::namespaced(client.clone(), &ns);
    apply_json(&keys, json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey", "metadata": {"name": "measured"},
        "spec": {"rotation": {"every": "720h", "gracePeriod": "1h"}}})).await;
    apply_json(&subs, json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount", "metadata": {"name": "billed"}, "spec": {}})).await;
    let first = wait_for(&keys, "measured", WAIT, "Ready", key_ready)
        .await
        .status
        .unwrap()
        .key_sid
        .unwrap();
    keys.patch(
        "measured",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"twilio.operator.dev/rotate": "now"}}})),
    )
    .await
    .unwrap();
    wait_for(&keys, "measured", WAIT, "rotated", |k: &TwilioApiKey| {
        key_ready(k) && k.status.as_ref().unwrap().key_sid.as_deref() != Some(first.as_str())
    })
    .await;
    wait_for(&subs, "billed", WAIT, "Ready", |s: &TwilioSubaccount| {
        s.status.as_ref().is_some_and(|st| is_ready(&st.conditions))
    })
    .await;

    assert_eq!(
        http.get(format!("{}/healthz", operator.health_url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/readyz", operator.health_url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let text = operator.metrics().await;
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert!(
        value(r#"twilio_operator_reconciles_total{kind="TwilioApiKey",result="success",reason="Ready"}"#)
            >= 2.0
    );
    assert!(
        value(r#"twilio_operator_reconciles_total{kind="TwilioSubaccount",result="success",reason="Ready"}"#)
            >= 1.0
    );
    assert_eq!(
        value(&format!(
            r#"twilio_operator_ready{{kind="TwilioApiKey",namespace="{ns}",name="measured"}}"#
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            r#"twilio_operator_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(value(r#"twilio_operator_reconcile_duration_seconds_count{kind="TwilioApiKey"}"#) >= 2.0);
    assert_eq!(
        value(r#"twilio_operator_twilio_requests_total{operation="CreateNewKey",status="201"}"#),
        2.0
    );
    assert_eq!(
        value(r#"twilio_operator_rotations_total{kind="TwilioApiKey",cause="Requested"}"#),
        1.0
    );
    let age = value(&format!(
        r#"twilio_operator_api_key_age_seconds{{namespace="{ns}",name="measured"}}"#
    ));
    assert!((0.0..120.0).contains(&age), "key age {age}");
    let next = value(&format!(
        r#"twilio_operator_api_key_next_rotation_timestamp_seconds{{namespace="{ns}",name="measured"}}"#
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        next > now + 700.0 * 3600.0 && next <= now + 720.0 * 3600.0,
        "next rotation {next}"
    );
    assert_eq!(
        value(&format!(
            r#"twilio_operator_subaccount_month_to_date_usage{{namespace="{ns}",name="billed",currency="usd"}}"#
        )),
        0.0
    );
    assert!(text.contains("twilio_operator_twilio_rate_limited_total") || !text.contains("status=\"429\""));
    let secret: Secret = Api::namespaced(client.clone(), &ns)
        .get("measured")
        .await
        .unwrap();
    let key_secret = String::from_utf8(secret.data.unwrap()["TWILIO_API_SECRET"].0.clone()).unwrap();
    assert!(
        !text.contains(&key_secret) && !text.contains(MAIN_TOKEN),
        "no secret in the metrics"
    );
    assert!(!text.contains(MAIN_SID), "no account SIDs as labels either");

    operator.terminate();
    let mut operator = operator;
    let status = operator.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "SIGTERM stops the operator cleanly: {status:?}\n{}",
        operator.log_tail()
    );
    let log = std::fs::read_to_string(&operator.log).unwrap();
    assert!(log.contains("stopped"));
    // JSON logs, one object a line, carrying the objects they are about.
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().any(|l| l.to_string().contains(&format!("{ns}/measured")) || l.to_string().contains("measured.")), "no log line names the object");
    assert!(!log.contains(&key_secret) && !log.contains(MAIN_TOKEN));
}

/// A namespaced install: deleting a watched namespace completes with its keys revoked, although
/// the namespace's Role is deleted with it, because the Twilio kinds are granted through a
/// ClusterRoleBinding that outlives the namespace (kubernetes/kubernetes#115070).
#[tokio::test]
async fn deleting_a_watched_namespace_completes_with_keys_revoked() {
    let cp = cluster();
    let release_ns = cp.namespace("chart-nsdel").await;
    let team = cp.tenant_namespace("chart-nsdel-team").await;
    cp.run_tool(
        "helm",
        &[
            "install",
            "gone",
            &chart(),
            "--namespace",
            &release_ns,
            "--set",
            "crds.install=false",
            // The TwilioAccount "default" the harness keeps admits this namespace by label.
            "--set",
            "defaultAccount.create=false",
            "--set",
            &format!("watchNamespaces={{{team}}}"),
            "--set",
            "twilio.credentialsSecret=twilio-credentials",
            "--wait=false",
        ],
    );
    let emu = Emulator::start(&[]);
    let kubeconfig = cp.impersonating_kubeconfig(&release_ns, "gone-twilio-operator");
    let operator = Operator::start_as(
        cp,
        &emu,
        &kubeconfig,
        &[("WATCH_NAMESPACES", &team), ("POD_NAMESPACE", &release_ns)],
    );
    let keys: Api<TwilioApiKey> = Api::namespaced(cp.admin(), &team);
    apply_json(&keys, json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey", "metadata": {"name": "doomed"}, "spec": {}})).await;
    wait_for(&keys, "doomed", WAIT, "Ready", key_ready).await;
    assert_eq!(emu.state().await["keys"].as_array().unwrap().len(), 1);

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cp.admin());
    namespaces.delete(&team, &DeleteParams::default()).await.unwrap();
    wait_gone(&namespaces, &team, Duration::from_secs(90)).await;
    assert!(
        emu.state().await["keys"].as_array().unwrap().is_empty(),
        "the key was revoked before the namespace went:\n{}",
        operator.log_tail()
    );
    cp.run_tool("helm", &["uninstall", "gone", "--namespace", &release_ns]);
}

/// The chart's alerts fire as documented: Prometheus' own promtool evaluates the rendered
/// PrometheusRule against series with exactly the names and labels the operator exports, and
/// every query of the Grafana dashboard parses and names only metrics the operator exports.
#[tokio::test]
async fn the_alerts_fire_as_documented_and_the_dashboard_queries_parse() {
    let cp = cluster();
    let dir = scratch(cp, "alerts");
    let rendered = cp.run_tool(
        "helm",
        &[
            "template",
            "tw",
            &chart(),
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.prometheusRule.labels.release=kube-prometheus-stack",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
    );
    let rule: Value = serde_saphyr::from_str(&rendered).expect("a rendered PrometheusRule");
    assert_eq!(
        rule["metadata"]["labels"]["release"], "kube-prometheus-stack",
        "{rendered}"
    );
    let groups = json!({"groups": rule["spec"]["groups"]});
    std::fs::write(dir.join("rules.yaml"), groups.to_string()).unwrap();
    let tests = std::fs::read_to_string(repo_root().join("tests/alerts/alerts.test.yaml")).unwrap();
    std::fs::write(dir.join("alerts.test.yaml"), &tests).unwrap();
    let test_file = dir.join("alerts.test.yaml");
    cp.run_tool("promtool", &["test", "rules", test_file.to_str().unwrap()]);

    // The series fed to promtool are shaped as the operator writes them.
    let exported = exported_series();
    let fed: Value = serde_saphyr::from_str(&tests).unwrap();
    for test in fed["tests"].as_array().unwrap() {
        for input in test["input_series"].as_array().unwrap() {
            let series = input["series"].as_str().unwrap();
            assert!(
                exported.contains(&shape(series)),
                "{series} is not shaped like any series the operator exports: {exported:?}"
            );
        }
    }

    // Every dashboard query is valid PromQL (checked as a recording rule) over exported metrics.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join(CHART).join("files/dashboard.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 10, "the dashboard has its panels");
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("dashboard:query_{i}"), "expr": e}))
        .collect();
    let file = dir.join("dashboard-queries.yaml");
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    cp.run_tool("promtool", &["check", "rules", file.to_str().unwrap()]);
    let names: std::collections::BTreeSet<&str> = exported.iter().map(|(name, _)| name.as_str()).collect();
    for expr in exprs.iter().chain(
        rendered
            .lines()
            .filter(|l| l.contains("expr:"))
            .map(|l| l.to_owned())
            .collect::<Vec<_>>()
            .iter(),
    ) {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("twilio_operator_") {
                assert!(
                    names.contains(word),
                    "{expr} names {word}, which the operator does not export"
                );
            }
        }
    }
}

/// A metric name and its label names.
type Shape = (String, std::collections::BTreeSet<String>);

fn shape(series: &str) -> Shape {
    let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
    let labels = labels.trim_end_matches('}');
    let keys = labels
        .split(',')
        .filter(|l| !l.is_empty())
        .map(|l| l.split('=').next().unwrap().trim().to_owned())
        .collect();
    (name.trim().to_owned(), keys)
}

/// Every series shape the operator's metrics render, with each family populated once.
fn exported_series() -> std::collections::BTreeSet<Shape> {
    let m = twilio_operator::metrics::Metrics::default();
    m.reconciled("TwilioApiKey", true, Duration::from_millis(5));
    m.outcome("TwilioApiKey", "ns", "key", false, "AuthenticationFailed");
    m.twilio_request("CreateNewKey", 429);
    m.rotated("TwilioApiKey", "Scheduled");
    m.restarted("Deployment");
    m.key("ns", "key", 0.0, Some(1.0));
    m.usage("ns", "sub", "usd", 1.0);
    m.budget_ratio("ns", "sub", Some(0.5));
    m.voice("ns", "sub", Some((2, 0)));
    m.dialing_repaired("ns", "sub");
    m.account_balance("default", Some(10.0));
    m.render(10.0)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| shape(l.rsplit_once(' ').unwrap().0))
        .collect()
}

/// The Dockerfile picks the Rust target from TARGETARCH: both published architectures map to a
/// static musl target, anything else stops the build with a message (the shell step it runs,
/// run here for each architecture; building the image itself needs a container engine).
#[test]
fn the_dockerfile_builds_for_amd64_and_arm64() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let start = dockerfile.find("case ").expect("a case on the architecture");
    let end = dockerfile[start..].find("esac").expect("its end") + start + "esac".len();
    let step = dockerfile[start..end].replace("\\\n", "\n");
    let target = |arch: &str| {
        std::process::Command::new("bash")
            .args(["-c", &step])
            .env("TARGETARCH", arch)
            .output()
            .unwrap()
    };
    for (arch, rust) in [
        ("amd64", "x86_64-unknown-linux-musl"),
        ("arm64", "aarch64-unknown-linux-musl"),
    ] {
        let out = target(arch);
        assert!(out.status.success(), "{arch}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), rust);
    }
    let other = target("s390x");
    assert!(!other.status.success() && String::from_utf8_lossy(&other.stderr).contains("amd64 or arm64"));
    let values = std::fs::read_to_string(repo_root().join(CHART).join("values.yaml")).unwrap();
    assert!(
        values.contains("repository: twilio-operator\n"),
        "the chart's default image is the documented local build"
    );
    assert!(dockerfile.contains("docker build -t twilio-operator:0.1.0 ."));
}
