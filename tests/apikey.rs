//! TwilioApiKey end to end: the operator process against the real control plane and the
//! emulator, driven through the Kubernetes API as a user would.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;
use support::emulator::MAIN_SID;
use support::fixture::{Fixture, WAIT};
use support::operator::{sample, wait_for, wait_gone};
use twilio_operator::api::TwilioApiKey;
use twilio_operator::conditions::is_ready;
use twilio_operator::twilio::Credentials;
use twilio_sandbox::rollout;

fn status(key: &TwilioApiKey) -> twilio_operator::api::TwilioApiKeyStatus {
    key.status.clone().expect("status")
}

#[tokio::test]
async fn a_key_is_created_published_and_authenticates() {
    let f = Fixture::new("publish", &[]).await;
    f.create("notifier", json!({})).await;
    let key = f.ready("notifier").await;
    let st = status(&key);
    assert_eq!(st.account_sid.as_deref(), Some(MAIN_SID));
    assert_eq!(st.secret_name.as_deref(), Some("notifier"));
    assert!(st.key_created_at.is_some() && st.next_rotation_at.is_none() && st.retiring_keys.is_empty());

    let secret = f.secrets().get("notifier").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(secret.labels()["app.kubernetes.io/managed-by"], "twilio-operator");
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("TwilioApiKey", key.uid().unwrap().as_str(), Some(true))
    );
    let creds = f.published("notifier").await;
    assert_eq!(creds.username(), st.key_sid.as_deref().unwrap());
    assert!(f.works(&creds).await, "the published key authenticates");
    assert_eq!(
        f.tagged(&key).await,
        vec![st.key_sid.clone().unwrap()],
        "exactly one key at Twilio"
    );

    // Status, events and the operator's log hold no secret.
    let secret_value = String::from_utf8(secret.data.unwrap()["TWILIO_API_SECRET"].0.clone()).unwrap();
    let message = f.wait_event("notifier", "KeyCreated").await;
    assert!(message.contains(st.key_sid.as_deref().unwrap()));
    assert!(!serde_json::to_string(&key).unwrap().contains(&secret_value));
    assert!(!format!("{:?}", f.events("notifier").await).contains(&secret_value));
    assert!(
        !std::fs::read_to_string(&f.operator.as_ref().unwrap().log)
            .unwrap()
            .contains(&secret_value)
    );
    f.emu.assert_contract_clean().await;
}

#[tokio::test]
async fn secret_layout_follows_the_spec() {
    let f = Fixture::new("layout", &[]).await;
    f.create(
        "checkout",
        json!({"friendlyName": "checkout service", "secret": {
            "name": "checkout-twilio", "labels": {"team": "payments"}, "annotations": {"owner": "payments@example.com"},
            "keys": {"accountSid": "SID", "apiKey": "KEY", "apiSecret": "SECRET"}
        }}),
    )
    .await;
    let key = f.ready("checkout").await;
    let secret = f.secrets().get("checkout-twilio").await.unwrap();
    assert_eq!(secret.labels()["team"], "payments");
    assert_eq!(secret.annotations()["owner"], "payments@example.com");
    let data = secret.data.unwrap();
    assert_eq!(data.keys().cloned().collect::<Vec<_>>(), ["KEY", "SECRET", "SID"]);
    let creds = Credentials::with_api_key(
        String::from_utf8(data["SID"].0.clone()).unwrap(),
        String::from_utf8(data["KEY"].0.clone()).unwrap(),
        SecretString::from(String::from_utf8(data["SECRET"].0.clone()).unwrap()),
    )
    .unwrap();
    assert!(f.works(&creds).await);
    let at_twilio = f
        .emu
        .client()
        .fetch_key(
            &f.emu.main_credentials(),
            MAIN_SID,
            status(&key).key_sid.as_deref().unwrap(),
        )
        .await
        .unwrap();
    assert!(
        at_twilio
            .friendly_name
            .unwrap()
            .starts_with("checkout service [twop:")
    );
}

