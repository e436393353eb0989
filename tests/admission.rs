//! The v1alpha1 contract as the real kube-apiserver enforces it: the CRDs install and become
//! Established, the contract's examples are admitted, `kubectl explain` teaches the API, and every
//! admission rule rejects a bad object with a message that names the field.

mod support;

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::cluster;

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("twilio.operator.dev", "v1alpha1", kind))
}

fn api(client: Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, ns, &resource(kind))
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "twilio.operator.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid DynamicObject")
}

/// The apiserver's message for a rejected write, or a panic if the write was accepted.
fn rejection(result: kube::Result<DynamicObject>, what: &str) -> String {
    match result {
        Ok(_) => panic!("{what}: the apiserver accepted an object it must reject"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{what}: expected 422 Invalid, got {status:?}");
            status.message
        }
        Err(other) => panic!("{what}: unexpected error {other}"),
    }
}

fn assert_mentions(message: &str, what: &str, fragments: &[&str]) {
    for fragment in fragments {
        assert!(
            message.contains(fragment),
            "{what}: message {message:?} lacks {fragment:?}"
        );
    }
}

/// Creating `kind` with `spec` fails, and the message contains every fragment.
async fn rejects_create(ns: &str, kind: &str, spec: Value, fragments: &[&str]) {
    let what = format!("create {kind} with {spec}");
    let result = api(cluster().admin(), ns, kind)
        .create(&PostParams::default(), &object(kind, "bad", spec))
        .await;
    assert_mentions(&rejection(result, &what), &what, fragments);
}

/// Creating `kind` with `before` succeeds, then changing the spec to `after` fails with every
/// fragment in the message.
async fn rejects_update(ns: &str, kind: &str, name: &str, before: Value, after: Value, fragments: &[&str]) {
    let api = api(cluster().admin(), ns, kind);
    api.create(&PostParams::default(), &object(kind, name, before.clone()))
        .await
        .unwrap_or_else(|e| panic!("create {kind} {name} with {before}: {e}"));
    let what = format!("update {kind} {name} from {before} to {after}");
    let result = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": after})),
        )
        .await;
    assert_mentions(&rejection(result, &what), &what, fragments);
}

async fn accepts(ns: &str, obj: DynamicObject) -> DynamicObject {
    let kind = obj.types.as_ref().expect("typed").kind.clone();
    let name = obj.metadata.name.clone().expect("named");
    api(cluster().admin(), ns, &kind)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("the apiserver rejected {kind} {name}: {e}"))
}

#[test]
fn committed_crds_match_the_rust_types() {
    let rendered = twilio_operator::crds::rendered();
    for dir in twilio_operator::crds::DIRECTORIES {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for (file, yaml) in &rendered {
            let committed = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            assert!(
                committed == *yaml,
                "{dir}/{file} is stale: run `cargo run --bin crdgen` and commit the result"
            );
        }
        let committed_files = std::fs::read_dir(&root).expect("CRD directory").count();
        assert_eq!(
            committed_files,
            rendered.len(),
            "{dir} holds files the types do not generate"
        );
    }
}

#[tokio::test]
async fn control_plane_starts_within_budget() {
    let cp = cluster();
    // The figure is printed by the harness; this bound catches a harness that regresses badly.
    assert!(
        cp.startup.as_secs() < 20,
        "control plane took {:?} to start",
        cp.startup
    );
}

