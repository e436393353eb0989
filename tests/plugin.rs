//! `kubectl twilio`, run through kubectl as a user would: the plugin on PATH, a tenant's
//! kubeconfig, and a ServiceAccount that may only patch keys rotating them.

mod support;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use support::fixture::Fixture;
use twilio_operator::api::TwilioApiKey;

/// The directory holding the plugin, built by the README's command.
fn plugin_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "kubectl-twilio"])
            .current_dir(support::repo_root())
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build --release --bin kubectl-twilio failed"
        );
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| support::repo_root().join("target"));
        target.join("release")
    })
}

/// Runs `kubectl twilio ARGS` with `kubeconfig`, the plugin on PATH as the README installs it;
/// returns (success, stdout + stderr).
fn kubectl_twilio(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let path = format!(
        "{}:{}",
        plugin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("kubectl")
        .arg("twilio")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (success, text) = kubectl_twilio(kubeconfig, args);
    assert!(success, "kubectl twilio {args:?} failed:\n{text}");
    text
}

fn key_sid(k: &TwilioApiKey) -> Option<String> {
    k.status.as_ref().and_then(|s| s.key_sid.clone())
}

#[tokio::test]
async fn kubectl_twilio_tells_status_rotates_and_shows_the_policy() {
    let f = Fixture::new("plugin", &[]).await;
    f.cp.tenant(&f.ns).await;
    let tenant = f.cp.impersonating_kubeconfig(&f.ns, "tenant");
    let ns = f.ns.as_str();

    let voice = json!({"dialingPermissions": {"countries": [{"isoCode": "US"}]}});
    f.create_subaccount("team", json!({"budget": {"monthly": "100.00"}, "voice": voice}))
        .await;
    let labels = json!({"app": "checkout"});
    for name in ["a", "b"] {
        let key: TwilioApiKey = serde_json::from_value(json!({
            "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
            "metadata": {"name": name, "labels": labels},
            "spec": {"subaccountRef": {"name": "team"}, "rotation": {"every": "720h", "gracePeriod": "1h"}},
        }))
        .unwrap();
        f.keys().create(&Default::default(), &key).await.unwrap();
    }
    f.create("plain", json!({})).await;
    f.create(
        "broken",
        json!({"secret": {"template": {"data": {"a": "{{ nope }}"}}}}),
    )
    .await;
    let a = f.ready("a").await;
    f.ready("b").await;
    f.ready("plain").await;
    f.reason("broken", "TemplateInvalid").await;

    // status: the verdict, the key in use, the next rotation, the subaccount's budget.
    let said = ok(&tenant, &["status", "a", "-n", ns]);
    let sid = key_sid(&a).unwrap();
    for expected in [
        format!("TwilioApiKey {ns}/a"),
        "Ready:          True".into(),
        format!("Key in use:     {sid} in Secret a"),
        "Next rotation:  ".into(),
        "(in 29d 23h".into(),
        "budget 0.0 of 100.00 USD".into(),
    ] {
        assert!(said.contains(&expected), "{expected:?} missing from:\n{said}");
    }
    let said = ok(&tenant, &["status", "broken", "plain", "-n", ns]);
    assert!(
        said.contains("False (TemplateInvalid)") && said.contains("Needs:          a person"),
        "{said}"
    );
    assert!(said.contains("none scheduled (no spec.rotation)"), "{said}");
    let said = ok(&tenant, &["status", "--kind", "subaccount", "team", "-n", ns]);
    assert!(
        said.contains("TwilioSubaccount") && said.contains("2 TwilioApiKeys use it"),
        "{said}"
    );
    assert!(
        said.contains("Voice dialing:  1 country, no high-risk range")
            && said.contains("Matched: As declared"),
        "{said}"
    );

    // rotate by selector as the tenant: each selected key rotates once, the others not at all.
    let said = ok(&tenant, &["rotate", "-l", "app=checkout", "-n", ns]);
    assert!(said.contains("twilioapikey/a rotation requested"), "{said}");
    for name in ["a", "b"] {
        f.ready_where(name, "rotated", |k| {
            k.status.as_ref().is_some_and(|s| s.retiring_keys.len() == 1)
        })
        .await;
    }
    let plain = f.keys().get("plain").await.unwrap();
    assert!(
        plain.status.unwrap().retiring_keys.is_empty(),
        "not selected, not rotated"
    );

    // rotate by name needs nothing but patch on twilioapikeys.
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "rotator"},
        "rules": [{"apiGroups": ["twilio.operator.dev"], "resources": ["twilioapikeys"], "verbs": ["patch"]}],
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "rotator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rotator"},
        "subjects": [{"kind": "ServiceAccount", "name": "rotator", "namespace": ns}],
    }))
    .unwrap();
    let apply = PatchParams::apply("test");
    Api::<Role>::namespaced(f.client.clone(), ns)
        .patch("rotator", &apply, &Patch::Apply(&role))
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(f.client.clone(), ns)
        .patch("rotator", &apply, &Patch::Apply(&binding))
        .await
        .unwrap();
    let rotator = f.cp.impersonating_kubeconfig(ns, "rotator");
    let before = key_sid(&f.keys().get("plain").await.unwrap());
    ok(&rotator, &["rotate", "plain", "-n", ns]);
    f.ready_where("plain", "rotated", |k| key_sid(k) != before).await;
    let (allowed, said) = kubectl_twilio(&rotator, &["status", "plain", "-n", ns]);
    assert!(
        !allowed && said.contains("forbidden"),
        "status needs get:\n{said}"
    );

    // policy, as an admin: which account admits the namespace and what it allows.
    let said = ok(&f.cp.kubeconfig, &["policy", ns]);
    assert!(
        said.contains(&format!(
            "TwilioAccount default (used when accountRef is absent): admits {ns}"
        )),
        "{said}"
    );
    assert!(
        said.contains("types Standard, Restricted") && said.contains("deletionPolicy Retain, Suspend, Close"),
        "{said}"
    );
    assert!(
        said.contains("voice dialing optional: any country, high-risk ranges Forbid"),
        "{said}"
    );
    let outside = f.cp.namespace("plugin-outside").await;
    let said = ok(&f.cp.kubeconfig, &["policy", &outside]);
    assert!(
        said.contains(&format!("No TwilioAccount admits namespace {outside}")),
        "{said}"
    );
}

