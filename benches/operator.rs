//! Figures for the closing notes, measured end to end: the real control plane, the emulator and
//! the operator process. Run with `cargo bench --bench operator`; it prints its figures.
//!
//! - control-plane start time (and the setup script's warm time);
//! - Twilio calls per key for create, rotate and revoke, counted at the emulator;
//! - drift detection cost: key lists per resync for many keys in one account;
//! - operator memory with many keys and many Secrets it does not own;
//! - time for many keys to converge.

#[path = "../tests/support/mod.rs"]
mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::emulator::Emulator;
use support::operator::Operator;
use twilio_operator::api::TwilioApiKey;
use twilio_operator::conditions::is_ready;

const KEYS: usize = 200;
const FOREIGN_SECRETS: usize = 2000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn wait_all(keys: &Api<TwilioApiKey>, what: &str, done: impl Fn(&TwilioApiKey) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let list = keys.list(&Default::default()).await.unwrap();
        if list.items.len() == KEYS && list.items.iter().all(&done) {
            return started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(600) {
            let stuck: Vec<_> = list
                .items
                .iter()
                .filter(|k| !done(k))
                .map(|k| {
                    (
                        k.metadata.name.clone(),
                        k.status.as_ref().map(|s| s.conditions.clone()),
                    )
                })
                .take(3)
                .collect();
            panic!("{what}: not all keys converged, for example {stuck:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn received(state: &Value, operation: &str) -> u64 {
    state["received"][operation].as_u64().unwrap_or(0)
}

async fn run() {
    let started = Instant::now();
    let status = std::process::Command::new("bash")
        .arg(support::repo_root().join("hack/control-plane.sh"))
        .output()
        .unwrap();
    assert!(status.status.success());
    let setup = started.elapsed();
    let cp = support::cluster();
    println!(
        "control plane: setup script (warm) {:.2}s, start to CRDs Established {:.2}s",
        setup.as_secs_f64(),
        cp.startup.as_secs_f64()
    );

    let ns = cp.tenant_namespace("bench").await;
    let client = cp.admin();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let filler = "x".repeat(1024);
    for i in 0..FOREIGN_SECRETS {
        let s: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("foreign-{i}")}, "stringData": {"blob": filler}})).unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let emu = Emulator::start(&["--max-keys", "10000"]);
    let operator = Operator::start(cp, &emu, &ns, &[("RESYNC_INTERVAL", "5s"), ("RUST_LOG", "warn")]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, _) = operator.memory_kib();

    let keys: Api<TwilioApiKey> = Api::namespaced(client.clone(), &ns);
    emu.reset_stats().await;
    let create_started = Instant::now();
    for i in 0..KEYS {
        let key: TwilioApiKey = serde_json::from_value(json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey", "metadata": {"name": format!("k{i:04}")},
            "spec": {"rotation": {"every": "720h", "gracePeriod": "0s"}}})).unwrap();
        keys.create(&PostParams::default(), &key).await.unwrap();
    }
    let ready = |k: &TwilioApiKey| {
        k.status
            .as_ref()
            .is_some_and(|s| is_ready(&s.conditions) && s.key_sid.is_some())
    };
    wait_all(&keys, "create", ready).await;
    let create_time = create_started.elapsed();
    let state = emu.state().await;
    let (creates, lists) = (
        received(&state, "api.CreateNewKey"),
        received(&state, "api.ListKey"),
    );
    let total: u64 = state["received"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    println!(
        "create: {KEYS} keys Ready in {:.1}s ({:.1} keys/s)",
        create_time.as_secs_f64(),
        KEYS as f64 / create_time.as_secs_f64()
    );
    println!(
        "create: Twilio calls {total} in all = {:.2} per key (CreateNewKey {creates}, ListKey {lists}); by operation {}",
        total as f64 / KEYS as f64,
        state["received"]
    );
    let (rss, hwm) = operator.memory_kib();
    println!(
        "memory: operator RSS {:.1} MiB idle, {:.1} MiB with {KEYS} keys and {FOREIGN_SECRETS} Secrets it does not own (peak {:.1} MiB)",
        idle_rss as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );

    emu.reset_stats().await;
    let rotate_started = Instant::now();
    for i in 0..KEYS {
        let patch = json!({"metadata": {"annotations": {"twilio.operator.dev/rotate": "bench"}}});
        keys.patch(&format!("k{i:04}"), &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }
    let rotated = |k: &TwilioApiKey| {
        k.status.as_ref().is_some_and(|s| {
            is_ready(&s.conditions)
                && s.last_rotation_request.as_deref() == Some("bench")
                && s.retiring_keys.is_empty()
        })
    };
    wait_all(&keys, "rotate", rotated).await;
    let rotate_time = rotate_started.elapsed();
    let state = emu.state().await;
    let total: u64 = state["received"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    println!(
        "rotate (grace 0s): {KEYS} keys rotated and old keys revoked in {:.1}s; Twilio calls {total} = {:.2} per rotation (CreateNewKey {}, DeleteKey {}, ListKey {})",
        rotate_time.as_secs_f64(),
        total as f64 / KEYS as f64,
        received(&state, "api.CreateNewKey"),
        received(&state, "api.DeleteKey"),
        received(&state, "api.ListKey")
    );

    emu.reset_stats().await;
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let state = emu.state().await;
    println!(
        "drift: {} ListKey and {} FetchKey calls in {}s at a 5s resync for {KEYS} keys in one account",
        received(&state, "api.ListKey"),
        received(&state, "api.FetchKey"),
        window.as_secs()
    );
    let (rss, hwm) = operator.memory_kib();
    println!(
        "memory: operator RSS {:.1} MiB at rest after rotation (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}
