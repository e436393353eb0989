//! Fraud guardrails end to end: voice dialing geo permissions declared on TwilioSubaccounts and
//! bounded by the TwilioAccount policy, and the account's balance, with the operator process
//! against the real control plane and the emulator. Twilio is read back with the subaccount's
//! own token, as anybody holding it would; refusals are tried as an impersonated tenant.

mod support;

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use support::cluster;
use support::emulator::Emulator;
use support::fixture::{Fixture, WAIT};
use support::operator::{Operator, sample, wait_for};
use twilio_operator::api::{TwilioAccount, TwilioSubaccount};
use twilio_operator::conditions::is_ready;
use twilio_operator::twilio::Credentials;
use twilio_operator::twilio::types::DialingCountry;

const BULK: &str = "voice.CreateDialingPermissionsCountryBulkUpdate";
const SETTINGS: &str = "voice.UpdateDialingPermissionsSettings";
const LIST: &str = "voice.ListDialingPermissionsCountry";

/// The DialingPermissions condition's status and reason.
fn dialing(s: &TwilioSubaccount) -> Option<(String, String)> {
    let st = s.status.as_ref()?;
    let c = st.conditions.iter().find(|c| c.type_ == "DialingPermissions")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Waits until `name` has judged its current generation and its DialingPermissions condition
/// has `reason`.
async fn dialing_reason(subs: &Api<TwilioSubaccount>, name: &str, reason: &str) -> TwilioSubaccount {
    wait_for(subs, name, WAIT, reason, |s: &TwilioSubaccount| {
        let judged = s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation;
        judged && dialing(s).is_some_and(|(_, r)| r == reason)
    })
    .await
}

/// The subaccount's own credentials, as Twilio hands them to its parent.
async fn own_credentials(emu: &Emulator, sid: &str) -> Credentials {
    let account = emu
        .client()
        .fetch_account(&emu.main_credentials(), sid)
        .await
        .expect("fetch the subaccount");
    let token = account.auth_token.expect("a subaccount's token");
    Credentials::with_auth_token(sid, token).expect("credentials")
}

/// What subaccount `sid` may dial at Twilio: whether it inherits, and each enabled country's
/// flags as (low, special, toll fraud).
async fn at_twilio(emu: &Emulator, sid: &str) -> (bool, BTreeMap<String, (bool, bool, bool)>) {
    let creds = own_credentials(emu, sid).await;
    let client = emu.client();
    let inherit = client.fetch_dialing_settings(&creds).await.expect("settings");
    let countries = client.list_dialing_countries(&creds).await.expect("countries");
    let enabled = countries
        .into_iter()
        .map(|c| {
            let flags = (
                c.low_risk_numbers_enabled,
                c.high_risk_special_numbers_enabled,
                c.high_risk_tollfraud_numbers_enabled,
            );
            (c.iso_code, flags)
        })
        .filter(|(_, (a, b, c))| *a || *b || *c)
        .collect();
    (inherit.dialing_permissions_inheritance, enabled)
}

/// Enables every range in Cuba for subaccount `sid` with its own token, as anybody holding it
/// could; returns those credentials.
async fn widen_to_cuba(emu: &Emulator, sid: &str) -> Credentials {
    let thief = own_credentials(emu, sid).await;
    let widen = DialingCountry {
        iso_code: "CU".into(),
        low_risk_numbers_enabled: true,
        high_risk_special_numbers_enabled: true,
        high_risk_tollfraud_numbers_enabled: true,
    };
    emu.client()
        .update_dialing_countries(&thief, &[widen])
        .await
        .expect("widen at Twilio");
    thief
}

fn low(codes: &[&str]) -> BTreeMap<String, (bool, bool, bool)> {
    codes
        .iter()
        .map(|c| ((*c).to_owned(), (true, false, false)))
        .collect()
}

fn sid_of(s: &TwilioSubaccount) -> String {
    s.status.as_ref().and_then(|st| st.sid.clone()).expect("a SID")
}

async fn set_spec(subs: &Api<TwilioSubaccount>, name: &str, voice: Value) {
    subs.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"voice": voice}})),
    )
    .await
    .expect("edit spec.voice");
}