#[tokio::test]
async fn restricted_keys_get_their_permissions_and_updates_apply_in_place() {
    let f = Fixture::new("restricted", &[]).await;
    f.create(
        "reader",
        json!({"keyType": "Restricted", "permissions": ["/twilio/messaging/messages/create"]}),
    )
    .await;
    let key = f.ready("reader").await;
    let sid = status(&key).key_sid.unwrap();
    let creds = f.published("reader").await;
    let policy = |state: &Value| {
        state["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["sid"] == sid.as_str())
            .map(|k| k["policy"].clone())
    };
    assert_eq!(
        policy(&f.emu.state().await),
        Some(json!(["/twilio/messaging/messages/create"]))
    );
    assert!(
        f.emu.client().fetch_balance(&creds, MAIN_SID).await.is_err(),
        "balance is not in the policy"
    );

    f.keys()
        .patch("reader", &PatchParams::default(), &Patch::Merge(json!({"spec": {"permissions": ["/twilio/messaging/messages/create", "/twilio/billing/balance/read"]}})))
        .await
        .unwrap();
    let updated = f
        .ready_where("reader", "updated", |k| k.metadata.generation == Some(2))
        .await;
    assert_eq!(
        status(&updated).key_sid.as_deref(),
        Some(sid.as_str()),
        "the same key, updated in place"
    );
    assert_eq!(
        policy(&f.emu.state().await),
        Some(json!([
            "/twilio/messaging/messages/create",
            "/twilio/billing/balance/read"
        ]))
    );
    f.emu
        .client()
        .fetch_balance(&creds, MAIN_SID)
        .await
        .expect("the new permission works at once");
    f.emu.assert_contract_clean().await;
}

#[tokio::test]
async fn on_demand_rotation_overlaps_then_revokes_and_rolls_workloads_once() {
    let mut f = Fixture::new("rotate", &[]).await;
    let deployments = create_web(&f).await;
    f.create_with(
        "api",
        json!({"twilio.operator.dev/rotate": "initial"}),
        json!({"rotation": {"every": "24h", "gracePeriod": "20s"}, "restartWorkloads": [{"kind": "Deployment", "name": "web"}]}),
    )
    .await;
    let first = f.ready("api").await;
    let old_sid = status(&first).key_sid.unwrap();
    assert_eq!(
        status(&first).last_rotation_request.as_deref(),
        Some("initial"),
        "the annotation present at creation is consumed"
    );
    assert!(status(&first).next_rotation_at.is_some());
    let rolled = deployments.get("web").await.unwrap();
    let annotation = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap_or_default()
            .get("twilio.operator.dev/api-key-sid")
            .cloned()
    };
    assert_eq!(annotation(&rolled).as_deref(), Some(old_sid.as_str()));
    let generation_after_first = rolled.metadata.generation.unwrap();
    let old_creds = f.published("api").await;
    // At the pods: the Deployment runs, every pod from the ReplicaSet with the first key.
    let pods_before = rollout::settled(&f.client, &f.ns, "web", WAIT).await.unwrap();

    f.annotate("api", "twilio.operator.dev/rotate", "2026-12-01T10:00")
        .await;
    let rotated = f
        .ready_where("api", "rotated", |k| {
            k.status.as_ref().unwrap().last_rotation_request.as_deref() == Some("2026-12-01T10:00")
        })
        .await;
    let st = status(&rotated);
    let new_sid = st.key_sid.clone().unwrap();
    assert_ne!(new_sid, old_sid);
    assert_eq!(
        st.retiring_keys
            .iter()
            .map(|r| r.sid.as_str())
            .collect::<Vec<_>>(),
        [old_sid.as_str()]
    );
    let new_creds = f.published("api").await;
    assert!(f.works(&new_creds).await, "the new key works");
    assert!(
        f.works(&old_creds).await,
        "the old key works during the grace period: {st:?}\n{}",
        f.operator_log()
    );
    let rolled = deployments.get("web").await.unwrap();
    assert_eq!(annotation(&rolled).as_deref(), Some(new_sid.as_str()));
    assert_eq!(
        rolled.metadata.generation.unwrap(),
        generation_after_first + 1,
        "one roll for one new key"
    );
    f.wait_event("api", "KeyRotated").await;

    f.ready_where("api", "done retiring", |k| {
        k.status.as_ref().unwrap().retiring_keys.is_empty()
    })
    .await;
    assert!(
        !f.works(&old_creds).await,
        "the old key is revoked after the grace period"
    );
    assert!(f.works(&new_creds).await);
    // At the pods: one new ReplicaSet whose pods run, the old pods gone, no second roll.
    let pods_after = rollout::settled(&f.client, &f.ns, "web", WAIT).await.unwrap();
    rollout::rolled_once(&pods_before, &pods_after).unwrap();

    // A restart (or a leader change) neither rotates nor rolls anything.
    f.restart_operator(&[]);
    f.annotate("api", "unrelated", "touch").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = f.ready("api").await;
    assert_eq!(status(&after).key_sid.as_deref(), Some(new_sid.as_str()));
    assert_eq!(
        deployments.get("web").await.unwrap().metadata.generation.unwrap(),
        generation_after_first + 1
    );
    assert_eq!(
        rollout::settled(&f.client, &f.ns, "web", WAIT).await.unwrap(),
        pods_after,
        "the same pods still run"
    );
    assert_eq!(f.tagged(&after).await, vec![new_sid]);
    f.emu.assert_contract_clean().await;
}

#[tokio::test]
async fn scheduled_rotation_happens_when_due() {
    let f = Fixture::new("schedule", &[]).await;
    f.create(
        "cron",
        json!({"rotation": {"every": "720h", "gracePeriod": "0s"}}),
    )
    .await;
    let key = f.ready("cron").await;
    let old_sid = status(&key).key_sid.unwrap();
    // Travel in time: the record says the key is a period old.
    let moved =
        |k: &TwilioApiKey| k.status.as_ref().and_then(|s| s.key_sid.as_deref()) != Some(old_sid.as_str());
    f.time_travel(
        &f.keys(),
        "cron",
        json!({"keyCreatedAt": "2020-01-01T00:00:00Z"}),
        moved,
    )
    .await;
    let rotated = f
        .ready_where("cron", "rotated", |k| {
            k.status.as_ref().unwrap().key_sid.as_deref() != Some(old_sid.as_str())
        })
        .await;
    let st = status(&rotated);
    let next = st.next_rotation_at.unwrap().0;
    let created = st.key_created_at.unwrap().0;
    let period = next.duration_since(created).as_secs_f64();
    assert!(
        period <= 720.0 * 3600.0 && period > 719.0 * 3600.0,
        "next rotation one period (minus jitter) later: {period}s"
    );
    f.ready_where("cron", "old revoked", |k| {
        k.status.as_ref().unwrap().retiring_keys.is_empty()
    })
    .await;
    assert_eq!(
        f.tagged(&rotated).await,
        vec![st.key_sid.unwrap()],
        "a zero grace period revokes the old key at once"
    );
}

#[tokio::test]
async fn deleting_the_object_revokes_its_keys_unless_retained() {
    let f = Fixture::new("delete", &[]).await;
    f.create("gone", json!({})).await;
    f.create("kept", json!({"deletionPolicy": "Retain"})).await;
    let gone = f.ready("gone").await;
    let kept = f.ready("kept").await;
    let gone_creds = f.published("gone").await;
    let kept_creds = f.published("kept").await;
    f.keys().delete("gone", &DeleteParams::default()).await.unwrap();
    f.keys().delete("kept", &DeleteParams::default()).await.unwrap();
    wait_gone(&f.keys(), "gone", WAIT).await;
    wait_gone(&f.keys(), "kept", WAIT).await;
    assert!(f.tagged(&gone).await.is_empty(), "Delete revokes");
    assert!(!f.works(&gone_creds).await);
    assert_eq!(f.tagged(&kept).await.len(), 1, "Retain leaves the key");
    assert!(f.works(&kept_creds).await);
}

/// A namespace torn down with its credentials Secret first still goes away; the key is left at
/// Twilio, since an object with credentialsRef never borrows the operator's credentials.
#[tokio::test]
async fn namespace_deletion_completes_even_without_the_credentials_secret() {
    let f = Fixture::new("nsdelete", &[]).await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "parent"},
        "stringData": {"TWILIO_ACCOUNT_SID": MAIN_SID, "TWILIO_AUTH_TOKEN": support::emulator::MAIN_TOKEN}
    }))
    .unwrap();
    f.secrets().create(&PostParams::default(), &secret).await.unwrap();
    f.create("tenant-key", json!({"credentialsRef": {"name": "parent"}}))
        .await;
    let key = f.ready("tenant-key").await;
    // The credentials go first, as they may when a namespace is torn down.
    f.secrets()
        .delete("parent", &DeleteParams::default())
        .await
        .unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(f.client.clone());
    namespaces.delete(&f.ns, &DeleteParams::default()).await.unwrap();
    wait_gone(&namespaces, &f.ns, Duration::from_secs(120)).await;
    assert_eq!(
        f.tagged(&key).await.len(),
        1,
        "the operator's own credentials were not used"
    );
}

