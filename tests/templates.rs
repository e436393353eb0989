//! Secret templates end to end: the README's three recipes published and rotated (the workload
//! rolls once), bad templates refused before any Twilio call, an edited templated Secret
//! repaired, a subaccount's templated Secret, and no secret in any message or event.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use support::fixture::{Fixture, WAIT};
use support::operator::{sample, wait_for};
use support::repo_root;
use twilio_operator::api::{TwilioApiKey, TwilioSubaccount};
use twilio_operator::conditions::is_ready;
use twilio_operator::twilio::Credentials;
use twilio_sandbox::rollout;

/// The recipe's spec, as the README ships it.
fn recipe(file: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("examples/templates").join(file)).unwrap();
    let object: Value = serde_saphyr::from_str(&text).unwrap();
    object["spec"].clone()
}

async fn data(f: &Fixture, secret: &str) -> (String, BTreeMap<String, String>) {
    let secret = f.secrets().get(secret).await.unwrap();
    let data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect();
    (secret.type_.unwrap_or_default(), data)
}

/// `KEY=value` lines of a .env file.
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn sid(key: &TwilioApiKey) -> String {
    key.status.as_ref().unwrap().key_sid.clone().unwrap()
}

#[tokio::test]
async fn the_dotenv_recipe_publishes_rotates_and_rolls_the_workload_once() {
    let f = Fixture::new("tpl-env", &[]).await;
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), &f.ns);
    let checkout: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "checkout"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "checkout"}}, "template": {"metadata": {"labels": {"app": "checkout"}},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/checkout:1"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &checkout)
        .await
        .unwrap();
    f.create("checkout-env", recipe("dotenv.yaml")).await;
    let first = f.ready("checkout-env").await;
    let (type_, before) = data(&f, "checkout-env").await;
    assert_eq!(type_, "Opaque");
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        [".env"],
        "Replace: only the template's keys"
    );
    let env = env_file(&before[".env"]);
    assert_eq!(env["TWILIO_API_KEY"], sid(&first));
    assert!(
        before[".env"].ends_with("Z\n"),
        "the trailing newline and createdAt are kept"
    );
    let creds = Credentials::with_api_key(
        env["TWILIO_ACCOUNT_SID"].clone(),
        env["TWILIO_API_KEY"].clone(),
        env["TWILIO_API_SECRET"].clone().into(),
    )
    .unwrap();
    assert!(f.works(&creds).await, "the rendered credentials work");
    let secret = env["TWILIO_API_SECRET"].clone();
    let pods_before = rollout::settled(&f.client, &f.ns, "checkout", WAIT)
        .await
        .unwrap();

    f.annotate("checkout-env", "twilio.operator.dev/rotate", "now")
        .await;
    let rotated = f
        .ready_where("checkout-env", "rotated", |k| sid(k) != sid(&first))
        .await;
    let (_, after) = data(&f, "checkout-env").await;
    assert_eq!(env_file(&after[".env"])["TWILIO_API_KEY"], sid(&rotated));
    let pods_after = rollout::settled(&f.client, &f.ns, "checkout", WAIT)
        .await
        .unwrap();
    rollout::rolled_once(&pods_before, &pods_after).unwrap();
    f.emu.assert_contract_clean().await;
    // The secret is in the Secret and nowhere else: not in the status, events or the log.
    let status = serde_json::to_string(&rotated.status).unwrap();
    let events = format!("{:?}", f.events("checkout-env").await);
    let log = std::fs::read_to_string(&f.operator.as_ref().unwrap().log).unwrap();
    for (what, text) in [("status", status), ("events", events), ("log", log)] {
        assert!(!text.contains(&secret), "the key secret is in the {what}");
    }
}

#[tokio::test]
async fn the_json_and_basic_auth_recipes_render_as_documented() {
    let f = Fixture::new("tpl-json", &[]).await;
    f.create("notifier-json", recipe("json-config.yaml")).await;
    f.create("webhook-basic-auth", recipe("basic-auth.yaml")).await;

    let json_key = f.ready("notifier-json").await;
    let (_, json_data) = data(&f, "notifier-config").await;
    let config: Value = serde_json::from_str(&json_data["config.json"]).expect("valid JSON");
    assert_eq!(config["twilio"]["apiKey"], sid(&json_key));
    assert_eq!(config["twilio"]["apiSecret"], json_data["TWILIO_API_SECRET"]);
    assert_eq!(config["sender"], format!("{}/notifier-json", f.ns));
    assert_eq!(
        json_data["TWILIO_API_KEY"],
        sid(&json_key),
        "Merge keeps the default keys"
    );

    let basic = f.ready("webhook-basic-auth").await;
    let (type_, auth) = data(&f, "webhook-basic-auth").await;
    assert_eq!(type_, "kubernetes.io/basic-auth");
    assert_eq!(auth["username"], sid(&basic));
    assert_eq!(
        auth["url"],
        format!(
            "https://{}:{}@api.twilio.com/2010-04-01/Accounts/{}.json",
            auth["username"],
            auth["password"],
            config["twilio"]["accountSid"].as_str().unwrap()
        ),
        "the key SID and secret need no escaping, so the URL carries them as they are"
    );
    let creds = Credentials::with_api_key(
        config["twilio"]["accountSid"].as_str().unwrap(),
        auth["username"].clone(),
        auth["password"].clone().into(),
    )
    .unwrap();
    assert!(f.works(&creds).await);

    // A rotation renders both again with the new key.
    for (name, secret) in [
        ("notifier-json", "notifier-config"),
        ("webhook-basic-auth", "webhook-basic-auth"),
    ] {
        let before = sid(&f.ready(name).await);
        f.annotate(name, "twilio.operator.dev/rotate", "now").await;
        let after = sid(&f.ready_where(name, "rotated", |k| sid(k) != before).await);
        let (_, rendered) = data(&f, secret).await;
        let text = serde_json::to_string(&rendered).unwrap();
        assert!(text.contains(&after) && !text.contains(&before), "{name}: {text}");
    }
}

