//! The intent written before a create at Twilio is conditional on what the pass read: a pass
//! working from a stale copy of the object (one that does not know a SID the operator already
//! recorded) is refused by the apiserver, erases nothing, and asks Twilio for nothing.

mod support;

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use serde_json::json;
use std::sync::Arc;
use support::cluster;
use support::emulator::Emulator;
use twilio_operator::api::TwilioSubaccount;
use twilio_operator::context::{Cluster, Context, MANAGER, Recorder};
use twilio_operator::metrics::Metrics;
use twilio_operator::reconcile::{Stop, create_with_intent};

#[tokio::test]
async fn an_intent_written_from_a_stale_read_is_refused() {
    let cp = cluster();
    let ns = cp.tenant_namespace("intent").await;
    let emu = Emulator::start(&[]);
    let subs: Api<TwilioSubaccount> = Api::namespaced(cp.admin(), &ns);
    let object: TwilioSubaccount = serde_json::from_value(json!({
        "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount", "metadata": {"name": "stale"}, "spec": {}
    }))
    .unwrap();
    subs.create(&PostParams::default(), &object).await.unwrap();
    let stale = subs.get("stale").await.unwrap();
    // The operator's own later write, which the stale copy does not know: the recorded SID.
    let sid = format!("AC{}", "1".repeat(32));
    let recorded = json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount", "status": {"sid": sid}});
    subs.patch_status(
        "stale",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&recorded),
    )
    .await
    .unwrap();

    let client = cp.admin();
    let (accounts, _) = reflector::store();
    let (namespaces, _) = reflector::store();
    let ctx = Context::new(
        client.clone(),
        emu.client(),
        Some(emu.main_credentials()),
        Recorder::new(
            client,
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        ),
        std::time::Duration::from_secs(600),
        Arc::new(Metrics::default()),
        Cluster {
            accounts,
            namespaces,
            changes: tokio::sync::broadcast::channel(1).0,
            own_namespace: "default".into(),
            filled: tokio::sync::watch::channel(true).1,
        },
    );
    let mut status = stale.status.clone().unwrap_or_default();
    let twilio = emu.client();
    let creds = emu.main_credentials();
    let create = twilio.create_account(&creds, Some("never"));
    let outcome = create_with_intent(
        &ctx,
        &stale,
        &mut status,
        k8s_openapi::jiff::Timestamp::now(),
        "none",
        create,
    )
    .await;
    assert!(
        matches!(&outcome, Err(Stop::Kube(kube::Error::Api(e))) if e.code == 409),
        "the stale intent was refused"
    );
    let now = subs.get("stale").await.unwrap().status.unwrap();
    assert_eq!(
        now.sid.as_deref(),
        Some(sid.as_str()),
        "the recorded SID survives"
    );
    assert_eq!(
        emu.calls("api.CreateAccount").await,
        0,
        "nothing was asked of Twilio"
    );
}