#[tokio::test]
async fn contract_examples_are_admitted_with_defaults() {
    let ns = cluster().namespace("examples").await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for file in [
        "twiliosubaccount.yaml",
        "twilioapikey.yaml",
        "twilioapikey-minimal.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("read example");
        let obj: DynamicObject = serde_saphyr::from_str(&text).expect("parse example");
        accepts(&ns, obj).await;
    }
    let text = std::fs::read_to_string(dir.join("twilioaccount.yaml")).expect("read example");
    let account: DynamicObject = serde_saphyr::from_str(&text).expect("parse example");
    Api::<DynamicObject>::all_with(cluster().admin(), &resource("TwilioAccount"))
        .create(&PostParams::default(), &account)
        .await
        .expect("the TwilioAccount example is admitted");
    let minimal = api(cluster().admin(), &ns, "TwilioApiKey")
        .get("notifier")
        .await
        .expect("get notifier");
    let spec = &minimal.data["spec"];
    assert_eq!(
        spec["keyType"], "Standard",
        "keyType defaults to Standard: {spec}"
    );
    assert_eq!(
        spec["deletionPolicy"], "Delete",
        "deletionPolicy defaults to Delete: {spec}"
    );
    let sub = api(cluster().admin(), &ns, "TwilioSubaccount")
        .get("team-a")
        .await
        .expect("get team-a");
    assert_eq!(sub.data["spec"]["state"], "Active");
    let bare = accepts(&ns, object("TwilioSubaccount", "bare", json!({}))).await;
    assert_eq!(
        bare.data["spec"]["deletionPolicy"], "Retain",
        "subaccounts default to Retain"
    );
    let rotating = accepts(
        &ns,
        object("TwilioApiKey", "rotating", json!({"rotation": {"every": "24h"}})),
    )
    .await;
    assert_eq!(
        rotating.data["spec"]["rotation"]["gracePeriod"], "1h",
        "gracePeriod defaults to 1h"
    );
}

#[tokio::test]
async fn kinds_are_listed_under_the_twilio_category_and_short_names() {
    let cp = cluster();
    let ns = cp.namespace("category").await;
    accepts(&ns, object("TwilioSubaccount", "listed", json!({}))).await;
    accepts(&ns, object("TwilioApiKey", "listed", json!({}))).await;
    let all = cp.run_tool("kubectl", &["get", "twilio", "-n", &ns, "-o", "name"]);
    assert!(
        all.contains("twiliosubaccount.twilio.operator.dev/listed"),
        "{all}"
    );
    assert!(all.contains("twilioapikey.twilio.operator.dev/listed"), "{all}");
    let table = cp.run_tool("kubectl", &["get", "twkey", "-n", &ns]);
    for column in ["KEY SID", "SECRET", "READY", "NEXT ROTATION", "AGE"] {
        assert!(
            table.contains(column),
            "twkey table lacks column {column}: {table}"
        );
    }
    let table = cp.run_tool("kubectl", &["get", "twsub", "-n", &ns]);
    for column in ["SID", "TWILIO STATUS", "READY", "AGE"] {
        assert!(
            table.contains(column),
            "twsub table lacks column {column}: {table}"
        );
    }
}

#[tokio::test]
async fn kubectl_explain_teaches_the_api() {
    let cp = cluster();
    let spec = cp.run_tool("kubectl", &["explain", "twiliosubaccount.spec"]);
    for text in ["deletionPolicy", "IRREVERSIBLE", "authTokenRotation", "adopt"] {
        assert!(
            spec.contains(text),
            "explain twiliosubaccount.spec lacks {text:?}:\n{spec}"
        );
    }
    let rotation = cp.run_tool("kubectl", &["explain", "twilioapikey.spec.rotation"]);
    for text in ["every", "gracePeriod", "At least 1h", "shorter than"] {
        assert!(
            rotation.contains(text),
            "explain twilioapikey.spec.rotation lacks {text:?}:\n{rotation}"
        );
    }
    // Every field of both kinds carries a description, so each `kubectl explain` path has text.
    for crd in twilio_operator::crds::all() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        assert_every_field_described(&schema["openAPIV3Schema"]["properties"]["spec"], "spec");
        assert_every_field_described(&schema["openAPIV3Schema"]["properties"]["status"], "status");
    }
}

fn assert_every_field_described(schema: &Value, path: &str) {
    assert!(
        schema
            .get("description")
            .is_some_and(|d| d.as_str().is_some_and(|d| !d.is_empty())),
        "{path} has no description"
    );
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            assert_every_field_described(prop, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.get("properties").is_some()) {
        for (name, prop) in items["properties"].as_object().expect("object items") {
            assert_every_field_described(prop, &format!("{path}[].{name}"));
        }
    }
}