/// 1024 copies of 2000 characters with a 32-character secret: 2 MB, more than a Secret holds.
fn big() -> String {
    format!(
        "{{% for a in apiSecret %}}{{% for b in apiSecret %}}{}{{% endfor %}}{{% endfor %}}",
        "x".repeat(2000)
    )
}

/// Each bad template is reported with its key and position, and Twilio is never asked for a key.
#[tokio::test]
async fn bad_templates_are_refused_before_any_twilio_call() {
    let f = Fixture::new("tpl-bad", &[]).await;
    let cases = [
        ("syntax", json!({".env": "KEY={{ apiKey \n"}), "line 1"),
        ("unknown", json!({"a": "ok\n{{ apiSecrt }}"}), "line 2"),
        (
            "block",
            json!({"a": "{% set x = apiSecret %}{{ x }}"}),
            "\"set\" block is not offered",
        ),
        (
            "repeat",
            json!({"a": "{{ apiSecret * 100000 }}"}),
            "* and ** operators",
        ),
        (
            "filter",
            json!({"a": "{{ apiSecret | reverse }}"}),
            "unknown filter",
        ),
        ("large", json!({"a": big()}), "more than a Secret can hold"),
    ];
    for (name, template, _) in &cases {
        f.create(name, json!({"secret": {"template": {"data": template}}}))
            .await;
    }
    for (name, _, said) in &cases {
        let key = f.reason(name, "TemplateInvalid").await;
        let message = &key.status.as_ref().unwrap().conditions[0].message;
        assert!(
            message.contains("secret.template.data[") && message.contains(said),
            "{name}: {message}"
        );
        f.wait_event(name, "TemplateInvalid").await;
    }
    assert_eq!(f.emu.calls("api.CreateNewKey").await, 0);
    assert!(f.emu.key_sids().await.is_empty());
    for (name, _, _) in &cases {
        assert!(
            f.secrets().get_opt(name).await.unwrap().is_none(),
            "{name}: no Secret"
        );
    }
    // A subaccount's template is checked before the subaccount is created.
    let subs: Api<TwilioSubaccount> = Api::namespaced(f.client.clone(), &f.ns);
    let sub: TwilioSubaccount = serde_json::from_value(json!({
        "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount", "metadata": {"name": "tenant"},
        "spec": {"secret": {"name": "tenant", "template": {"data": {"dsn": "{{ authTokn }}"}}}}
    }))
    .unwrap();
    subs.create(&PostParams::default(), &sub).await.unwrap();
    let refused = wait_for(
        &subs,
        "tenant",
        WAIT,
        "TemplateInvalid",
        |s: &TwilioSubaccount| {
            s.status
                .as_ref()
                .is_some_and(|st| st.conditions.iter().any(|c| c.reason == "TemplateInvalid"))
        },
    )
    .await;
    let message = &refused.status.unwrap().conditions[0].message;
    assert!(
        message.starts_with("secret.template.data[\"dsn\"] line 1"),
        "{message}"
    );
    assert_eq!(f.emu.calls("api.CreateAccount").await, 0);
}