/// A second, unrelated Twilio account that the operator's own credentials cannot reach, its
/// credentials in the Secret `name` of the fixture's namespace.
async fn foreign_account(f: &Fixture, name: &str) -> Value {
    let other: Value = reqwest::Client::new()
        .post(format!("{}/_emulator/accounts", f.emu.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"TWILIO_ACCOUNT_SID": other["sid"], "TWILIO_AUTH_TOKEN": other["auth_token"]}
    }))
    .unwrap();
    f.secrets().create(&PostParams::default(), &secret).await.unwrap();
    other
}

#[tokio::test]
async fn impossible_revocation_warns_and_lets_go() {
    let f = Fixture::new("orphaned", &[]).await;
    foreign_account(&f, "other").await;
    f.create("stranded", json!({"credentialsRef": {"name": "other"}}))
        .await;
    let key = f.ready("stranded").await;
    let sid = status(&key).key_sid.unwrap();
    f.secrets()
        .delete("other", &DeleteParams::default())
        .await
        .unwrap();
    f.keys()
        .delete("stranded", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&f.keys(), "stranded", WAIT).await;
    let warning = f.wait_event("stranded", "RevokeFailed").await;
    assert!(
        warning.contains(&sid),
        "the warning names the key left behind: {warning}"
    );
    assert_eq!(f.tagged(&key).await, vec![sid]);
}

/// Credentials that exist but are refused (a token rotated elsewhere) can be fixed, so the
/// deletion waits for them, saying why in Ready and an event, instead of leaving a working key
/// behind at Twilio.
#[tokio::test]
async fn refused_credentials_hold_the_deletion_until_they_work() {
    let f = Fixture::new("held", &[]).await;
    let other = foreign_account(&f, "other").await;
    f.create("held", json!({"credentialsRef": {"name": "other"}}))
        .await;
    let key = f.ready("held").await;
    let sid = status(&key).key_sid.unwrap();
    let token = |t: &str| json!({"stringData": {"TWILIO_AUTH_TOKEN": t}});
    f.secrets()
        .patch("other", &PatchParams::default(), &Patch::Merge(token("refused")))
        .await
        .unwrap();
    f.keys().delete("held", &DeleteParams::default()).await.unwrap();

    let held = f.reason("held", "AuthenticationFailed").await;
    assert!(held.metadata.deletion_timestamp.is_some());
    let warning = f.wait_event("held", "AuthenticationFailed").await;
    assert!(
        warning.contains("deletionPolicy: Retain"),
        "the way out is named: {warning}"
    );
    assert_eq!(
        f.tagged(&key).await,
        vec![sid.clone()],
        "the key still works meanwhile"
    );

    let restored = token(other["auth_token"].as_str().unwrap());
    f.secrets()
        .patch("other", &PatchParams::default(), &Patch::Merge(restored))
        .await
        .unwrap();
    wait_gone(&f.keys(), "held", WAIT).await;
    assert!(
        f.tagged(&key).await.is_empty(),
        "revoked once the credentials work"
    );
}

#[tokio::test]
async fn a_deleted_or_edited_secret_gets_a_new_key() {
    let f = Fixture::new("repair", &[]).await;
    f.create("svc", json!({"rotation": {"every": "24h", "gracePeriod": "1h"}}))
        .await;
    let first = status(&f.ready("svc").await).key_sid.unwrap();
    f.secrets().delete("svc", &DeleteParams::default()).await.unwrap();
    let second = f
        .ready_where("svc", "reissued", |k| {
            k.status.as_ref().unwrap().key_sid.as_deref() != Some(first.as_str())
        })
        .await;
    let st = status(&second);
    assert_eq!(
        st.retiring_keys
            .iter()
            .map(|r| r.sid.as_str())
            .collect::<Vec<_>>(),
        [first.as_str()],
        "the old key retires"
    );
    assert!(f.works(&f.published("svc").await).await);
    f.wait_event("svc", "KeyReissued").await;

    let second_sid = st.key_sid.unwrap();
    let edit = json!({"stringData": {"TWILIO_API_SECRET": "not-the-secret"}});
    f.secrets()
        .patch("svc", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    let third = f
        .ready_where("svc", "reissued again", |k| {
            k.status.as_ref().unwrap().key_sid.as_deref() != Some(second_sid.as_str())
        })
        .await;
    let st = status(&third);
    // The first key's grace period is not cut short by the second repair: both retire.
    assert_eq!(
        st.retiring_keys
            .iter()
            .map(|r| r.sid.as_str())
            .collect::<Vec<_>>(),
        [first.as_str(), second_sid.as_str()]
    );
    assert_eq!(f.tagged(&third).await.len(), 3);
    assert!(f.works(&f.published("svc").await).await);
}

#[tokio::test]
async fn a_key_revoked_outside_is_reissued_with_a_warning() {
    let mut f = Fixture::new("drift", &[]).await;
    f.restart_operator(&[("RESYNC_INTERVAL", "2s")]);
    f.create("drifty", json!({})).await;
    let first = status(&f.ready("drifty").await).key_sid.unwrap();
    f.emu
        .client()
        .delete_key(&f.emu.main_credentials(), MAIN_SID, &first)
        .await
        .unwrap();
    let again = f
        .ready_where("drifty", "reissued", |k| {
            k.status.as_ref().unwrap().key_sid.as_deref() != Some(first.as_str())
        })
        .await;
    assert!(
        status(&again).retiring_keys.is_empty(),
        "a revoked key does not retire"
    );
    assert!(f.works(&f.published("drifty").await).await);
    f.wait_event("drifty", "KeyRevokedOutside").await;
}

#[tokio::test]
async fn drift_detection_costs_one_list_per_account_not_per_key() {
    let mut f = Fixture::new("inventory", &[]).await;
    f.restart_operator(&[("RESYNC_INTERVAL", "3s")]);
    for i in 0..6 {
        f.create(&format!("k{i}"), json!({})).await;
    }
    for i in 0..6 {
        f.ready(&format!("k{i}")).await;
    }
    f.emu.reset_stats().await;
    // Every key is re-examined at least once per resync; the account's list is shared.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let state = f.emu.state().await;
    let lists = state["received"]["api.ListKey"].as_u64().unwrap_or(0);
    let fetches = state["received"]["api.FetchKey"].as_u64().unwrap_or(0);
    assert!(
        (1..=5).contains(&lists),
        "10 s at a 3 s resync for 6 keys in one account: {lists} lists"
    );
    assert_eq!(fetches, 0, "no per-key fetches");
}

#[tokio::test]
async fn a_foreign_secret_is_never_overwritten() {
    let f = Fixture::new("conflict", &[]).await;
    let theirs: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "taken"}, "stringData": {"keep": "me"}})).unwrap();
    f.secrets().create(&PostParams::default(), &theirs).await.unwrap();
    f.create("clash", json!({"secret": {"name": "taken"}})).await;
    let key = f.reason("clash", "SecretConflict").await;
    let message = &key.status.unwrap().conditions[0].message;
    assert!(
        message.contains("taken") && message.contains("spec.secret.name"),
        "{message}"
    );
    assert_untouched(&f, "taken").await;
    assert!(
        f.emu.key_sids().await.is_empty(),
        "no key was made for a Secret it cannot publish to"
    );
}

