//! What the voice guardrail costs at Twilio, measured end to end: the real control plane, the
//! emulator and the operator process, with subaccounts that declare their dialing permissions.
//! Prints the Twilio calls per subaccount per resync round and per day at the default resync
//! interval (10 minutes, so 144 rounds a day), the writes of rounds in which nothing differs
//! (none), and the calls one drift repair costs.
//!
//! `cargo bench --bench voice` runs 50 subaccounts over 5 rounds of a 10 s resync; under
//! `cargo test --all-targets` the same code runs as a smoke run with 3 subaccounts over 2 rounds
//! of 3 s. Parameters (environment): `BENCH_SUBACCOUNTS`, `BENCH_ROUNDS`, `BENCH_RESYNC_SECONDS`.

#[path = "../tests/support/mod.rs"]
mod support;

use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::cluster;
use support::emulator::Emulator;
use support::operator::Operator;
use twilio_operator::api::TwilioSubaccount;
use twilio_operator::twilio::Credentials;
use twilio_operator::twilio::types::DialingCountry;

/// Resync rounds in a day at the operator's default interval of 10 minutes.
const ROUNDS_PER_DAY: f64 = 144.0;
const WAIT: Duration = Duration::from_secs(600);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn param(name: &str, full: u64, smoke: u64) -> u64 {
    let bench = std::env::args().any(|a| a == "--bench");
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { full } else { smoke })
}

async fn run() {
    let n = param("BENCH_SUBACCOUNTS", 50, 3) as usize;
    let rounds = param("BENCH_ROUNDS", 5, 2);
    let resync = param("BENCH_RESYNC_SECONDS", 10, 3);
    let cp = cluster();
    let ns = cp.tenant_namespace("bench-voice").await;
    let emu = Emulator::start(&[]);
    let _operator = Operator::start(cp, &emu, &ns, &[("RESYNC_INTERVAL", &format!("{resync}s"))]);
    let subs: Api<TwilioSubaccount> = Api::namespaced(cp.admin(), &ns);
    let voice = json!({"dialingPermissions": {"countries": [{"isoCode": "US"}, {"isoCode": "CA"}]}});
    let started = Instant::now();
    for i in 0..n {
        let sub: TwilioSubaccount = serde_json::from_value(json!({
            "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount",
            "metadata": {"name": format!("calls-{i}")}, "spec": {"voice": voice},
        }))
        .unwrap();
        subs.create(&PostParams::default(), &sub).await.unwrap();
    }
    let sids = settled(&subs, n, |c| c == "Matched").await;
    println!(
        "voice: {n} subaccounts declaring [US, CA] settled in {:.1}s; Twilio calls while settling: {}",
        started.elapsed().as_secs_f64(),
        received(&emu).await
    );

    emu.reset_stats().await;
    tokio::time::sleep(Duration::from_secs(rounds * resync)).await;
    let quiet = operations(&emu).await;
    let per_round = |ops: &BTreeMap<String, u64>, prefix: &str| {
        let calls: u64 = ops
            .iter()
            .filter(|(op, _)| op.starts_with(prefix))
            .map(|(_, c)| c)
            .sum();
        calls as f64 / n as f64 / rounds as f64
    };
    let voice_round = per_round(&quiet, "voice.");
    let writes: u64 = quiet
        .iter()
        .filter(|(op, _)| op.contains("Create") || op.contains("Update"))
        .map(|(_, c)| c)
        .sum();
    println!(
        "  {rounds} rounds of {resync}s with nothing different: {voice_round:.2} voice calls per subaccount per round, {:.0} per subaccount per day at the default 10m resync ({:.2} Twilio calls of every kind per round, {:.0} per day); {writes} writes; by operation: {quiet:?}",
        voice_round * ROUNDS_PER_DAY,
        per_round(&quiet, ""),
        per_round(&quiet, "") * ROUNDS_PER_DAY,
    );

    // Somebody with each subaccount's token enables a toll-fraud range abroad.
    let client = emu.client();
    for sid in &sids {
        let account = client.fetch_account(&emu.main_credentials(), sid).await.unwrap();
        let creds = Credentials::with_auth_token(sid.as_str(), account.auth_token.unwrap()).unwrap();
        let widen = DialingCountry {
            iso_code: "CU".into(),
            low_risk_numbers_enabled: true,
            high_risk_special_numbers_enabled: false,
            high_risk_tollfraud_numbers_enabled: true,
        };
        client.update_dialing_countries(&creds, &[widen]).await.unwrap();
    }
    emu.reset_stats().await;
    let widened = Instant::now();
    let deadline = widened + WAIT;
    while emu.calls("voice.CreateDialingPermissionsCountryBulkUpdate").await < n as u64 {
        assert!(Instant::now() < deadline, "the drift was not repaired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let repaired = widened.elapsed();
    let ops = operations(&emu).await;
    let bulk = ops["voice.CreateDialingPermissionsCountryBulkUpdate"];
    assert_eq!(bulk, n as u64, "one bulk update per repair: {ops:?}");
    println!(
        "  drift on every subaccount put back within {:.1}s (resync {resync}s): {:.2} Twilio calls per subaccount, one bulk update each; by operation: {ops:?}",
        repaired.as_secs_f64(),
        ops.values().sum::<u64>() as f64 / n as f64,
    );
    assert_eq!(writes, 0, "rounds with nothing different write nothing");
}

/// Waits until all `n` subaccounts' DialingPermissions condition has a reason `done` accepts;
/// returns their SIDs.
async fn settled(subs: &Api<TwilioSubaccount>, n: usize, done: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let list = subs.list(&Default::default()).await.unwrap();
        let sids: Vec<String> = list
            .items
            .iter()
            .filter_map(|s| {
                let st = s.status.as_ref()?;
                let c = st.conditions.iter().find(|c| c.type_ == "DialingPermissions")?;
                done(&c.reason).then(|| st.sid.clone())?
            })
            .collect();
        if sids.len() == n {
            return sids;
        }
        assert!(Instant::now() < deadline, "{} of {n} settled", sids.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn operations(emu: &Emulator) -> BTreeMap<String, u64> {
    let state: Value = emu.state().await;
    state["received"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

async fn received(emu: &Emulator) -> u64 {
    operations(emu).await.values().sum()
}
