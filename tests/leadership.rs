//! A leader's fencing and memory in smaller cases: a renew deadline not shorter than the Lease
//! is refused at start, and a key revoked while its status cannot be written is revoked and
//! announced once. The chaos test is `tests/chaos.rs`.

mod support;

use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::cluster;
use support::emulator::Emulator;
use support::operator::Operator;

/// Refuses every status write to TwilioApiKeys in `ns`, as an apiserver that takes reads but
/// not writes would; dropping the returned names' objects lets writes through again.
async fn refuse_key_status_writes(client: &kube::Client, ns: &str) -> String {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let name = format!("refuse-key-status-{ns}");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["twilio.operator.dev"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"], "resources": ["twilioapikeys/status"],
            }]},
            "validations": [{"expression": "false", "message": "status writes are refused in this test"}],
        },
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
        },
    }))
    .unwrap();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    policies.create(&PostParams::default(), &policy).await.unwrap();
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    name
}

/// How many passes the operator has made over TwilioApiKeys, from its metrics.
async fn key_passes(operator: &Operator) -> f64 {
    let metrics = operator.metrics().await;
    metrics
        .lines()
        .filter(|l| l.starts_with("twilio_operator_reconciles_total{") && l.contains("kind=\"TwilioApiKey\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_key_revoked_while_status_writes_fail_is_revoked_and_announced_once() {
    use support::fixture::Fixture;
    let f = Fixture::new("unwritable", &[]).await;
    f.create("k", json!({"rotation": {"every": "720h", "gracePeriod": "4s"}}))
        .await;
    let key = f.ready("k").await;
    let old = key.status.unwrap().key_sid.unwrap();
    f.annotate("k", "twilio.operator.dev/rotate", "1").await;
    let rotated = f
        .ready_where("k", "rotated", |k| {
            k.status.as_ref().unwrap().key_sid.as_deref() != Some(old.as_str())
        })
        .await;
    assert_eq!(rotated.status.unwrap().retiring_keys.len(), 1, "{old} retires");

    // From now on Kubernetes takes no status write of the key, so the revocation at revokeAt is
    // never recorded, and every later pass reads a status that still lists the old key.
    let policy = refuse_key_status_writes(&f.client, &f.ns).await;
    let deletes = |requests: &[Value]| {
        requests
            .iter()
            .filter(|r| r["operation"].as_str().is_some_and(|o| o.contains("DeleteKey")))
            .filter(|r| r["path"].as_str().is_some_and(|p| p.contains(&old)))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while deletes(&f.emu.requests().await) == 0 {
        assert!(
            Instant::now() < deadline,
            "{old} was never revoked:\n{}",
            f.operator_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Two more passes, each reading the status that still lists the revoked key.
    let operator = f.operator.as_ref().unwrap();
    let passes = key_passes(operator).await;
    while key_passes(operator).await < passes + 2.0 {
        assert!(
            Instant::now() < deadline,
            "no further passes:\n{}",
            f.operator_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let announced = f
        .events("k")
        .await
        .into_iter()
        .filter(|(_, reason, message)| reason == "KeyRevoked" && message.contains(&old))
        .count();
    assert_eq!(deletes(&f.emu.requests().await), 1, "one call to revoke {old}");
    assert_eq!(announced, 1, "one KeyRevoked event for {old}");

    // Writes come back: the status records the revocation.
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let _ = Api::<ValidatingAdmissionPolicyBinding>::all(f.client.clone())
        .delete(&policy, &DeleteParams::default())
        .await;
    let _ = Api::<ValidatingAdmissionPolicy>::all(f.client.clone())
        .delete(&policy, &DeleteParams::default())
        .await;
    f.ready_where("k", "the revocation recorded", |k| {
        k.status.as_ref().unwrap().retiring_keys.is_empty()
    })
    .await;
    assert_eq!(
        deletes(&f.emu.requests().await),
        1,
        "still one call to revoke {old}"
    );
}

#[tokio::test]
async fn a_renew_deadline_not_shorter_than_the_lease_is_refused_at_start() {
    let cp = cluster();
    let ns = cp.tenant_namespace("deadline").await;
    let emu = Emulator::start(&[]);
    let env = [
        ("WATCH_NAMESPACES", ns.as_str()),
        ("POD_NAMESPACE", ns.as_str()),
        ("LEADER_ELECT", "true"),
        ("LEADER_ELECTION_LEASE_SECONDS", "15"),
        ("LEADER_ELECTION_RENEW_DEADLINE", "15s"),
    ];
    let mut operator = Operator::start_as(cp, &emu, &cp.kubeconfig, &env);
    let status = operator.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the operator refused to start");
    let log = std::fs::read_to_string(&operator.log).unwrap();
    assert!(
        log.contains("the renew deadline (15s) must be shorter than the leader-election Lease (15s)"),
        "{log}"
    );
}
