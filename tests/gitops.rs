//! What GitOps tools read of the operator's objects: kstatus (Flux, kpt, cli-utils waits),
//! computed by the kstatus library itself on live objects.

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use support::fixture::{Fixture, WAIT};
use support::operator::wait_for;
use twilio_operator::api::{TwilioAccount, TwilioApiKey, TwilioSubaccount};

/// The directory of the Go test tools (kstatus, argolua), built on first use.
fn tools() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let out = support::setup_script("tools.sh");
        PathBuf::from(out.lines().last().expect("tools.sh prints a directory").trim())
    })
    .clone()
}

/// Runs tool `name` with `args` on `input` and returns its stdout.
fn run(name: &str, args: &[&str], input: &str) -> String {
    let mut child = Command::new(tools().join(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What the GitOps tools read of object `name` as stored now: kstatus' (status, message) and
/// Argo CD's health (status, message) through the chart's health.lua. With
/// `CAPTURE_ARGOCD_FIXTURES` set, the object is also written to tests/argocd/testdata/`case`.yaml.
async fn judge<K>(api: &Api<K>, name: &str, case: &str) -> Judged
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut raw: Value = api
        .get_opt(name)
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
        .unwrap_or_else(|| panic!("{name} exists"));
    raw["metadata"].as_object_mut().unwrap().remove("managedFields");
    if std::env::var_os("CAPTURE_ARGOCD_FIXTURES").is_some() {
        let path = argocd_dir().join("testdata").join(format!("{}.yaml", slug(case)));
        std::fs::write(&path, serde_saphyr::to_string(&raw).unwrap()).unwrap();
    }
    let line = |out: String| -> (String, String) {
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        let field = |k: &str| v[k].as_str().unwrap().to_owned();
        (field("status"), field("message"))
    };
    Judged {
        kstatus: line(run("kstatus", &[], &raw.to_string())),
        argocd: line(run(
            "argolua",
            &["health", health_lua().to_str().unwrap()],
            &raw.to_string(),
        )),
    }
}

struct Judged {
    kstatus: (String, String),
    argocd: (String, String),
}

fn slug(case: &str) -> String {
    case.to_lowercase().replace(' ', "-")
}

fn argocd_dir() -> PathBuf {
    support::repo_root().join("tests/argocd")
}

fn health_lua() -> PathBuf {
    support::repo_root().join("charts/twilio-operator/files/argocd/health.lua")
}

fn ready_condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn kstatus_reads_current_in_progress_and_failed_as_the_operator_means_them() {
    let mut f = Fixture::new("kstatus", &[]).await;
    let mut table: Vec<(String, Judged)> = Vec::new();
    // kstatus must read `want`, Argo CD `argocd`, and both must carry the operator's words `said`.
    let mut expect = |case: &str, got: Judged, want: [&str; 2], said: &str| {
        assert_eq!(got.kstatus.0, want[0], "{case}: kstatus says {:?}", got.kstatus);
        assert_eq!(got.argocd.0, want[1], "{case}: Argo CD says {:?}", got.argocd);
        for (tool, message) in [("kstatus", &got.kstatus.1), ("Argo CD", &got.argocd.1)] {
            assert!(
                message.contains(said),
                "{case}: {tool} says {message:?}, not {said:?}"
            );
        }
        table.push((case.to_owned(), got));
    };

    // Ready objects are Current.
    f.create_subaccount("team", json!({"friendlyName": "team"})).await;
    let subs = f.subaccounts();
    wait_for(&subs, "team", WAIT, "Ready", |s: &TwilioSubaccount| {
        s.status.as_ref().is_some_and(|st| {
            ready_condition(&st.conditions).is_some_and(|(status, _)| status == "True")
                && st.observed_generation == s.metadata.generation
        })
    })
    .await;
    expect(
        "Ready subaccount",
        judge(&subs, "team", "Ready subaccount").await,
        ["Current", "Healthy"],
        "",
    );
    f.create("ready", json!({})).await;
    f.ready("ready").await;
    expect(
        "Ready key",
        judge(&f.keys(), "ready", "Ready key").await,
        ["Current", "Healthy"],
        "",
    );

    // A key no pass has judged yet, and one whose create is in flight, are InProgress.
    let unwatched = f.cp.namespace("kstatus-unwatched").await;
    let api: Api<TwilioApiKey> = Api::namespaced(f.client.clone(), &unwatched);
    let key: TwilioApiKey = serde_json::from_value(json!({
        "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
        "metadata": {"name": "unjudged"}, "spec": {},
    }))
    .unwrap();
    api.create(&PostParams::default(), &key).await.unwrap();
    expect(
        "key not reconciled yet",
        judge(&api, "unjudged", "key not reconciled yet").await,
        ["InProgress", "Progressing"],
        "generation",
    );
    f.emu.configure(json!({"knobs": {"latency_ms": 3000}})).await;
    f.create("creating", json!({})).await;
    f.reason("creating", "Pending").await;
    expect(
        "key being created",
        judge(&f.keys(), "creating", "key being created").await,
        ["InProgress", "Progressing"],
        "Creating the TwilioApiKey",
    );
    f.emu.configure(json!({"knobs": {"latency_ms": 0}})).await;
    f.ready("creating").await;

    // What needs a person is Failed, with the operator's message.
    f.create(
        "template",
        json!({"secret": {"template": {"data": {"a": "{{ apiSecret | reverse }}"}}}}),
    )
    .await;
    f.reason("template", "TemplateInvalid").await;
    expect(
        "invalid template",
        judge(&f.keys(), "template", "invalid template").await,
        ["Failed", "Degraded"],
        "unknown filter",
    );
    let edit = json!({"spec": {"secret": {"template": {"data": {"a": "{{ nope }}"}}}}});
    f.keys()
        .patch("ready", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    wait_for(
        &f.keys(),
        "ready",
        WAIT,
        "TemplateInvalid at generation 2",
        |k: &TwilioApiKey| {
            k.status.as_ref().is_some_and(|st| {
                st.observed_generation == Some(2)
                    && ready_condition(&st.conditions).is_some_and(|(_, reason)| reason == "TemplateInvalid")
            })
        },
    )
    .await;
    expect(
        "Ready key edited into an invalid template",
        judge(&f.keys(), "ready", "Ready key edited into an invalid template").await,
        ["Failed", "Degraded"],
        "unknown variable",
    );

    // A namespace no TwilioAccount admits.
    let refused = f.cp.namespace("kstatus-refused").await;
    f.restart_operator(&[("WATCH_NAMESPACES", &format!("{},{refused}", f.ns))]);
    let api: Api<TwilioApiKey> = Api::namespaced(f.client.clone(), &refused);
    let key: TwilioApiKey = serde_json::from_value(json!({
        "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
        "metadata": {"name": "outsider"}, "spec": {},
    }))
    .unwrap();
    api.create(&PostParams::default(), &key).await.unwrap();
    wait_for(&api, "outsider", WAIT, "NotPermitted", |k: &TwilioApiKey| {
        k.status
            .as_ref()
            .is_some_and(|st| ready_condition(&st.conditions).is_some_and(|(_, r)| r == "NotPermitted"))
    })
    .await;
    expect(
        "namespace not admitted",
        judge(&api, "outsider", "namespace not admitted").await,
        ["Failed", "Degraded"],
        "TwilioAccount",
    );

    // An account whose credentials Twilio refuses, and a key that uses it.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "bogus"},
        "stringData": {"TWILIO_ACCOUNT_SID": support::emulator::MAIN_SID, "TWILIO_AUTH_TOKEN": "0".repeat(32)},
    }))
    .unwrap();
    f.secrets().create(&PostParams::default(), &secret).await.unwrap();
    let account = format!("{}-bogus", f.ns);
    f.cp.apply_account(
        &account,
        json!({
            "credentials": {"secretRef": {"namespace": f.ns, "name": "bogus"}},
            "namespaces": {"names": [f.ns]},
        }),
    )
    .await;
    let accounts: Api<TwilioAccount> = Api::all(f.client.clone());
    wait_for(
        &accounts,
        &account,
        WAIT,
        "AuthenticationFailed",
        |a: &TwilioAccount| {
            a.status.as_ref().is_some_and(|st| {
                ready_condition(&st.conditions).is_some_and(|(_, r)| r == "AuthenticationFailed")
            })
        },
    )
    .await;
    expect(
        "account with refused credentials",
        judge(&accounts, &account, "account with refused credentials").await,
        ["Failed", "Degraded"],
        "Check spec.credentials",
    );
    f.create("refused", json!({"accountRef": {"name": account}}))
        .await;
    f.reason("refused", "AuthenticationFailed").await;
    expect(
        "key of that account",
        judge(&f.keys(), "refused", "key of that account").await,
        ["Failed", "Degraded"],
        "its TwilioAccount's spec.credentials",
    );

    // A deleting object is Terminating while its finalizer holds it.
    f.operator = None;
    f.keys()
        .delete("creating", &DeleteParams::default())
        .await
        .unwrap();
    expect(
        "key being deleted",
        judge(&f.keys(), "creating", "key being deleted").await,
        ["Terminating", "Progressing"],
        "for deletion",
    );
    f.restart_operator(&[]);
    support::operator::wait_gone(&f.keys(), "creating", WAIT).await;

    // `kubectl wait --for=condition=Ready` keeps working beside the kstatus conditions.
    let wait = |condition: &str, object: &str| {
        let condition = format!("--for=condition={condition}");
        f.cp.run_tool(
            "kubectl",
            &["wait", &condition, "--timeout=60s", "-n", &f.ns, object],
        );
    };
    wait("Ready", "twiliosubaccount/team");
    wait("Stalled", "twilioapikey/template");

    println!(
        "{:<45} {:<11} {:<12} message (kstatus)",
        "live object", "kstatus", "Argo CD"
    );
    for (case, got) in &table {
        println!(
            "{case:<45} {:<11} {:<12} {}",
            got.kstatus.0, got.argocd.0, got.kstatus.1
        );
    }
}