/// Declared permissions hold at Twilio exactly, every country not listed disabled; a spec change
/// writes only the country that changed; a restart with nothing different writes nothing.
#[tokio::test]
async fn declared_permissions_match_twilio_and_a_restart_writes_nothing() {
    let mut f = Fixture::new("voice-match", &[]).await;
    let voice = json!({"dialingPermissions": {"countries": [{"isoCode": "US"}, {"isoCode": "CA"}, {"isoCode": "GB"}]}});
    f.create_subaccount("calls", json!({"voice": voice})).await;
    let sub = dialing_reason(&f.subaccounts(), "calls", "Matched").await;
    let sid = sid_of(&sub);
    assert_eq!(at_twilio(&f.emu, &sid).await, (false, low(&["CA", "GB", "US"])));
    let voice_status = sub
        .status
        .as_ref()
        .and_then(|st| st.voice.clone())
        .expect("status.voice");
    assert_eq!((voice_status.inherit, voice_status.countries_enabled), (false, 3));
    assert!(voice_status.high_risk.is_empty());
    assert!(is_ready(&sub.status.as_ref().unwrap().conditions));
    let applied = f.wait_event("calls", "DialingPermissionsApplied").await;
    assert!(applied.contains("GB enabled"), "{applied}");
    assert_eq!(
        (f.emu.calls(BULK).await, f.emu.calls(SETTINGS).await),
        (1, 1),
        "leaving inheritance is one bulk update of every country, then the setting"
    );

    set_spec(
        &f.subaccounts(),
        "calls",
        json!({"dialingPermissions": {"countries": [{"isoCode": "US"}, {"isoCode": "CA"}]}}),
    )
    .await;
    wait_for(
        &f.subaccounts(),
        "calls",
        WAIT,
        "down to two countries",
        |s: &TwilioSubaccount| {
            s.status
                .as_ref()
                .and_then(|st| st.voice.as_ref())
                .is_some_and(|v| v.countries_enabled == 2)
        },
    )
    .await;
    assert_eq!(at_twilio(&f.emu, &sid).await, (false, low(&["CA", "US"])));
    let writes: Vec<Value> = f
        .emu
        .requests()
        .await
        .into_iter()
        .filter(|r| r["operation"] == BULK)
        .collect();
    assert_eq!(writes.len(), 2, "one more bulk update: {writes:?}");

    f.emu.reset_stats().await;
    f.restart_operator(&[]);
    f.emu
        .wait_calls(LIST, 1, "the restarted operator reads the permissions")
        .await;
    let sub = dialing_reason(&f.subaccounts(), "calls", "Matched").await;
    assert!(is_ready(&sub.status.unwrap().conditions));
    assert_eq!(
        (f.emu.calls(BULK).await, f.emu.calls(SETTINGS).await),
        (0, 0),
        "nothing differs, so nothing is written"
    );
    f.emu.assert_contract_clean().await;
}

/// Somebody holding the subaccount's token widens its permissions at Twilio: the operator puts
/// them back within a resync interval, says which countries it changed, and counts it.
#[tokio::test]
async fn drift_at_twilio_is_repaired_and_announced() {
    let mut f = Fixture::new("voice-drift", &[]).await;
    f.restart_operator(&[("RESYNC_INTERVAL", "2s")]);
    let voice = json!({"dialingPermissions": {"countries": [{"isoCode": "US"}]}});
    f.create_subaccount("calls", json!({"voice": voice})).await;
    let sid = sid_of(&dialing_reason(&f.subaccounts(), "calls", "Matched").await);

    let thief = widen_to_cuba(&f.emu, &sid).await;
    let said = f.wait_event("calls", "DialingPermissionsRepaired").await;
    assert!(said.contains("CU") && said.contains(&sid), "{said}");
    assert_eq!(at_twilio(&f.emu, &sid).await, (false, low(&["US"])));

    f.emu
        .client()
        .update_dialing_settings(&thief, true)
        .await
        .expect("inherit at Twilio");
    let deadline = tokio::time::Instant::now() + WAIT;
    while at_twilio(&f.emu, &sid).await != (false, low(&["US"])) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "inheritance never turned off again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = f.operator.as_ref().unwrap().metrics().await;
    let ns = f.ns.clone();
    let series = format!(
        r#"twilio_operator_subaccount_dialing_permission_repairs_total{{namespace="{ns}",name="calls"}}"#
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut repairs = sample(&metrics, &series);
    while repairs < Some(2.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "repairs counted: {repairs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        repairs = sample(&f.operator.as_ref().unwrap().metrics().await, &series);
    }
    let countries =
        format!(r#"twilio_operator_subaccount_voice_countries_enabled{{namespace="{ns}",name="calls"}}"#);
    assert_eq!(sample(&metrics, &countries), Some(1.0));
    f.restart_operator(&[]);
}

/// A tenant's TwilioAccount and namespace: the account allows `voice`, the namespace's editor
/// acts through the chart's `edit` rules.
struct Tenant {
    emu: Emulator,
    _operator: Operator,
    account: String,
    subs: Api<TwilioSubaccount>,
}

impl Tenant {
    async fn new(prefix: &str, voice: Value) -> Self {
        Self::with_env(prefix, voice, &[]).await
    }

    /// As [`Tenant::new`], with the operator started with extra environment.
    async fn with_env(prefix: &str, voice: Value, env: &[(&str, &str)]) -> Self {
        let cp = cluster();
        let ns = cp.namespace(prefix).await;
        let account = format!("voice-{ns}");
        cp.apply_account(&account, policy(&ns, voice)).await;
        let emu = Emulator::start(&[]);
        let operator = Operator::start(cp, &emu, &ns, env);
        let subs = Api::namespaced(cp.tenant(&ns).await, &ns);
        Self {
            emu,
            _operator: operator,
            account,
            subs,
        }
    }

    async fn create(&self, name: &str, voice: Option<Value>) {
        let mut spec = json!({"accountRef": {"name": self.account}});
        if let Some(voice) = voice {
            spec["voice"] = voice;
        }
        let sub: TwilioSubaccount = serde_json::from_value(json!({
            "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount",
            "metadata": {"name": name}, "spec": spec,
        }))
        .expect("a TwilioSubaccount");
        self.subs
            .create(&PostParams::default(), &sub)
            .await
            .expect("the tenant creates it");
    }

    /// Waits until `name` is NotPermitted, and returns the Ready message.
    async fn refused(&self, name: &str) -> String {
        let sub = wait_for(&self.subs, name, WAIT, "NotPermitted", |s: &TwilioSubaccount| {
            ready(s).is_some_and(|(r, _)| r == "NotPermitted")
        })
        .await;
        ready(&sub).unwrap().1
    }
}

fn policy(ns: &str, voice: Value) -> Value {
    json!({
        "credentials": {"fromEnvironment": true},
        "namespaces": {"names": [ns]},
        "subaccounts": {"voice": voice},
    })
}

fn ready(s: &TwilioSubaccount) -> Option<(String, String)> {
    let c = s
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.reason.clone(), c.message.clone()))
}