#[tokio::test]
async fn enums_are_enforced() {
    let ns = cluster().namespace("enums").await;
    rejects_create(
        &ns,
        "TwilioSubaccount",
        json!({"state": "Paused"}),
        &["spec.state", "Unsupported value", "\"Active\""],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioSubaccount",
        json!({"deletionPolicy": "Delete"}),
        &["spec.deletionPolicy", "\"Close\""],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"keyType": "Main"}),
        &["spec.keyType", "\"Restricted\""],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"deletionPolicy": "Close"}),
        &["spec.deletionPolicy", "\"Retain\""],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"restartWorkloads": [{"kind": "CronJob", "name": "x"}]}),
        &["spec.restartWorkloads[0].kind", "\"DaemonSet\""],
    )
    .await;
}

#[tokio::test]
async fn friendly_names_are_1_to_64_characters() {
    let ns = cluster().namespace("names").await;
    let long = "x".repeat(65);
    for kind in ["TwilioSubaccount", "TwilioApiKey"] {
        rejects_create(
            &ns,
            kind,
            json!({"friendlyName": ""}),
            &["spec.friendlyName", "at least 1"],
        )
        .await;
        rejects_create(
            &ns,
            kind,
            json!({"friendlyName": long}),
            &["spec.friendlyName", "64"],
        )
        .await;
    }
    accepts(
        &ns,
        object(
            "TwilioApiKey",
            "sixty-four",
            json!({"friendlyName": "x".repeat(64)}),
        ),
    )
    .await;
}

#[tokio::test]
async fn subaccount_sid_has_the_twilio_shape_and_is_immutable_once_set() {
    let ns = cluster().namespace("sid").await;
    let sid_a = format!("AC{}", "a".repeat(32));
    let sid_b = format!("AC{}", "b".repeat(32));
    for bad in [
        "ACnothex",
        "SKaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        &format!("AC{}", "A".repeat(32)),
    ] {
        rejects_create(
            &ns,
            "TwilioSubaccount",
            json!({"sid": bad}),
            &["spec.sid", "should match"],
        )
        .await;
    }
    rejects_update(
        &ns,
        "TwilioSubaccount",
        "changed",
        json!({"sid": sid_a}),
        json!({"sid": sid_b}),
        &["spec.sid", "immutable"],
    )
    .await;
    rejects_update(
        &ns,
        "TwilioSubaccount",
        "removed",
        json!({"sid": sid_a}),
        json!({"sid": null}),
        &["spec.sid", "immutable"],
    )
    .await;
    // A sid can only be given at creation: setting one later would turn an object the
    // namespace already holds into an adoption that skipped the create-time checks.
    rejects_update(
        &ns,
        "TwilioSubaccount",
        "adopts-later",
        json!({}),
        json!({"sid": sid_a}),
        &[
            "spec.sid",
            "immutable",
            "only be given when the TwilioSubaccount is created",
        ],
    )
    .await;
}

#[tokio::test]
async fn subaccount_ref_and_key_type_are_immutable() {
    let ns = cluster().namespace("immutable").await;
    let kind = "TwilioApiKey";
    rejects_update(
        &ns,
        kind,
        "moved",
        json!({"subaccountRef": {"name": "a"}}),
        json!({"subaccountRef": {"name": "b"}}),
        &["spec.subaccountRef", "immutable"],
    )
    .await;
    rejects_update(
        &ns,
        kind,
        "added",
        json!({}),
        json!({"subaccountRef": {"name": "a"}}),
        &["spec.subaccountRef", "immutable"],
    )
    .await;
    rejects_update(
        &ns,
        kind,
        "dropped",
        json!({"subaccountRef": {"name": "a"}}),
        json!({"subaccountRef": null}),
        &["spec.subaccountRef", "immutable"],
    )
    .await;
    rejects_update(
        &ns,
        kind,
        "retyped",
        json!({"keyType": "Standard"}),
        json!({"keyType": "Restricted", "permissions": ["/twilio/messaging/messages/create"]}),
        &["spec.keyType", "immutable"],
    )
    .await;
}