#[tokio::test]
async fn bad_credentials_back_off_without_a_hot_loop() {
    let f = Fixture::new("badcreds", &[]).await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong"},
        "stringData": {"TWILIO_ACCOUNT_SID": MAIN_SID, "TWILIO_AUTH_TOKEN": "definitely-wrong"}
    }))
    .unwrap();
    f.secrets().create(&PostParams::default(), &secret).await.unwrap();
    f.create("denied", json!({"credentialsRef": {"name": "wrong"}}))
        .await;
    let key = f.reason("denied", "AuthenticationFailed").await;
    assert!(key.status.unwrap().conditions[0].message.contains("20003"));
    f.wait_event("denied", "AuthenticationFailed").await;
    f.emu.reset_stats().await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let calls: u64 = f.emu.state().await["received"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert!(
        calls <= 4,
        "20 s of a refused credential cost {calls} Twilio calls"
    );
    // In the metrics, the key is not Ready and its passes count as failures, by their reason.
    let metrics = f.operator.as_ref().unwrap().metrics().await;
    let refused = r#"twilio_operator_reconciles_total{kind="TwilioApiKey",result="error",reason="AuthenticationFailed"}"#;
    assert!(sample(&metrics, refused).is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(!metrics.contains(r#"result="success""#), "{metrics}");
    let ready = format!(
        r#"twilio_operator_ready{{kind="TwilioApiKey",namespace="{}",name="denied"}}"#,
        f.ns
    );
    assert_eq!(sample(&metrics, &ready), Some(0.0), "{metrics}");

    let missing = f
        .create("nocreds", json!({"credentialsRef": {"name": "absent"}}))
        .await;
    let blocked = f.reason(&missing.name_any(), "CredentialsMissing").await;
    assert!(blocked.status.unwrap().conditions[0].message.contains("absent"));
}

#[tokio::test]
async fn a_missing_workload_is_a_warning_not_a_failure() {
    let f = Fixture::new("noworkload", &[]).await;
    f.create(
        "lonely",
        json!({"restartWorkloads": [{"kind": "StatefulSet", "name": "ghost"}]}),
    )
    .await;
    f.ready("lonely").await;
    let warning = f.wait_event("lonely", "WorkloadMissing").await;
    assert!(warning.contains("ghost"));
}

#[tokio::test]
async fn fifty_keys_converge_under_faults_with_no_orphans() {
    let f = Fixture::new(
        "fifty",
        &[
            "--fault-429",
            "0.2",
            "--fault-5xx",
            "0.05",
            "--fault-reset",
            "0.03",
        ],
    )
    .await;
    for i in 0..50 {
        f.create(&format!("key-{i:02}"), json!({})).await;
    }
    let mut keys = Vec::new();
    for i in 0..50 {
        keys.push(
            wait_for(
                &f.keys(),
                &format!("key-{i:02}"),
                Duration::from_secs(240),
                "Ready",
                |k: &TwilioApiKey| {
                    k.status
                        .as_ref()
                        .is_some_and(|s| is_ready(&s.conditions) && s.key_sid.is_some())
                },
            )
            .await,
        );
    }
    // Quiet the faults and let every object settle, then count what lives at Twilio.
    f.emu
        .configure(json!({"knobs": {"fault_429": 0.0, "fault_5xx": 0.0, "fault_reset": 0.0}}))
        .await;
    let recorded: Vec<String> = keys.iter().map(|k| status(k).key_sid.unwrap()).collect();
    let mut orphans: Vec<String> = f.emu.key_sids().await;
    orphans.retain(|sid| !recorded.contains(sid));
    // A reset after a create leaves a key that the next pass sweeps; give it that pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !orphans.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let live = f.emu.key_sids().await;
        orphans.retain(|o| live.contains(o));
    }
    assert!(orphans.is_empty(), "orphaned keys at Twilio: {orphans:?}");
    for key in &keys {
        assert!(f.works(&f.published(&key.name_any()).await).await);
    }
    let state = f.emu.state().await;
    println!(
        "fifty keys under faults: Twilio calls by operation and status: {}",
        state["calls"]
    );
    f.emu.assert_contract_clean().await;
}

/// Restarts the operator with `failpoint` armed; the next reconcile that reaches it aborts.
fn crash_at(f: &mut Fixture, failpoint: &str) {
    f.restart_operator(&[("TWILIO_OPERATOR_FAILPOINT", failpoint)]);
}

/// Waits for the armed operator to abort, then runs it normally again.
async fn recover(f: &mut Fixture) {
    let status = f.operator.as_mut().unwrap().wait_exit(WAIT);
    assert!(
        !status.success(),
        "the operator should have aborted at the failpoint"
    );
    f.restart_operator(&[]);
}

#[tokio::test]
async fn crash_after_twilio_create_leaves_no_orphan() {
    let mut f = Fixture::new("crash-create", &[]).await;
    crash_at(&mut f, "apikey-after-create");
    f.create("fragile", json!({})).await;
    recover(&mut f).await;
    let key = f.ready("fragile").await;
    let sid = status(&key).key_sid.unwrap();
    assert_eq!(
        f.tagged(&key).await,
        vec![sid.clone()],
        "the key made before the crash was swept"
    );
    let creds = f.published("fragile").await;
    assert_eq!(creds.username(), sid);
    assert!(f.works(&creds).await);
    f.wait_event("fragile", "LeftoverRevoked").await;
}

#[tokio::test]
async fn crash_after_secret_write_adopts_the_published_key() {
    let mut f = Fixture::new("crash-secret", &[]).await;
    crash_at(&mut f, "apikey-after-secret");
    f.create("fragile", json!({})).await;
    recover(&mut f).await;
    let key = f.ready("fragile").await;
    let sid = status(&key).key_sid.unwrap();
    let creds = f.published("fragile").await;
    assert_eq!(creds.username(), sid, "the key in the Secret is the one recorded");
    assert_eq!(f.tagged(&key).await, vec![sid]);
    assert!(f.works(&creds).await);
}

#[tokio::test]
async fn crashes_mid_rotation_rotate_exactly_once() {
    for failpoint in ["apikey-after-create", "apikey-after-secret"] {
        let mut f = Fixture::new("crash-rotate", &[]).await;
        f.create(
            "spinning",
            json!({"rotation": {"every": "24h", "gracePeriod": "1h"}}),
        )
        .await;
        let old = status(&f.ready("spinning").await).key_sid.unwrap();
        crash_at(&mut f, failpoint);
        f.annotate("spinning", "twilio.operator.dev/rotate", "now").await;
        recover(&mut f).await;
        let key = f
            .ready_where("spinning", "rotated", |k| {
                k.status.as_ref().unwrap().last_rotation_request.as_deref() == Some("now")
            })
            .await;
        let st = status(&key);
        let current = st.key_sid.clone().unwrap();
        assert_ne!(current, old, "{failpoint}");
        assert_eq!(
            st.retiring_keys.iter().map(|r| r.sid.clone()).collect::<Vec<_>>(),
            vec![old.clone()],
            "{failpoint}"
        );
        let mut tagged = f.tagged(&key).await;
        tagged.sort();
        let mut expected = vec![current.clone(), old.clone()];
        expected.sort();
        assert_eq!(
            tagged, expected,
            "{failpoint}: exactly the current and the retiring key live"
        );
        assert!(f.works(&f.published("spinning").await).await, "{failpoint}");
    }
}

#[tokio::test]
async fn crash_mid_revoke_finishes_the_revocation() {
    let mut f = Fixture::new("crash-revoke", &[]).await;
    f.create("tidy", json!({"rotation": {"every": "24h", "gracePeriod": "2s"}}))
        .await;
    f.ready("tidy").await;
    crash_at(&mut f, "apikey-mid-revoke");
    f.annotate("tidy", "twilio.operator.dev/rotate", "once").await;
    recover(&mut f).await;
    let key = f
        .ready_where("tidy", "revoked", |k| {
            let st = k.status.as_ref().unwrap();
            st.retiring_keys.is_empty() && st.last_rotation_request.as_deref() == Some("once")
        })
        .await;
    let sid = status(&key).key_sid.unwrap();
    assert_eq!(f.tagged(&key).await, vec![sid.clone()]);
    assert_eq!(f.published("tidy").await.username(), sid);
}

/// With gracePeriod 0s the old key goes at once, so the workloads must already be rolling to the
/// new key when it does: at the moment of the first revocation the Deployment names the new key.
#[tokio::test]
async fn with_no_grace_the_workloads_roll_before_the_old_key_goes() {
    let mut f = Fixture::new("grace0", &[]).await;
    let deployments = create_web(&f).await;
    let spec = json!({"rotation": {"every": "24h", "gracePeriod": "0s"}, "restartWorkloads": [{"kind": "Deployment", "name": "web"}]});
    f.create("api", spec).await;
    let old = status(&f.ready("api").await).key_sid.unwrap();
    crash_at(&mut f, "apikey-mid-revoke");
    f.annotate("api", "twilio.operator.dev/rotate", "now").await;
    let exit = f.operator.as_mut().unwrap().wait_exit(WAIT);
    assert!(!exit.success(), "the operator stopped at its first revocation");
    let secret = f.secrets().get("api").await.unwrap();
    let published = secret.annotations()["twilio.operator.dev/credential-sid"].clone();
    assert_ne!(published, old, "the new key was published");
    let template = deployments
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap();
    assert_eq!(
        template
            .annotations
            .unwrap_or_default()
            .get("twilio.operator.dev/api-key-sid"),
        Some(&published),
        "the workload was rolled to the new key before the old one was revoked"
    );
    f.restart_operator(&[]);
    f.ready_where("api", "settled", |k| {
        k.status.as_ref().unwrap().retiring_keys.is_empty()
    })
    .await;
}

/// A key the operator retired itself is not a leftover: the passes after a rotation, which still
/// read the list taken before it, neither revoke it again nor announce it as left over.
#[tokio::test]
async fn a_retired_key_is_not_swept_again_as_a_leftover() {
    let mut f = Fixture::new("retired", &[]).await;
    f.create("api", json!({"rotation": {"every": "24h", "gracePeriod": "0s"}}))
        .await;
    f.ready("api").await;
    // A restarted operator lists the account's keys afresh: the list holds the current key.
    f.restart_operator(&[]);
    let lists = f.emu.calls("api.ListKey").await;
    f.emu
        .wait_calls(
            "api.ListKey",
            lists + 1,
            "the restarted operator never listed the keys",
        )
        .await;
    f.annotate("api", "twilio.operator.dev/rotate", "r1").await;
    f.ready_where("api", "rotated and settled", |k| {
        let st = k.status.as_ref().unwrap();
        st.last_rotation_request.as_deref() == Some("r1") && st.retiring_keys.is_empty()
    })
    .await;
    // One more pass, surely after the rotation was recorded: it reads the same (older) list.
    let operator = f.operator.as_ref().unwrap();
    let series = r#"twilio_operator_reconciles_total{kind="TwilioApiKey",result="success",reason="Ready"}"#;
    let before = sample(&operator.metrics().await, series).unwrap_or(0.0);
    f.annotate("api", "example.com/touched", "1").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while sample(&operator.metrics().await, series).unwrap_or(0.0) <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pass after the annotation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = f.events("api").await;
    let reasons: Vec<&str> = events.iter().map(|(_, r, _)| r.as_str()).collect();
    assert_eq!(reasons, ["KeyCreated", "KeyRotated"], "{events:?}");
    // With no grace period one event tells of the new key and of the old one's revocation.
    assert!(events[1].2.contains(" was revoked"), "{events:?}");
    let state = f.emu.state().await;
    assert_eq!(state["received"]["api.DeleteKey"], 1, "{}", state["received"]);
}

/// One key list that misses the live key (an eventually consistent read) is not proof it was
/// revoked: the operator fetches the key before reissuing it, and keeps it.
#[tokio::test]
async fn a_key_missing_from_one_list_is_fetched_before_it_is_reissued() {
    let mut f = Fixture::new("misslist", &[]).await;
    f.restart_operator(&[("RESYNC_INTERVAL", "2s")]);
    f.create("steady", json!({})).await;
    let sid = status(&f.ready("steady").await).key_sid.unwrap();
    f.emu
        .configure(json!({"rules": {"omit_from_next_list": sid}}))
        .await;
    f.emu
        .wait_calls("api.FetchKey", 1, "the key was never looked at again")
        .await;
    // Two more resyncs with honest lists.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let key = f.ready("steady").await;
    assert_eq!(
        status(&key).key_sid.as_deref(),
        Some(sid.as_str()),
        "the live key was kept"
    );
    assert!(
        !f.events("steady")
            .await
            .iter()
            .any(|(_, reason, _)| reason == "KeyRevokedOutside"),
        "no key was reported revoked"
    );
    assert_eq!(f.tagged(&key).await, vec![sid]);
}

/// A Secret Kubernetes refuses (here an admission policy refuses every Secret in the namespace)
/// is found out before Twilio is asked: the key is never created, so retries cannot create and
/// sweep keys without end, and the refusal shows in the Ready condition.
#[tokio::test]
async fn a_secret_kubernetes_refuses_costs_no_key_and_shows_in_ready() {
    let f = Fixture::new("refuse", &[]).await;
    refuse_secrets(&f, &["CREATE", "UPDATE"]).await;
    f.create("refused", json!({})).await;
    let key = f.reason("refused", "KubernetesError").await;
    let message = key.status.unwrap().conditions[0].message.clone();
    assert!(message.contains("refuses Secrets"), "{message}");
    f.wait_event("refused", "KubernetesError").await;
    // Two more attempts, with backoff: still no key at Twilio.
    wait_failed_passes(&f, 3).await;
    let state = f.emu.state().await;
    assert_eq!(
        state["received"]["api.CreateNewKey"].as_u64().unwrap_or(0),
        0,
        "{}",
        state["received"]
    );
    assert!(state["keys"].as_array().unwrap().is_empty());
}

/// A restarted operator trusts an intact Secret written for the object's generation to pass
/// Kubernetes' checks again, and asks for the next key without a dry run first. That claim is
/// the Secret's, which the namespace can edit: once Kubernetes refuses the write, the operator
/// checks first again, so the refusal costs one key (swept), never one per retry.
#[tokio::test]
async fn a_refused_rotation_costs_at_most_one_key_after_a_restart() {
    let mut f = Fixture::new("refusedrot", &[]).await;
    f.create("api", json!({"rotation": {"every": "24h", "gracePeriod": "0s"}}))
        .await;
    let live = status(&f.ready("api").await).key_sid.unwrap();
    f.restart_operator(&[]);
    refuse_secrets(&f, &["UPDATE"]).await;
    f.annotate("api", "twilio.operator.dev/rotate", "r1").await;
    let key = f.reason("api", "KubernetesError").await;
    wait_failed_passes(&f, 3).await;
    assert_eq!(
        f.emu.calls("api.CreateNewKey").await,
        2,
        "one key at first, one for the rotation"
    );
    // The key made for the refused Secret was never published: the next pass sweeps it.
    f.emu.wait_calls("api.DeleteKey", 1, &f.operator_log()).await;
    assert_eq!(f.tagged(&key).await, vec![live.clone()]);
    assert_eq!(status(&f.keys().get("api").await.unwrap()).key_sid, Some(live));
}

/// Makes Kubernetes refuse every Secret `operations` in the fixture's namespace, through an
/// admission policy, and waits until it does.
async fn refuse_secrets(f: &Fixture, operations: &[&str]) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let name = format!("no-secrets-{}", f.ns);
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": operations, "resources": ["secrets"]}]},
            "validations": [{"expression": "false", "message": "this namespace refuses Secrets"}]}
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f.ns}}}}
    }))
    .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(f.client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(f.client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The policy takes effect within moments; wait until a Secret is really refused.
    let probe: Secret = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "probe", "labels": {"probe": "1"}}}),
    )
    .unwrap();
    let secrets = f.secrets();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let refused = || async {
        if operations.contains(&"CREATE") {
            return secrets.create(&dry, &probe).await.is_err();
        }
        let _ = secrets.create(&PostParams::default(), &probe).await;
        let params = PatchParams {
            dry_run: true,
            ..Default::default()
        };
        let touch = Patch::Merge(json!({"metadata": {"labels": {"probe": "2"}}}));
        secrets.patch("probe", &params, &touch).await.is_err()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !refused().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admission policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the operator has counted `n` passes over keys that failed on Kubernetes.
async fn wait_failed_passes(f: &Fixture, n: u64) {
    let series =
        r#"twilio_operator_reconciles_total{kind="TwilioApiKey",result="error",reason="KubernetesError"}"#;
    let operator = f.operator.as_ref().unwrap();
    let deadline = tokio::time::Instant::now() + 2 * WAIT;
    while sample(&operator.metrics().await, series).unwrap_or(0.0) < n as f64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} failed passes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Secret somebody creates while the operator is asking Twilio for the key (here the emulator
/// answers slowly, and the Secret appears once the create is announced) is theirs: the operator
/// creates its Secret, it does not co-own one by an apply, so it reports SecretConflict and never
/// writes into theirs; deleting the object then revokes the key it made.
#[tokio::test]
async fn a_secret_made_during_the_create_is_never_taken_over() {
    let f = Fixture::new("samesecret", &[]).await;
    f.emu.configure(json!({"knobs": {"latency_ms": 3000}})).await;
    f.create("raced", json!({})).await;
    wait_for(
        &f.keys(),
        "raced",
        WAIT,
        "announcing its create",
        |k: &TwilioApiKey| k.status.as_ref().is_some_and(|st| st.pending_since.is_some()),
    )
    .await;
    let theirs: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raced"}, "stringData": {"keep": "me"}})).unwrap();
    f.secrets().create(&PostParams::default(), &theirs).await.unwrap();
    f.reason("raced", "SecretConflict").await;
    assert_untouched(&f, "raced").await;
    f.emu.configure(json!({"knobs": {"latency_ms": 0}})).await;
    f.keys().delete("raced", &DeleteParams::default()).await.unwrap();
    wait_gone(&f.keys(), "raced", WAIT).await;
    assert!(f.emu.key_sids().await.is_empty(), "the key it made was revoked");
}

/// Consumers keep a working credential for the whole grace period, whatever happens during it:
/// a second rotation requested within it waits for it to end, and a Secret deleted within it is
/// replaced without cutting the retiring key short.
#[tokio::test]
async fn the_grace_period_always_holds() {
    let f = Fixture::new("grace", &[]).await;
    f.create(
        "held",
        json!({"rotation": {"every": "24h", "gracePeriod": "15s"}}),
    )
    .await;
    let first = status(&f.ready("held").await).key_sid.unwrap();
    f.annotate("held", "twilio.operator.dev/rotate", "one").await;
    let rotated = f
        .ready_where("held", "rotated once", |k| {
            k.status.as_ref().unwrap().last_rotation_request.as_deref() == Some("one")
        })
        .await;
    let revoke_at = status(&rotated).retiring_keys[0].revoke_at.0;
    let live = |state: &Value, sid: &str| state["keys"].as_array().unwrap().iter().any(|k| k["sid"] == sid);

    // A second request within the grace period, and the Secret deleted within it.
    f.annotate("held", "twilio.operator.dev/rotate", "two").await;
    f.secrets()
        .delete("held", &DeleteParams::default())
        .await
        .unwrap();
    let second = status(&rotated).key_sid.unwrap();
    let replaced = f
        .ready_where("held", "republished", |k| {
            let st = k.status.as_ref().unwrap();
            st.key_sid.as_deref().is_some_and(|sid| sid != second) && st.secret_name.is_some()
        })
        .await;
    assert!(
        f.secrets().get_opt("held").await.unwrap().is_some(),
        "the Secret is back"
    );
    while k8s_openapi::jiff::Timestamp::now() < revoke_at {
        assert!(
            live(&f.emu.state().await, &first),
            "{first} was revoked before its grace period ended"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let done = f
        .ready_where("held", "rotated twice", |k| {
            let st = k.status.as_ref().unwrap();
            st.last_rotation_request.as_deref() == Some("two")
                && !st.retiring_keys.iter().any(|r| r.sid == first)
        })
        .await;
    assert!(
        !live(&f.emu.state().await, &first),
        "{first} went once its grace period was over"
    );
    assert!(f.works(&f.published("held").await).await);
    // The new key issued after the request answers it; the key it replaced retires in turn.
    assert!(status(&done).key_sid.is_some() && status(&replaced).key_sid.is_some());
}

/// Creates the Deployment named web, for restartWorkloads; answers the Deployments API.
async fn create_web(f: &Fixture) -> Api<Deployment> {
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), &f.ns);
    let web: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}}}
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &web).await.unwrap();
    deployments
}