/// A template that fails only with the real values costs one key, which is swept, and no more;
/// what is reported keeps the position but nothing MiniJinja said, which could quote the secret.
#[tokio::test]
async fn a_template_failing_on_real_values_reports_no_secret_and_stops_asking() {
    let f = Fixture::new("tpl-real", &[]).await;
    let template = json!({"x": "{% if apiSecret != \"00000000000000000000000000000000\" %}{{ apiSecret - 1 }}{% endif %}"});
    f.create("tricky", json!({"secret": {"template": {"data": template}}}))
        .await;
    let key = f.reason("tricky", "TemplateInvalid").await;
    let message = key.status.as_ref().unwrap().conditions[0].message.clone();
    assert_eq!(
        message,
        "secret.template.data[\"x\"] line 1: invalid operation with the real values (details withheld: they could contain the credential)"
    );
    // The operator retries after its backoff, and still asks Twilio for nothing more.
    let metrics_after_two_passes = || async {
        let text = f.operator.as_ref().unwrap().metrics().await;
        sample(
            &text,
            r#"twilio_operator_reconciles_total{kind="TwilioApiKey",result="error",reason="TemplateInvalid"}"#,
        )
        .unwrap_or(0.0)
            >= 2.0
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !metrics_after_two_passes().await {
        assert!(std::time::Instant::now() < deadline, "no second pass");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        f.emu.calls("api.CreateNewKey").await,
        1,
        "one key, never a second"
    );
    for (_, _, text) in f.events("tricky").await {
        assert!(
            !text.contains("tried to use"),
            "no MiniJinja detail in events: {text}"
        );
    }
}

/// An edited templated Secret is put back, with a new key since the old secret is gone from
/// it; a foreign Secret under the same name is never written.
#[tokio::test]
async fn an_edited_templated_secret_is_repaired() {
    let f = Fixture::new("tpl-repair", &[]).await;
    f.create("env", recipe("dotenv.yaml")).await;
    let first = f.ready("env").await;
    let secrets = f.secrets();

    // A key somebody else adds (a sync tool, a webhook) is no edit: the key stays, nothing churns.
    let ready_passes =
        r#"twilio_operator_reconciles_total{kind="TwilioApiKey",result="success",reason="Ready"}"#;
    let passes =
        || async { sample(&f.operator.as_ref().unwrap().metrics().await, ready_passes).unwrap_or(0.0) };
    let before = passes().await;
    secrets
        .patch(
            "checkout-env",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"added-by-someone": "x"}})),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while passes().await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the Secret edit woke no pass"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        sid(&f.ready("env").await),
        sid(&first),
        "no new key for a key added by somebody else"
    );
    assert_eq!(f.emu.calls("api.CreateNewKey").await, 1);

    secrets
        .patch(
            "checkout-env",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {".env": "TWILIO_API_SECRET=tampered\n"}})),
        )
        .await
        .unwrap();
    let repaired = f.ready_where("env", "reissued", |k| sid(k) != sid(&first)).await;
    let (_, after) = data(&f, "checkout-env").await;
    assert_eq!(env_file(&after[".env"])["TWILIO_API_KEY"], sid(&repaired));
    f.wait_event("env", "KeyReissued").await;

    // A template edit publishes the new shape.
    let keys: Api<TwilioApiKey> = f.keys();
    keys.patch(
        "env",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"secret": {"template": {"data": {".env": "KEY={{ apiKey }}\n"}}}}})),
    )
    .await
    .unwrap();
    let reshaped = f
        .ready_where("env", "re-rendered", |k| k.metadata.generation == Some(2))
        .await;
    let (_, shaped) = data(&f, "checkout-env").await;
    assert_eq!(shaped[".env"], format!("KEY={}\n", sid(&reshaped)));
}

/// A subaccount's Secret in a DSN-like shape, re-rendered when edited.
#[tokio::test]
async fn a_subaccount_secret_is_templated_and_repaired() {
    let f = Fixture::new("tpl-sub", &[]).await;
    let subs: Api<TwilioSubaccount> = Api::namespaced(f.client.clone(), &f.ns);
    let sub: TwilioSubaccount = serde_json::from_value(json!({
        "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount",
        "metadata": {"name": "tenant"},
        "spec": {"secret": {"name": "tenant-dsn", "template": {"data": {
            "dsn": "twilio://{{ accountSid }}:{{ authToken | urlencode }}@api.twilio.com/{{ namespace }}/{{ name }}"
        }}}}
    }))
    .unwrap();
    subs.create(&PostParams::default(), &sub).await.unwrap();
    let ready = wait_for(&subs, "tenant", WAIT, "Ready", |s: &TwilioSubaccount| {
        s.status
            .as_ref()
            .is_some_and(|st| is_ready(&st.conditions) && st.sid.is_some())
    })
    .await;
    let account = ready.status.unwrap().sid.unwrap();
    let (_, rendered) = data(&f, "tenant-dsn").await;
    let dsn = &rendered["dsn"];
    let prefix = format!("twilio://{account}:");
    assert!(dsn.starts_with(&prefix), "{dsn}");
    assert!(
        dsn.ends_with(&format!("@api.twilio.com/{}/tenant", f.ns)),
        "{dsn}"
    );
    let token = &dsn[prefix.len()..dsn.find('@').unwrap()];
    assert!(
        f.works(&Credentials::with_auth_token(account.clone(), token.to_owned().into()).unwrap())
            .await,
        "the templated token works"
    );
    assert_eq!(rendered.len(), 1);

    f.secrets()
        .patch(
            "tenant-dsn",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"dsn": "twilio://edited"}})),
        )
        .await
        .unwrap();
    wait_for(
        &f.secrets(),
        "tenant-dsn",
        WAIT,
        "repaired",
        |s: &k8s_openapi::api::core::v1::Secret| {
            s.data
                .as_ref()
                .and_then(|d| d.get("dsn"))
                .is_some_and(|v| v.0 == dsn.as_bytes())
        },
    )
    .await;
    assert!(!f.events("tenant").await.iter().any(|(_, _, m)| m.contains(token)));
}