#[tokio::test]
async fn permissions_are_required_exactly_for_restricted_keys() {
    let ns = cluster().namespace("permissions").await;
    let kind = "TwilioApiKey";
    rejects_create(
        &ns,
        kind,
        json!({"keyType": "Restricted"}),
        &["spec.permissions", "required when keyType is Restricted"],
    )
    .await;
    rejects_create(
        &ns,
        kind,
        json!({"permissions": ["/twilio/messaging/messages/create"]}),
        &["spec.permissions", "omitted when keyType is Standard"],
    )
    .await;
    rejects_create(
        &ns,
        kind,
        json!({"keyType": "Restricted", "permissions": []}),
        &["spec.permissions", "at least 1"],
    )
    .await;
    let too_many: Vec<String> = (0..101)
        .map(|i| format!("/twilio/messaging/messages/p{i}"))
        .collect();
    rejects_create(
        &ns,
        kind,
        json!({"keyType": "Restricted", "permissions": too_many}),
        &["spec.permissions", "100"],
    )
    .await;
    rejects_create(
        &ns,
        kind,
        json!({"keyType": "Restricted", "permissions": ["messaging:create"]}),
        &["spec.permissions[0]"],
    )
    .await;
    let hundred: Vec<String> = (0..100)
        .map(|i| format!("/twilio/messaging/messages/p{i}"))
        .collect();
    accepts(
        &ns,
        object(
            kind,
            "hundred",
            json!({"keyType": "Restricted", "permissions": hundred}),
        ),
    )
    .await;
}

#[tokio::test]
async fn subaccount_ref_and_credentials_ref_are_mutually_exclusive() {
    let ns = cluster().namespace("exclusive").await;
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"subaccountRef": {"name": "team-a"}, "credentialsRef": {"name": "parent"}}),
        &["spec.credentialsRef", "mutually exclusive"],
    )
    .await;
    for (kind, refs) in [
        (
            "TwilioApiKey",
            json!({"accountRef": {"name": "default"}, "subaccountRef": {"name": "team-a"}}),
        ),
        (
            "TwilioApiKey",
            json!({"accountRef": {"name": "default"}, "credentialsRef": {"name": "parent"}}),
        ),
        (
            "TwilioSubaccount",
            json!({"accountRef": {"name": "default"}, "credentialsRef": {"name": "parent"}}),
        ),
    ] {
        rejects_create(&ns, kind, refs, &["spec.accountRef", "mutually exclusive"]).await;
    }
}