/// The Secret `name`, made by somebody else with the single data key "keep", is as they made it:
/// the operator neither wrote into it nor took a share of it.
async fn assert_untouched(f: &Fixture, name: &str) {
    let untouched = f.secrets().get(name).await.unwrap();
    assert_eq!(
        untouched
            .data
            .clone()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["keep"]
    );
    assert!(untouched.owner_references().is_empty(), "not co-owned");
}

/// A key the operator cannot read (a status timestamp the apiserver's schema accepts but that is
/// not RFC 3339) is reported with a Warning event and left aside; it does not stall the watch of
/// the other keys, and once repaired it is reconciled again.
#[tokio::test]
async fn an_unreadable_key_is_reported_and_does_not_stall_the_others() {
    let f = Fixture::new("unreadable", &[]).await;
    f.create("broken", json!({})).await;
    f.ready("broken").await;
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        f.client.clone(),
        &f.ns,
        &kube::api::ApiResource::erase::<TwilioApiKey>(&()),
    );
    let unreadable = json!({"status": {"pendingSince": "2024-01-01T00:00:00.1234567891Z"}});
    raw.patch_status("broken", &PatchParams::default(), &Patch::Merge(&unreadable))
        .await
        .expect("the schema admits a date-time without an offset");

    f.create("healthy", json!({})).await;
    f.ready("healthy").await;
    let message = f.wait_event("broken", "InvalidObject").await;
    assert!(
        message.contains("pendingSince") || message.contains("cannot read"),
        "{message}"
    );

    let repaired = json!({"status": {"pendingSince": null}});
    raw.patch_status("broken", &PatchParams::default(), &Patch::Merge(&repaired))
        .await
        .unwrap();
    f.annotate("broken", "twilio.operator.dev/rotate", "after-repair")
        .await;
    f.ready_where("broken", "the rotation asked after the repair", |k| {
        status(k).last_rotation_request.as_deref() == Some("after-repair")
    })
    .await;
}