/// The krew manifest template, rendered as krew-release-bot would for this version, is a krew
/// Plugin whose every platform installs the binary this workspace builds.
#[test]
fn the_krew_manifest_renders_to_a_plugin_for_the_built_binary() {
    let template = std::fs::read_to_string(support::repo_root().join("plugins/krew/twilio.yaml")).unwrap();
    let tag = format!("v{}", env!("CARGO_PKG_VERSION"));
    let mut rendered = String::new();
    for line in template.lines() {
        let line = line.replace("{{ .TagName }}", &tag);
        match line.split_once("{{ addURIAndSha \"") {
            Some((indent, rest)) => {
                let uri = rest.split_once('"').unwrap().0;
                rendered += &format!("{indent}uri: {uri}\n{indent}sha256: {}\n", "0".repeat(64));
            }
            None => rendered += &format!("{line}\n"),
        }
    }
    let plugin: serde_json::Value =
        serde_saphyr::from_str(&rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    assert_eq!(plugin["kind"], "Plugin");
    assert_eq!(
        plugin["metadata"]["name"], "twilio",
        "installed as `kubectl twilio`"
    );
    assert_eq!(plugin["spec"]["version"], tag.as_str());
    let platforms = plugin["spec"]["platforms"].as_array().unwrap();
    assert!(!platforms.is_empty());
    for platform in platforms {
        assert_eq!(platform["bin"], "kubectl-twilio");
        let uri = platform["uri"].as_str().unwrap();
        assert!(uri.contains(&tag) && uri.ends_with(".tar.gz"), "{uri}");
    }
}