#[tokio::test]
async fn account_and_credentials_refs_are_immutable() {
    let ns = cluster().namespace("refs").await;
    for (kind, field, before, after) in [
        (
            "TwilioApiKey",
            "accountRef",
            json!({"accountRef": {"name": "a"}}),
            json!({"accountRef": {"name": "b"}}),
        ),
        (
            "TwilioApiKey",
            "accountRef",
            json!({}),
            json!({"accountRef": {"name": "b"}}),
        ),
        (
            "TwilioApiKey",
            "credentialsRef",
            json!({"credentialsRef": {"name": "a"}}),
            json!({"credentialsRef": null}),
        ),
        (
            "TwilioSubaccount",
            "accountRef",
            json!({"accountRef": {"name": "a"}}),
            json!({"accountRef": null}),
        ),
        (
            "TwilioSubaccount",
            "credentialsRef",
            json!({}),
            json!({"credentialsRef": {"name": "b"}}),
        ),
    ] {
        let name = format!("{}-{}", kind.to_lowercase(), rand_suffix());
        rejects_update(
            &ns,
            kind,
            &name,
            before,
            after,
            &[&format!("spec.{field}"), "immutable"],
        )
        .await;
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Creating a TwilioAccount with `spec` fails, naming every fragment.
async fn rejects_account(spec: Value, fragments: &[&str]) {
    let api: Api<DynamicObject> = Api::all_with(cluster().admin(), &resource("TwilioAccount"));
    let what = format!("create TwilioAccount with {spec}");
    let result = api
        .create(
            &PostParams::default(),
            &object("TwilioAccount", "bad-account", spec),
        )
        .await;
    assert_mentions(&rejection(result, &what), &what, fragments);
}

#[tokio::test]
async fn a_twilio_account_has_exactly_one_credentials_source_and_well_formed_patterns() {
    rejects_account(json!({"credentials": {}}), &["exactly one source"]).await;
    rejects_account(
        json!({"credentials": {"fromEnvironment": true, "secretRef": {"namespace": "ops", "name": "twilio"}}}),
        &["exactly one source"],
    )
    .await;
    rejects_account(
        json!({"credentials": {"fromEnvironment": false}}),
        &["exactly one source"],
    )
    .await;
    for bad in ["twilio/messaging", "/twilio/*/read", "/twilio/messaging*", "/"] {
        rejects_account(
            json!({"credentials": {"fromEnvironment": true}, "apiKeys": {"permissions": [bad]}}),
            &["spec.apiKeys.permissions", "should match"],
        )
        .await;
    }
    rejects_account(
        json!({"credentials": {"fromEnvironment": true}, "subaccounts": {"adopt": [{"sid": "ACnothex", "namespace": "a"}]}}),
        &["spec.subaccounts.adopt", "should match"],
    )
    .await;
    rejects_account(
        json!({"credentials": {"fromEnvironment": true}, "namespaces": {"names": ["Not_A_Namespace"]}}),
        &["spec.namespaces.names", "should match"],
    )
    .await;
    let api: Api<DynamicObject> = Api::all_with(cluster().admin(), &resource("TwilioAccount"));
    let good = object(
        "TwilioAccount",
        "admission-good",
        json!({"credentials": {"secretRef": {"namespace": "ops", "name": "twilio"}}, "apiKeys": {"permissions": ["/twilio/messaging/*", "/*"]}}),
    );
    let made = api
        .create(&PostParams::default(), &good)
        .await
        .expect("a well-formed TwilioAccount is admitted");
    assert_eq!(
        made.data["spec"]["subaccounts"]["deletionPolicies"],
        json!(["Retain", "Suspend"]),
        "Close is opt-in"
    );
    assert_eq!(
        made.data["spec"]["apiKeys"]["keyTypes"],
        json!(["Standard", "Restricted"])
    );
    assert_eq!(made.data["spec"]["subaccounts"]["create"], json!(true));
    api.delete("admission-good", &Default::default()).await.unwrap();
}

#[tokio::test]
async fn rotation_durations_are_bounded() {
    let ns = cluster().namespace("rotation").await;
    let kind = "TwilioApiKey";
    rejects_create(
        &ns,
        kind,
        json!({"rotation": {"every": "59m"}}),
        &["spec.rotation.every", "at least 1h"],
    )
    .await;
    rejects_create(
        &ns,
        kind,
        json!({"rotation": {"every": "30d"}}),
        &["spec.rotation.every", "should match"],
    )
    .await;
    rejects_create(
        &ns,
        kind,
        json!({"rotation": {"every": "2h", "gracePeriod": "2h"}}),
        &["spec.rotation.gracePeriod", "shorter than every"],
    )
    .await;
    rejects_create(
        &ns,
        kind,
        json!({"rotation": {"every": "2h", "gracePeriod": "-1m"}}),
        &["spec.rotation.gracePeriod", "should match"],
    )
    .await;
    accepts(
        &ns,
        object(
            kind,
            "zero-grace",
            json!({"rotation": {"every": "1h", "gracePeriod": "0s"}}),
        ),
    )
    .await;
    accepts(
        &ns,
        object(
            kind,
            "compound",
            json!({"rotation": {"every": "1h30m", "gracePeriod": "89m"}}),
        ),
    )
    .await
    .data["spec"]["rotation"]["every"]
        .as_str()
        .expect("kept as written");

    let kind = "TwilioSubaccount";
    let secret = json!({"name": "creds"});
    rejects_create(
        &ns,
        kind,
        json!({"secret": secret, "authTokenRotation": {"every": "23h"}}),
        &["spec.authTokenRotation.every", "at least 24h"],
    )
    .await;
    rejects_create(
        &ns,
        kind,
        json!({"secret": secret, "authTokenRotation": {"every": "24h", "gracePeriod": "24h"}}),
        &["spec.authTokenRotation.gracePeriod", "shorter than every"],
    )
    .await;
    rejects_create(
        &ns,
        kind,
        json!({"authTokenRotation": {"every": "48h"}}),
        &["spec.authTokenRotation", "needs spec.secret"],
    )
    .await;
}

#[tokio::test]
async fn secret_and_reference_names_are_dns_subdomains() {
    let ns = cluster().namespace("dns").await;
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"secret": {"name": "Checkout_Twilio"}}),
        &["spec.secret.name", "should match"],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"secret": {"name": "x".repeat(254)}}),
        &["spec.secret.name", "253"],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioSubaccount",
        json!({"secret": {"name": "-bad"}}),
        &["spec.secret.name", "should match"],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"credentialsRef": {"name": "UPPER"}}),
        &["spec.credentialsRef.name", "should match"],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"subaccountRef": {"name": "a/b"}}),
        &["spec.subaccountRef.name", "should match"],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"restartWorkloads": [{"kind": "Deployment", "name": "Web"}]}),
        &["spec.restartWorkloads[0].name", "should match"],
    )
    .await;
}