/// Two operators with disjoint label selectors split the objects of one namespace: each object
/// is reconciled by exactly one of them, and an object neither selects by none.
#[tokio::test]
async fn two_shards_each_reconcile_only_their_objects() {
    let mut f = Fixture::new("shards", &[]).await;
    f.operator = None;
    let (_a, _b) = (shard(&f, "a"), shard(&f, "b"));
    let labelled = |shard: Option<&str>| match shard {
        Some(s) => json!({"twilio.operator.dev/shard": s}),
        None => json!({}),
    };
    for (name, shard) in [("unsharded", None), ("in-a", Some("a")), ("in-b", Some("b"))] {
        let key: TwilioApiKey = serde_json::from_value(json!({
            "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
            "metadata": {"name": name, "labels": labelled(shard)}, "spec": {}
        }))
        .unwrap();
        f.keys().create(&PostParams::default(), &key).await.unwrap();
    }
    f.ready("in-a").await;
    f.ready("in-b").await;
    for (name, instance) in [("in-a", "shard-a"), ("in-b", "shard-b")] {
        f.wait_event(name, "KeyCreated").await;
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(f.client.clone(), &f.ns);
        let reporters: Vec<_> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| e.reporting_instance.unwrap_or_default())
            .collect();
        assert!(
            !reporters.is_empty() && reporters.iter().all(|r| r == instance),
            "{name} was reconciled by {reporters:?}, not only {instance}"
        );
    }
    let unsharded = f.keys().get("unsharded").await.unwrap();
    assert!(
        // The apiserver's default status says only that no pass has judged it.
        unsharded
            .status
            .as_ref()
            .is_none_or(|s| s.observed_generation == Some(0) && s.conditions.is_empty())
            && unsharded.finalizers().is_empty(),
        "no shard selects it, so no shard touched it"
    );
}