/// A YAML file as JSON.
fn yaml_file(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn argocd_health_passes_its_tests_on_fixtures_captured_from_live_objects() {
    // The layout and format of Argo CD's own resource_customizations tests.
    let dir = argocd_dir();
    let tests = yaml_file(&dir.join("health_test.yaml"));
    let tests = tests["tests"].as_array().expect("tests: [...]");
    assert!(tests.len() >= 8, "a fixture per state");
    for test in tests {
        let input = yaml_file(&dir.join(test["inputPath"].as_str().unwrap()));
        let out = run(
            "argolua",
            &["health", health_lua().to_str().unwrap()],
            &input.to_string(),
        );
        let got: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(got, test["healthStatus"], "{}", test["inputPath"]);
    }
}

#[tokio::test]
async fn the_argocd_rotate_action_rotates_a_live_key() {
    let f = Fixture::new("argocd-rotate", &[]).await;
    f.create("app", json!({})).await;
    let before = f.ready("app").await;
    let dir = support::repo_root().join("charts/twilio-operator/files/argocd/TwilioApiKey/actions");
    let script = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let live = serde_json::to_value(&before).unwrap().to_string();

    let offered: Value =
        serde_json::from_str(&run("argolua", &["discovery", &script("discovery.lua")], &live)).unwrap();
    assert_eq!(offered, json!({"rotate": {"disabled": false}}));
    let deleting = yaml_file(&argocd_dir().join("testdata/key-being-deleted.yaml")).to_string();
    let offered: Value = serde_json::from_str(&run(
        "argolua",
        &["discovery", &script("discovery.lua")],
        &deleting,
    ))
    .unwrap();
    assert_eq!(
        offered,
        json!({"rotate": {"disabled": true}}),
        "no rotation of a key being deleted"
    );

    // Argo CD patches the live object with what the action returned.
    let acted: Value =
        serde_json::from_str(&run("argolua", &["action", &script("rotate/action.lua")], &live)).unwrap();
    let asked = acted["metadata"]["annotations"]["twilio.operator.dev/rotate"]
        .as_str()
        .expect("the action sets the rotate annotation")
        .to_owned();
    asked
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{asked}: {e}"));
    assert_eq!(
        acted["spec"],
        serde_json::to_value(&before.spec).unwrap(),
        "nothing else changes"
    );
    let patch = json!({"metadata": {"annotations": acted["metadata"]["annotations"]}});
    f.keys()
        .patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let old = before.status.unwrap().key_sid;
    let after = f
        .ready_where("app", "rotated", |k| {
            k.status.as_ref().is_some_and(|s| s.key_sid != old)
                && k.status.as_ref().unwrap().last_rotation_request.as_deref() == Some(asked.as_str())
        })
        .await;
    assert!(
        after
            .status
            .unwrap()
            .retiring_keys
            .iter()
            .any(|r| Some(&r.sid) == old.as_ref())
    );
}

/// The README's command merges the health checks and actions into an existing argocd-cm, keeping
/// what Argo CD had there.
#[tokio::test]
async fn the_readme_merges_the_argocd_customizations_into_argocd_cm() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    let cp = support::cluster();
    let namespaces: Api<Namespace> = Api::all(cp.admin());
    let argocd: Namespace = serde_json::from_value(json!({"metadata": {"name": "argocd"}})).unwrap();
    namespaces.create(&PostParams::default(), &argocd).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(cp.admin(), "argocd");
    let existing: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "argocd-cm"}, "data": {"url": "https://argocd.example.com"},
    }))
    .unwrap();
    maps.create(&PostParams::default(), &existing).await.unwrap();
    let file = support::repo_root().join("deploy/argocd-cm.yaml");
    cp.run_tool(
        "kubectl",
        &[
            "patch",
            "configmap",
            "argocd-cm",
            "-n",
            "argocd",
            "--patch-file",
            file.to_str().unwrap(),
        ],
    );
    let data = maps.get("argocd-cm").await.unwrap().data.unwrap();
    assert_eq!(
        data["url"], "https://argocd.example.com",
        "Argo CD's own settings stay"
    );
    let health = std::fs::read_to_string(health_lua()).unwrap();
    for kind in ["TwilioAccount", "TwilioSubaccount", "TwilioApiKey"] {
        let key = format!("resource.customizations.health.twilio.operator.dev_{kind}");
        assert_eq!(data[&key].trim(), health.trim(), "{key}");
    }
    let actions: Value =
        serde_saphyr::from_str(&data["resource.customizations.actions.twilio.operator.dev_TwilioApiKey"])
            .unwrap();
    assert_eq!(actions["definitions"][0]["name"], "rotate");
    assert!(actions["discovery.lua"].as_str().unwrap().contains("rotate"));
}