#[tokio::test]
async fn secret_layout_is_checked() {
    let ns = cluster().namespace("layout").await;
    let kind = "TwilioApiKey";
    rejects_create(
        &ns,
        kind,
        json!({"secret": {"keys": {"apiKey": "TWILIO_ACCOUNT_SID"}}}),
        &["spec.secret.keys", "three different data keys"],
    )
    .await;
    rejects_create(
        &ns,
        kind,
        json!({"secret": {"keys": {"apiSecret": "has space"}}}),
        &["spec.secret.keys.apiSecret", "should match"],
    )
    .await;
    rejects_create(
        &ns,
        kind,
        json!({"secret": {"labels": {"app.kubernetes.io/managed-by": "me"}}}),
        &["spec.secret.labels", "managed-by"],
    )
    .await;
    rejects_create(
        &ns,
        kind,
        json!({"restartWorkloads": [{"kind": "Deployment", "name": "web"}, {"kind": "Deployment", "name": "web"}]}),
        &["spec.restartWorkloads", "names each workload once"],
    )
    .await;
    let selector = json!({"matchLabels": {"app": "web"}});
    for (entry, fragments) in [
        (
            json!({"kind": "Deployment", "name": "web", "selector": selector}),
            &["name) or selects them (selector), not both"][..],
        ),
        (
            json!({"kind": "Rollout"}),
            &["name) or selects them (selector)"][..],
        ),
        (
            json!({"kind": "Deployment", "selector": {"matchLabels": {}}}),
            &[
                "spec.restartWorkloads[0].selector.matchLabels",
                "should have at least 1 properties",
            ][..],
        ),
        (
            json!({"kind": "Deployment", "selector": {"matchLabels": {"a,b": "x"}}}),
            &["selector.matchLabels keys must be label keys"][..],
        ),
        (
            json!({"kind": "Deployment", "selector": {"matchLabels": {"app": "not a label value"}}}),
            &["spec.restartWorkloads[0].selector.matchLabels.app"][..],
        ),
    ] {
        rejects_create(&ns, kind, json!({"restartWorkloads": [entry]}), fragments).await;
    }
    accepts(
        &ns,
        object(
            kind,
            "selected",
            json!({"restartWorkloads": [{"kind": "Rollout", "selector": selector}, {"kind": "Deployment", "selector": selector}, {"kind": "Deployment", "name": "web"}]}),
        ),
    )
    .await;
}

#[tokio::test]
async fn service_account_clients_are_held_to_rbac() {
    use k8s_openapi::api::core::v1::Secret;
    let cp = cluster();
    let ns = cp.namespace("rbac").await;
    let as_sa: Api<Secret> = Api::namespaced(cp.as_service_account(&ns, "nobody"), &ns);
    match as_sa.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains(&format!("system:serviceaccount:{ns}:nobody")),
                "{}",
                status.message
            );
        }
        other => panic!("an unprivileged ServiceAccount listed Secrets: {other:?}"),
    }
    let admin: Api<Secret> = Api::namespaced(cp.admin(), &ns);
    admin
        .list(&Default::default())
        .await
        .expect("admin lists Secrets");
}