/// A key relabelled from one shard to another is let go by the first (its per-object series
/// leave that shard's metrics, as its memory does) and taken over by the second, which finds its
/// key in place and makes none.
#[tokio::test]
async fn a_key_moved_to_another_shard_is_let_go_by_the_first() {
    let mut f = Fixture::new("reshard", &[]).await;
    f.operator = None;
    let (a, b) = (shard(&f, "a"), shard(&f, "b"));
    let key: TwilioApiKey = serde_json::from_value(json!({
        "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
        "metadata": {"name": "mover", "labels": {"twilio.operator.dev/shard": "a"}},
        "spec": {"rotation": {"every": "24h"}}
    }))
    .unwrap();
    f.keys().create(&PostParams::default(), &key).await.unwrap();
    let sid = status(&f.ready("mover").await).key_sid.unwrap();
    let series = format!(
        r#"twilio_operator_api_key_age_seconds{{namespace="{}",name="mover"}}"#,
        f.ns
    );
    let shows =
        async |operator: &support::operator::Operator| sample(&operator.metrics().await, &series).is_some();
    assert!(shows(&a).await, "shard a reports the key it reconciled");
    f.keys()
        .patch(
            "mover",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"twilio.operator.dev/shard": "b"}}})),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while shows(&a).await || !shows(&b).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shard a still reports the key, or shard b does not yet:\n{}",
            a.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(f.emu.calls("api.CreateNewKey").await, 1, "shard b made no key");
    assert_eq!(status(&f.keys().get("mover").await.unwrap()).key_sid, Some(sid));
}