/// Every way a tenant's declaration can break the policy is refused, naming the rule, before
/// any Twilio call: no subaccount is created, no permission read or written.
#[tokio::test]
async fn each_policy_refusal_makes_no_twilio_call() {
    let t = Tenant::new(
        "voice-refuse",
        json!({"countries": ["US", "CA"], "highRisk": "Forbid", "required": true}),
    )
    .await;
    let country = |iso: &str, toll: bool| json!({"dialingPermissions": {"countries": [{"isoCode": iso, "highRiskTollFraud": toll}]}});
    let cases = [
        ("abroad", Some(country("GB", false)), "dialing GB"),
        ("premium", Some(country("US", true)), "highRisk: Forbid"),
        (
            "inherits",
            Some(json!({"dialingPermissions": {"inherit": true}})),
            "inherit: true",
        ),
        ("silent", None, "spec.subaccounts.voice.required"),
    ];
    for (name, voice, _) in &cases {
        t.create(name, voice.clone()).await;
    }
    for (name, _, rule) in cases {
        let message = t.refused(name).await;
        assert!(
            message.contains(rule) && message.contains(&t.account),
            "{name}: {message}"
        );
    }
    let received = t.emu.state().await["received"].clone();
    let calls: Vec<&String> = received
        .as_object()
        .map(|m| {
            m.keys()
                .filter(|op| !matches!(op.as_str(), "api.FetchAccount" | "api.FetchBalance"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        calls.is_empty(),
        "only the TwilioAccount's own check reached Twilio: {received}"
    );
}

/// An admin narrows the policy after a subaccount was made: Twilio is narrowed to what the
/// policy allows, with a Warning event, and the object says why it is NotPermitted.
#[tokio::test]
async fn a_policy_narrowed_later_narrows_twilio() {
    let t = Tenant::new("voice-narrow", json!({"highRisk": "Allow"})).await;
    let special = json!({"dialingPermissions": {"countries": [
        {"isoCode": "US"}, {"isoCode": "CA"}, {"isoCode": "GB", "highRiskSpecial": true},
    ]}});
    t.create("calls", Some(special)).await;
    let sub = dialing_reason(&t.subs, "calls", "Matched").await;
    let sid = sid_of(&sub);
    assert_eq!(
        sub.status.unwrap().voice.unwrap().high_risk,
        ["GB"],
        "status names the high-risk country"
    );

    let ns = t.subs.namespace().unwrap_or_default().to_owned();
    cluster()
        .apply_account(&t.account, policy(&ns, json!({"countries": ["US", "CA", "FR"]})))
        .await;
    let sub = dialing_reason(&t.subs, "calls", "Narrowed").await;
    let (reason, message) = ready(&sub).unwrap();
    assert_eq!(reason, "NotPermitted", "{message}");
    assert_eq!(at_twilio(&t.emu, &sid).await, (false, low(&["CA", "US"])));
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(cluster().admin(), &ns);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        if let Some(e) = list
            .items
            .iter()
            .find(|e| e.reason.as_deref() == Some("DialingPermissionsNarrowed"))
        {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            let said = e.message.clone().unwrap_or_default();
            assert!(
                said.contains("GB disabled") && said.contains(&t.account),
                "{said}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no DialingPermissionsNarrowed event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Inheriting the parent's permissions, where the policy restricts nothing, and leaving it again.
#[tokio::test]
async fn inheritance_is_kept_as_declared() {
    let t = Tenant::new("voice-inherit", json!({"highRisk": "Allow"})).await;
    t.create(
        "calls",
        Some(json!({"dialingPermissions": {"countries": [{"isoCode": "FR"}]}})),
    )
    .await;
    let sid = sid_of(&dialing_reason(&t.subs, "calls", "Matched").await);
    assert_eq!(at_twilio(&t.emu, &sid).await, (false, low(&["FR"])));

    set_spec(
        &t.subs,
        "calls",
        json!({"dialingPermissions": {"inherit": true, "countries": null}}),
    )
    .await;
    let sub = wait_for(&t.subs, "calls", WAIT, "inheriting", |s: &TwilioSubaccount| {
        s.status
            .as_ref()
            .and_then(|st| st.voice.as_ref())
            .is_some_and(|v| v.inherit)
    })
    .await;
    // The parent's own permissions are the emulator's defaults for a main account.
    assert_eq!(at_twilio(&t.emu, &sid).await, (true, low(&["CA", "US"])));
    assert_eq!(sub.status.unwrap().voice.unwrap().countries_enabled, 2);

    set_spec(
        &t.subs,
        "calls",
        json!({"dialingPermissions": {"inherit": false, "countries": [{"isoCode": "GB"}]}}),
    )
    .await;
    wait_for(
        &t.subs,
        "calls",
        WAIT,
        "on its own again",
        |s: &TwilioSubaccount| {
            s.status
                .as_ref()
                .and_then(|st| st.voice.as_ref())
                .is_some_and(|v| !v.inherit)
        },
    )
    .await;
    assert_eq!(at_twilio(&t.emu, &sid).await, (false, low(&["GB"])));
}

/// The account's balance, read once per account per interval, reaches the TwilioAccount's status
/// and the metric.
#[tokio::test]
async fn the_balance_reaches_status_and_metrics() {
    let cp = cluster();
    let ns = cp.namespace("voice-balance").await;
    let emu = Emulator::start(&[]);
    let main = emu.main_credentials();
    emu.change_account(main.account_sid(), json!({"balance": "12.34"}))
        .await;
    let operator = Operator::start(cp, &emu, &ns, &[]);
    let name = format!("balance-{ns}");
    cp.apply_account(&name, policy(&ns, json!({}))).await;
    let accounts: Api<TwilioAccount> = Api::all(cp.admin());
    // Every test's operator checks every TwilioAccount with its own emulator: this one's says 12.34.
    wait_for(&accounts, &name, WAIT, "with its balance", |a: &TwilioAccount| {
        a.status
            .as_ref()
            .and_then(|st| st.balance.as_ref())
            .is_some_and(|b| b.amount == "12.34" && b.currency == "USD")
    })
    .await;
    let series = format!(r#"twilio_operator_account_balance{{account="{name}"}}"#);
    assert_eq!(sample(&operator.metrics().await, &series), Some(12.34));
    let (balances, checks) = (
        emu.calls("api.FetchBalance").await,
        emu.calls("api.FetchAccount").await,
    );
    assert!(
        (1..=checks).contains(&balances),
        "one balance read per account check, never per object: {balances} reads, {checks} checks"
    );
}

/// A tenant breaks its spec on purpose (a deletionPolicy its account refuses) and widens the
/// permissions at Twilio with the subaccount's token: the refusal does not lift the guardrail,
/// the widening is put back all the same.
#[tokio::test]
async fn a_refused_spec_does_not_lift_the_guardrail() {
    let t = Tenant::with_env("voice-refused", json!({}), &[("RESYNC_INTERVAL", "2s")]).await;
    t.create(
        "calls",
        Some(json!({"dialingPermissions": {"countries": [{"isoCode": "US"}]}})),
    )
    .await;
    let sid = sid_of(&dialing_reason(&t.subs, "calls", "Matched").await);
    t.subs
        .patch(
            "calls",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deletionPolicy": "Close"}})),
        )
        .await
        .expect("the tenant edits its spec");
    let message = t.refused("calls").await;
    assert!(message.contains("deletionPolicy"), "{message}");
    widen_to_cuba(&t.emu, &sid).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while at_twilio(&t.emu, &sid).await != (false, low(&["US"])) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the widening stayed while the spec was refused: {:?}",
            at_twilio(&t.emu, &sid).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