#[tokio::test]
async fn secret_labels_and_annotations_have_kubernetes_syntax() {
    let ns = cluster().namespace("labels").await;
    for (labels, fragment) in [
        (json!({"bad key!": "x"}), "secret.labels keys"),
        (json!({"a/b/c": "x"}), "secret.labels keys"),
        (json!({"team": "not a value"}), "should match"),
        (json!({"team": "x".repeat(64)}), "may not be more than 63"),
    ] {
        rejects_create(
            &ns,
            "TwilioApiKey",
            json!({"secret": {"labels": labels}}),
            &[fragment],
        )
        .await;
    }
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"secret": {"annotations": {"bad key!": "x"}}}),
        &["secret.annotations keys"],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"secret": {"annotations": {"note": "x".repeat(5000)}}}),
        &["spec.secret.annotations", "4096"],
    )
    .await;
    let fine = json!({"secret": {"labels": {"example.com/team": "a", "empty": ""}, "annotations": {"note": "anything, even spaces"}}});
    accepts(&ns, object("TwilioApiKey", "labelled", fine)).await;
}

/// What CEL and the schema can check of a Secret template is refused at admission, on both
/// kinds: data key names, sizes, mergePolicy; and a Secret's type cannot change.
#[tokio::test]
async fn secret_templates_are_checked_at_admission() {
    let ns = cluster().namespace("templates").await;
    for kind in ["TwilioApiKey", "TwilioSubaccount"] {
        let with = |template: Value| {
            let mut secret = json!({"template": template});
            if kind == "TwilioSubaccount" {
                secret["name"] = json!("s");
            }
            json!({"secret": secret})
        };
        rejects_create(
            &ns,
            kind,
            with(json!({"data": {"bad/key": "x"}})),
            &["spec.secret.template.data", "Secret data keys"],
        )
        .await;
        rejects_create(
            &ns,
            kind,
            with(json!({"data": {"a": "x".repeat(4097)}})),
            &["spec.secret.template.data.a", "4096"],
        )
        .await;
        // Each under the cap, together over it: what one object costs the operator is bounded.
        rejects_create(
            &ns,
            kind,
            with(json!({"data": {"a": "x".repeat(3000), "b": "x".repeat(3000)}})),
            &["spec.secret.template.data", "4096 characters in all"],
        )
        .await;
        rejects_create(
            &ns,
            kind,
            with(json!({"data": {}})),
            &["spec.secret.template.data", "1"],
        )
        .await;
        rejects_create(
            &ns,
            kind,
            with(json!({"data": {"a": "x"}, "mergePolicy": "Append"})),
            &["spec.secret.template.mergePolicy", "Replace", "Merge"],
        )
        .await;
    }
    // Types whose data Kubernetes fills in or demands beyond what the operator writes.
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"secret": {"type": "kubernetes.io/service-account-token"}}),
        &["spec.secret.type", "Opaque, kubernetes.io/basic-auth"],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioApiKey",
        json!({"secret": {"annotations": {"twilio.operator.dev/template-digest": "x"}}}),
        &["spec.secret.annotations", "twilio.operator.dev/ prefix"],
    )
    .await;
    rejects_create(
        &ns,
        "TwilioSubaccount",
        json!({"secret": {"name": "s", "template": {"data": {"dsn": "{{ authToken }}"}}}, "authTokenRotation": {"every": "720h"}}),
        &["spec.secret.template.mergePolicy", "mergePolicy: Merge"],
    )
    .await;
    let before = json!({"secret": {"name": "s", "type": "kubernetes.io/basic-auth"}});
    let after = json!({"secret": {"name": "s", "type": "Opaque"}});
    rejects_update(
        &ns,
        "TwilioSubaccount",
        "typed",
        before,
        after,
        &["spec.secret.type", "cannot change"],
    )
    .await;
    let defaulted = accepts(
        &ns,
        object(
            "TwilioApiKey",
            "plain",
            json!({"secret": {"template": {"data": {"a": "{{ apiKey }}"}}}}),
        ),
    )
    .await;
    assert_eq!(defaulted.data["spec"]["secret"]["type"], "Opaque");
    assert_eq!(
        defaulted.data["spec"]["secret"]["template"]["mergePolicy"],
        "Replace"
    );
    for recipe in ["dotenv.yaml", "json-config.yaml", "basic-auth.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/templates")
            .join(recipe);
        let obj: DynamicObject = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        accepts(&ns, obj).await;
    }
}