/// An operator that reconciles only the objects labelled `twilio.operator.dev/shard=<name>`.
fn shard(f: &Fixture, name: &str) -> support::operator::Operator {
    let selector = format!("twilio.operator.dev/shard={name}");
    let instance = format!("shard-{name}");
    support::operator::Operator::start(
        f.cp,
        &f.emu,
        &f.ns,
        &[
            ("WATCH_LABEL_SELECTOR", selector.as_str()),
            ("POD_NAME", instance.as_str()),
        ],
    )
}

/// A rotation due outside its window waits for the window, which status shows; one asked for
/// does not wait; one due inside an open window happens at once.
#[tokio::test]
async fn scheduled_rotations_wait_for_their_window() {
    let f = Fixture::new("window", &[]).await;
    // A window opening twelve hours from now, in Tokyo's time zone (UTC+9, no summer time).
    let tokyo = k8s_openapi::jiff::tz::TimeZone::get("Asia/Tokyo").unwrap();
    let later = k8s_openapi::jiff::Timestamp::now().to_zoned(tokyo)
        + k8s_openapi::jiff::SignedDuration::from_hours(12);
    let schedule = format!("0 {} * * *", later.hour());
    let window = json!({"schedule": schedule, "timeZone": "Asia/Tokyo", "duration": "1h"});
    f.create(
        "closed",
        json!({"rotation": {"every": "1h", "gracePeriod": "0s", "window": window}}),
    )
    .await;
    f.create(
        "open",
        json!({"rotation": {"every": "1h", "gracePeriod": "0s", "window": {"schedule": "* * * * *", "duration": "10m"}}}),
    )
    .await;
    let closed = f.ready("closed").await;
    let open = f.ready("open").await;

    // Both are a period old: the one whose window is open rotates, the other waits for its own.
    let past = json!({"keyCreatedAt": "2020-01-01T00:00:00Z"});
    let before = status(&open).key_sid;
    f.time_travel(&f.keys(), "open", past.clone(), |k: &TwilioApiKey| {
        k.status.as_ref().is_some_and(|s| s.key_sid != before)
    })
    .await;
    let waiting = |k: &TwilioApiKey| {
        k.status.as_ref().is_some_and(|s| {
            s.key_created_at
                .as_ref()
                .is_some_and(|t| t.0.to_string() == "2020-01-01T00:00:00Z")
                && s.rotation_window.as_ref().is_some_and(|w| {
                    w.opens_at.0 > k8s_openapi::jiff::Timestamp::now()
                        && s.next_rotation_at
                            .as_ref()
                            .is_some_and(|n| n.0 >= w.opens_at.0 && n.0 < w.closes_at.0)
                })
        })
    };
    f.time_travel(&f.keys(), "closed", past, waiting).await;
    let deferred = f.keys().get("closed").await.unwrap();
    let st = status(&deferred);
    let opens = st.rotation_window.as_ref().unwrap().opens_at.0;
    let in_hours = opens
        .duration_since(k8s_openapi::jiff::Timestamp::now())
        .as_hours();
    assert!(
        (11..=12).contains(&in_hours),
        "the window opens in about 12 hours, not {in_hours}"
    );
    assert_eq!(
        st.key_sid,
        status(&closed).key_sid,
        "no rotation outside the window"
    );
    assert_eq!(
        f.emu.calls("api.CreateNewKey").await,
        3,
        "two first keys and the one rotation in an open window"
    );

    // A schedule admission lets through but no cron reads (a reversed range) stops scheduled
    // rotations, says so, and holds up nothing else: the key is still issued.
    f.create(
        "reversed",
        json!({"rotation": {"every": "2h", "window": {"schedule": "0 2 * * FRI-MON", "duration": "1h"}}}),
    )
    .await;
    let reversed = f.reason("reversed", "InvalidSpec").await;
    let message = &status(&reversed).conditions[0].message;
    assert!(
        message.contains("spec.rotation.window.schedule") && message.contains("no scheduled rotation"),
        "{message}"
    );
    wait_for(
        &f.keys(),
        "reversed",
        WAIT,
        "a key despite the window",
        |k: &TwilioApiKey| k.status.as_ref().is_some_and(|s| s.key_sid.is_some()),
    )
    .await;

    // Asked for, it rotates now, window or not.
    f.annotate("closed", "twilio.operator.dev/rotate", "now").await;
    f.ready_where("closed", "rotated on request", |k| {
        status(k).key_sid != st.key_sid && status(k).last_rotation_request.as_deref() == Some("now")
    })
    .await;
}