#[tokio::test]
async fn budgets_are_checked_at_admission() {
    let ns = cluster().namespace("adm-budget").await;
    let sub = "TwilioSubaccount";
    for bad in ["0", "0.00", "-5", "1e3", "12.345678", "abc", ""] {
        rejects_create(
            &ns,
            sub,
            json!({"budget": {"monthly": bad}}),
            &["spec.budget.monthly"],
        )
        .await;
    }
    rejects_create(
        &ns,
        sub,
        json!({"budget": {"monthly": "0.00"}}),
        &["must be more than zero"],
    )
    .await;
    for bad in [
        json!([0]),
        json!([100]),
        json!([50, 50]),
        json!([1, 2, 3, 4, 5, 6]),
    ] {
        rejects_create(
            &ns,
            sub,
            json!({"budget": {"monthly": "10", "warnAt": bad}}),
            &["spec.budget.warnAt"],
        )
        .await;
    }
    rejects_create(
        &ns,
        sub,
        json!({"budget": {"monthly": "10", "action": "Stop"}}),
        &["spec.budget.action", "Alert", "Suspend"],
    )
    .await;
    let made = accepts(
        &ns,
        object(sub, "budgeted", json!({"budget": {"monthly": "50.00"}})),
    )
    .await;
    assert_eq!(
        made.data["spec"]["budget"],
        json!({"monthly": "50.00", "warnAt": [80], "action": "Alert"}),
        "defaults: warn at 80%, alert only"
    );
    rejects_account(
        json!({"credentials": {"fromEnvironment": true}, "subaccounts": {"budget": {"maxMonthly": "lots"}}}),
        &["spec.subaccounts.budget.maxMonthly", "should match"],
    )
    .await;
    rejects_account(
        json!({"credentials": {"fromEnvironment": true}, "subaccounts": {"budget": {"actions": []}}}),
        &["spec.subaccounts.budget.actions"],
    )
    .await;
}

#[tokio::test]
async fn rotation_windows_are_checked_at_admission() {
    let ns = cluster().namespace("adm-window").await;
    let with = |window: Value| json!({"rotation": {"every": "720h", "window": window}});
    for (window, fragments) in [
        (
            json!({"schedule": "61 2 * * *", "duration": "4h"}),
            &["rotation.window.schedule must be a cron schedule of five fields"][..],
        ),
        (
            json!({"schedule": "*/0 2 * * *", "duration": "4h"}),
            &["rotation.window.schedule must be a cron schedule"][..],
        ),
        (
            json!({"schedule": "5/15 2 * * *", "duration": "4h"}),
            &["rotation.window.schedule must be a cron schedule"][..],
        ),
        (
            json!({"schedule": "0 2 * * * *", "duration": "4h"}),
            &["five fields (minute hour day-of-month month day-of-week)"][..],
        ),
        (
            json!({"schedule": "0 2 * * SAT", "timeZone": "Europe/Berln", "duration": "4h"}),
            &["rotation.window.timeZone must be an IANA time zone name"][..],
        ),
        (
            json!({"schedule": "0 2 * * SAT", "duration": "5m"}),
            &["rotation.window.duration must be at least 10m"][..],
        ),
        (json!({"duration": "4h"}), &["schedule", "Required"][..]),
    ] {
        rejects_create(&ns, "TwilioApiKey", with(window), fragments).await;
    }
    for (name, schedule) in [
        ("saturday", "0 2 * * SAT"),
        ("weekdays", "*/15 9-17 * * MON-FRI"),
        ("lists", "0,30 1-3/2 1,15 JAN-MAR,7 0"),
    ] {
        let spec = with(json!({"schedule": schedule, "timeZone": "America/New_York", "duration": "90m"}));
        let key = accepts(&ns, object("TwilioApiKey", name, spec)).await;
        // Whatever admission takes, the operator reads.
        let window = &key.data["spec"]["rotation"]["window"];
        twilio_operator::api::schedule::Window::new(
            window["schedule"].as_str().unwrap(),
            window["timeZone"].as_str().unwrap(),
            std::time::Duration::from_secs(5400),
        )
        .unwrap_or_else(|e| panic!("{schedule}: {e}"));
    }
    let key = accepts(
        &ns,
        object(
            "TwilioApiKey",
            "utc",
            with(json!({"schedule": "0 2 * * *", "duration": "1h"})),
        ),
    )
    .await;
    assert_eq!(
        key.data["spec"]["rotation"]["window"]["timeZone"], "UTC",
        "the default"
    );
}
