//! Tenancy, tried as a tenant would: each attack runs through an impersonated ServiceAccount
//! that holds exactly the built-in `edit` role with the chart's Twilio rules aggregated into it,
//! in its own namespace, against the real control plane, the operator and the emulator.

mod support;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use support::emulator::Emulator;
use support::operator::{Operator, wait_for, wait_gone};
use support::{ControlPlane, cluster};
use twilio_operator::api::{TwilioApiKey, TwilioSubaccount};
use twilio_operator::conditions::is_ready;
use twilio_operator::twilio::Credentials;

const WAIT: Duration = Duration::from_secs(60);

/// Two teams and one operator: the victim's objects are made by an admin, the attacker's by a
/// namespace editor.
struct World {
    cp: &'static ControlPlane,
    emu: Emulator,
    operator: Operator,
    victim: String,
    attacker: String,
    tenant: Client,
}

impl World {
    async fn new(prefix: &str, attacker_admitted: bool) -> Self {
        Self::with_env(prefix, attacker_admitted, &[]).await
    }

    /// As [`World::new`], with the operator started with extra environment.
    async fn with_env(prefix: &str, attacker_admitted: bool, env: &[(&str, &str)]) -> Self {
        let cp = cluster();
        let victim = cp.tenant_namespace(&format!("{prefix}-v")).await;
        let attacker = if attacker_admitted {
            cp.tenant_namespace(&format!("{prefix}-a")).await
        } else {
            cp.namespace(&format!("{prefix}-a")).await
        };
        let emu = Emulator::start(&[]);
        let operator = Operator::start(cp, &emu, &format!("{victim},{attacker}"), env);
        let tenant = cp.tenant(&attacker).await;
        Self {
            cp,
            emu,
            operator,
            victim,
            attacker,
            tenant,
        }
    }

    fn admin<K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        &self,
    ) -> Api<K> {
        Api::namespaced(self.cp.admin(), &self.victim)
    }

    fn tenant<K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        &self,
    ) -> Api<K> {
        Api::namespaced(self.tenant.clone(), &self.attacker)
    }

    /// The victim's subaccount, Ready, with its Secret: `(sid, auth token)`.
    async fn victim_subaccount(&self) -> (String, String) {
        create(&self.admin::<TwilioSubaccount>(), json!({"kind": "TwilioSubaccount", "metadata": {"name": "team"}, "spec": {"secret": {"name": "team-twilio"}}})).await;
        let sub: TwilioSubaccount = wait_for(&self.admin(), "team", WAIT, "Ready", ready_sub).await;
        let sid = sub.status.unwrap().sid.unwrap();
        let secret: Secret = self.admin().get("team-twilio").await.unwrap();
        let token = String::from_utf8(secret.data.unwrap()["TWILIO_AUTH_TOKEN"].0.clone()).unwrap();
        // What happens from here on is the attacker's doing.
        self.emu.reset_stats().await;
        (sid, token)
    }

    /// Whether `token` still authenticates as subaccount `sid`.
    async fn token_works(&self, sid: &str, token: &str) -> bool {
        let creds = Credentials::with_auth_token(sid, SecretString::from(token.to_owned())).unwrap();
        self.emu.client().fetch_account(&creds, sid).await.is_ok()
    }

    /// The subaccount's status at Twilio.
    async fn status_at_twilio(&self, sid: &str) -> String {
        status_at_twilio(&self.emu, sid).await
    }

    /// How many requests of `operation` reached Twilio.
    async fn received(&self, operation: &str) -> u64 {
        self.emu.state().await["received"][operation]
            .as_u64()
            .unwrap_or(0)
    }
}

/// Subaccount `sid`'s status at the emulated Twilio; empty when it has none.
async fn status_at_twilio(emu: &Emulator, sid: &str) -> String {
    let state = emu.state().await;
    let account = state["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["sid"] == sid)
        .cloned();
    account
        .map(|a| a["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

async fn create<K: Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug>(
    api: &Api<K>,
    object: Value,
) -> K {
    let mut object = object;
    object["apiVersion"] = json!("twilio.operator.dev/v1alpha1");
    let typed: K = serde_json::from_value(object).expect("a valid object");
    api.create(&PostParams::default(), &typed).await.expect("create")
}

fn ready_sub(s: &TwilioSubaccount) -> bool {
    s.status.as_ref().is_some_and(|st| is_ready(&st.conditions))
}

fn ready_key(k: &TwilioApiKey) -> bool {
    k.status
        .as_ref()
        .is_some_and(|st| is_ready(&st.conditions) && st.key_sid.is_some())
}

/// Waits until `name`'s Ready condition has `reason`, and returns its message.
async fn reason<K>(api: &Api<K>, name: &str, reason: &str) -> String
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug + Send + 'static,
{
    let found = wait_for(api, name, WAIT, reason, |o: &K| {
        ready_of(o).is_some_and(|(r, _)| r == reason)
    })
    .await;
    ready_of(&found).unwrap().1
}

/// The Ready condition's reason and message, for either kind.
fn ready_of<K: serde::Serialize>(obj: &K) -> Option<(String, String)> {
    let value = serde_json::to_value(obj).ok()?;
    let conditions = value["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some((
        ready["reason"].as_str()?.to_owned(),
        ready["message"].as_str()?.to_owned(),
    ))
}

/// Adopting another team's subaccount to publish its token is refused before any Twilio call.
#[tokio::test]
async fn a_tenant_cannot_steal_a_foreign_subaccount_token() {
    let w = World::new("steal", true).await;
    let (sid, token) = w.victim_subaccount().await;
    let spec = json!({"sid": sid, "secret": {"name": "loot"}});
    create(
        &w.tenant::<TwilioSubaccount>(),
        json!({"kind": "TwilioSubaccount", "metadata": {"name": "grab"}, "spec": spec}),
    )
    .await;
    let message = reason(&w.tenant::<TwilioSubaccount>(), "grab", "NotPermitted").await;
    assert!(
        message.contains("TwilioAccount default") && message.contains("adopt"),
        "{message}"
    );
    assert!(
        w.tenant::<Secret>().get_opt("loot").await.unwrap().is_none(),
        "no token was published"
    );
    assert!(w.token_works(&sid, &token).await);
}

/// Suspending another team's subaccount through adoption is refused.
#[tokio::test]
async fn a_tenant_cannot_suspend_a_foreign_subaccount() {
    let w = World::new("suspend", true).await;
    let (sid, _) = w.victim_subaccount().await;
    create(&w.tenant::<TwilioSubaccount>(), json!({"kind": "TwilioSubaccount", "metadata": {"name": "grab"}, "spec": {"sid": sid, "state": "Suspended"}})).await;
    reason(&w.tenant::<TwilioSubaccount>(), "grab", "NotPermitted").await;
    assert_eq!(w.received("api.UpdateAccount").await, 0);
    assert_eq!(w.status_at_twilio(&sid).await, "active");
}

/// Rotating another team's auth token through adoption is refused.
#[tokio::test]
async fn a_tenant_cannot_rotate_a_foreign_auth_token() {
    let w = World::new("rotate", true).await;
    let (sid, token) = w.victim_subaccount().await;
    let spec = json!({"sid": sid, "secret": {"name": "loot"}, "authTokenRotation": {"every": "24h", "gracePeriod": "1s"}});
    create(
        &w.tenant::<TwilioSubaccount>(),
        json!({"kind": "TwilioSubaccount", "metadata": {"name": "grab"}, "spec": spec}),
    )
    .await;
    reason(&w.tenant::<TwilioSubaccount>(), "grab", "NotPermitted").await;
    assert_eq!(w.received("accounts.CreateSecondaryAuthToken").await, 0);
    assert!(
        w.token_works(&sid, &token).await,
        "the victim's token still works"
    );
}

/// Deleting an adopting object with deletionPolicy Close never closes another team's
/// subaccount, with the account's credentials or through a credentialsRef that does not exist.
#[tokio::test]
async fn a_tenant_cannot_close_a_foreign_subaccount() {
    let w = World::new("close", true).await;
    let (sid, _) = w.victim_subaccount().await;
    let subs = w.tenant::<TwilioSubaccount>();
    create(&subs, json!({"kind": "TwilioSubaccount", "metadata": {"name": "grab"}, "spec": {"sid": sid, "deletionPolicy": "Close"}})).await;
    reason(&subs, "grab", "NotPermitted").await;
    let missing = json!({"sid": sid, "deletionPolicy": "Close", "credentialsRef": {"name": "absent"}});
    create(
        &subs,
        json!({"kind": "TwilioSubaccount", "metadata": {"name": "ghost"}, "spec": missing}),
    )
    .await;
    reason(&subs, "ghost", "CredentialsMissing").await;
    for name in ["grab", "ghost"] {
        subs.delete(name, &DeleteParams::default()).await.unwrap();
        wait_gone(&subs, name, WAIT).await;
    }
    assert_eq!(w.received("api.UpdateAccount").await, 0);
    assert_eq!(
        w.status_at_twilio(&sid).await,
        "active",
        "the victim's subaccount is still open"
    );
}

/// A namespace the account does not admit mints nothing: no key, no subaccount, no Twilio call.
#[tokio::test]
async fn a_namespace_that_is_not_admitted_mints_nothing() {
    let w = World::new("mint", false).await;
    create(
        &w.tenant::<TwilioApiKey>(),
        json!({"kind": "TwilioApiKey", "metadata": {"name": "free"}, "spec": {}}),
    )
    .await;
    let message = reason(&w.tenant::<TwilioApiKey>(), "free", "NotPermitted").await;
    assert!(
        message.contains("TwilioAccount default") && message.contains(&w.attacker),
        "{message}"
    );
    create(
        &w.tenant::<TwilioSubaccount>(),
        json!({"kind": "TwilioSubaccount", "metadata": {"name": "free"}, "spec": {}}),
    )
    .await;
    reason(&w.tenant::<TwilioSubaccount>(), "free", "NotPermitted").await;
    let state = w.emu.state().await;
    assert!(state["keys"].as_array().unwrap().is_empty(), "no key was minted");
    assert_eq!(
        w.received("api.CreateNewKey").await + w.received("api.CreateAccount").await,
        0
    );
}

/// A key Secret edited to name another team's key (with a matching digest) is a claim the
/// operator checks at Twilio: the foreign key is never adopted, rotated away or revoked.
#[tokio::test]
async fn forged_secret_annotations_never_reach_a_foreign_key() {
    let w = World::new("forge", true).await;
    create(
        &w.admin::<TwilioApiKey>(),
        json!({"kind": "TwilioApiKey", "metadata": {"name": "v"}, "spec": {}}),
    )
    .await;
    let victim = wait_for(&w.admin::<TwilioApiKey>(), "v", WAIT, "Ready", ready_key).await;
    let victim_sid = victim.status.unwrap().key_sid.unwrap();

    let keys = w.tenant::<TwilioApiKey>();
    create(
        &keys,
        json!({"kind": "TwilioApiKey", "metadata": {"name": "a"}, "spec": {}}),
    )
    .await;
    let mine = wait_for(&keys, "a", WAIT, "Ready", ready_key)
        .await
        .status
        .unwrap()
        .key_sid
        .unwrap();
    let forged_secret = "forged-secret-value";
    let digest: String = Sha256::digest(forged_secret.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let forgery = json!({
        "metadata": {"annotations": {"twilio.operator.dev/credential-sid": victim_sid, "twilio.operator.dev/secret-digest": digest}},
        "stringData": {"TWILIO_API_KEY": victim_sid, "TWILIO_API_SECRET": forged_secret},
    });
    w.tenant::<Secret>()
        .patch("a", &PatchParams::default(), &Patch::Merge(&forgery))
        .await
        .expect("an editor may edit its Secret");
    let rotate = json!({"metadata": {"annotations": {"twilio.operator.dev/rotate": "now"}}});
    keys.patch("a", &PatchParams::default(), &Patch::Merge(&rotate))
        .await
        .unwrap();
    let after = wait_for(&keys, "a", WAIT, "reissued", |k: &TwilioApiKey| {
        ready_key(k) && k.status.as_ref().unwrap().key_sid.as_deref() != Some(mine.as_str())
    })
    .await;
    assert_ne!(
        after.status.unwrap().key_sid.as_deref(),
        Some(victim_sid.as_str()),
        "never adopted"
    );
    keys.delete("a", &DeleteParams::default()).await.unwrap();
    wait_gone(&keys, "a", WAIT).await;
    let state = w.emu.state().await;
    assert!(
        state["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["sid"] == victim_sid.as_str()),
        "the victim's key lives"
    );
}

/// Two objects racing for one granted SID: exactly one manages it, the other is SidInUse.
#[tokio::test]
async fn two_objects_racing_for_one_sid_get_one_winner() {
    let w = World::new("race", true).await;
    let made = w
        .emu
        .client()
        .create_account(&w.emu.main_credentials(), Some("contested"))
        .await
        .unwrap();
    let grants = json!([{"sid": made.sid, "namespace": w.attacker}]);
    let policy = json!({"credentials": {"fromEnvironment": true}, "namespaces": {"names": [w.attacker]}, "subaccounts": {"adopt": grants}});
    w.cp.apply_account(&w.attacker, policy).await;
    let subs = w.tenant::<TwilioSubaccount>();
    let spec = json!({"sid": made.sid, "accountRef": {"name": w.attacker}});
    let object = |name: &str| json!({"kind": "TwilioSubaccount", "metadata": {"name": name}, "spec": spec});
    tokio::join!(create(&subs, object("first")), create(&subs, object("second")));
    let settled = |s: &TwilioSubaccount| ready_of(s).is_some_and(|(r, _)| r == "Ready" || r == "SidInUse");
    let first = wait_for(&subs, "first", WAIT, "settled", settled).await;
    let second = wait_for(&subs, "second", WAIT, "settled", settled).await;
    let reasons: Vec<String> = [first, second].iter().map(|s| ready_of(s).unwrap().0).collect();
    assert!(
        reasons.contains(&"Ready".to_owned()) && reasons.contains(&"SidInUse".to_owned()),
        "{reasons:?}"
    );
}

/// An admitted namespace works end to end, and a TwilioAccount or Namespace label edit takes
/// effect without a restart: admit by name, revoke, admit by label.
#[tokio::test]
async fn account_edits_take_effect_without_a_restart() {
    let w = World::new("live", false).await;
    let account = w.attacker.clone();
    let policy =
        |namespaces: Value| json!({"credentials": {"fromEnvironment": true}, "namespaces": namespaces});
    w.cp.apply_account(&account, policy(json!({}))).await;
    let keys = w.tenant::<TwilioApiKey>();
    let spec = json!({"accountRef": {"name": account}, "secret": {"name": "live"}});
    create(
        &keys,
        json!({"kind": "TwilioApiKey", "metadata": {"name": "live"}, "spec": spec}),
    )
    .await;
    reason(&keys, "live", "NotPermitted").await;

    w.cp.apply_account(&account, policy(json!({"names": [w.attacker]})))
        .await;
    wait_for(&keys, "live", WAIT, "Ready once admitted", ready_key).await;
    assert!(
        w.tenant::<Secret>().get_opt("live").await.unwrap().is_some(),
        "the tenant reads its Secret"
    );

    let by_label = policy(json!({"selector": {"matchLabels": {"team": "blue"}}}));
    w.cp.apply_account(&account, by_label).await;
    reason(&keys, "live", "NotPermitted").await;

    let label = json!({"metadata": {"labels": {"team": "blue"}}});
    Api::<Namespace>::all(w.cp.admin())
        .patch(&w.attacker, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    wait_for(&keys, "live", WAIT, "Ready once labelled", |k: &TwilioApiKey| {
        ready_key(k) && ready_of(k).is_some_and(|(r, _)| r == "Ready")
    })
    .await;
    assert_eq!(
        w.emu.state().await["keys"].as_array().unwrap().len(),
        1,
        "one key all along"
    );
    assert!(keys.get("live").await.unwrap().name_any() == "live");
}

/// A tenant's namespace admitted by a TwilioAccount of its own that allows only the Suspend
/// deletionPolicy, with an operator (started with `env`) watching it.
struct SuspendOnly {
    cp: &'static ControlPlane,
    ns: String,
    account: String,
    emu: Emulator,
    _operator: Operator,
    subs: Api<TwilioSubaccount>,
}

impl SuspendOnly {
    async fn new(prefix: &str, env: &[(&str, &str)]) -> Self {
        let cp = cluster();
        let ns = cp.namespace(prefix).await;
        let account = format!("suspend-only-{ns}");
        let policy = json!({
            "credentials": {"fromEnvironment": true},
            "namespaces": {"names": [ns]},
            "subaccounts": {"deletionPolicies": ["Suspend"]},
        });
        cp.apply_account(&account, policy).await;
        let emu = Emulator::start(&[]);
        let operator = Operator::start(cp, &emu, &ns, env);
        let subs = Api::namespaced(cp.tenant(&ns).await, &ns);
        Self {
            cp,
            ns,
            account,
            emu,
            _operator: operator,
            subs,
        }
    }
}

/// With only Suspend allowed, a tenant who switches its subaccount to Retain just before
/// deleting it still gets it suspended, and is told so: the effective policy is the mildest one
/// the account allows.
#[tokio::test]
async fn a_tenant_cannot_retain_a_subaccount_the_account_says_to_suspend() {
    let SuspendOnly {
        cp,
        ns,
        account,
        emu,
        _operator,
        subs,
    } = SuspendOnly::new("retain", &[]).await;
    let spec = json!({"accountRef": {"name": account}, "deletionPolicy": "Suspend"});
    create(
        &subs,
        json!({"kind": "TwilioSubaccount", "metadata": {"name": "team"}, "spec": spec}),
    )
    .await;
    let sub = wait_for(&subs, "team", WAIT, "Ready", ready_sub).await;
    let sid = sub.status.unwrap().sid.unwrap();

    let retain = json!({"spec": {"deletionPolicy": "Retain"}});
    subs.patch("team", &PatchParams::default(), &Patch::Merge(&retain))
        .await
        .unwrap();
    subs.delete("team", &DeleteParams::default()).await.unwrap();
    wait_gone(&subs, "team", WAIT).await;

    assert_eq!(
        status_at_twilio(&emu, &sid).await,
        "suspended",
        "the subaccount is suspended whatever the tenant asked"
    );
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(cp.admin(), &ns);
    let told = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("DeletionPolicyReplaced"))
        .expect("a DeletionPolicyReplaced event");
    assert_eq!(told.type_.as_deref(), Some("Warning"));
    let message = told.message.unwrap_or_default();
    assert!(
        message.contains("Retain") && message.contains("Suspend") && message.contains(&account),
        "{message}"
    );
}

/// A Secret in the tenant's namespace holding credentials that name `sid` with a token Twilio
/// never issued.
async fn bogus_credentials(w: &World, name: &str, sid: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"TWILIO_ACCOUNT_SID": sid, "TWILIO_AUTH_TOKEN": "0123456789abcdef0123456789abcdef"},
    }))
    .unwrap();
    w.tenant::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// Credentials that have not authenticated take no claim: a namespace no account admits cannot
/// block another team's granted adoption by naming its SID with a bogus credentialsRef.
#[tokio::test]
async fn unproven_credentials_take_no_claim() {
    let w = World::new("squat", false).await;
    let main = w.emu.main_credentials();
    let sid = w
        .emu
        .client()
        .create_account(&main, Some("team-b"))
        .await
        .unwrap()
        .sid;
    let account = format!("adopt-{}", w.victim);
    let policy = json!({
        "credentials": {"fromEnvironment": true},
        "namespaces": {"names": [w.victim]},
        "subaccounts": {"adopt": [{"sid": sid, "namespace": w.victim}], "deletionPolicies": ["Retain"]},
    });
    w.cp.apply_account(&account, policy).await;
    bogus_credentials(&w, "fake", main.account_sid()).await;
    let subs = w.tenant::<TwilioSubaccount>();
    let spec = json!({"sid": sid, "credentialsRef": {"name": "fake"}, "deletionPolicy": "Retain"});
    create(
        &subs,
        json!({"kind": "TwilioSubaccount", "metadata": {"name": "squat"}, "spec": spec}),
    )
    .await;
    reason(&subs, "squat", "AuthenticationFailed").await;

    let spec = json!({"sid": sid, "accountRef": {"name": account}, "deletionPolicy": "Retain"});
    create(
        &w.admin::<TwilioSubaccount>(),
        json!({"kind": "TwilioSubaccount", "metadata": {"name": "granted"}, "spec": spec}),
    )
    .await;
    let adopted = wait_for(&w.admin(), "granted", WAIT, "Ready", ready_sub).await;
    assert_eq!(adopted.status.unwrap().sid.as_deref(), Some(sid.as_str()));
}

/// A credentialsRef whose create failed leaves nothing to act on: after the tenant renames its
/// own subaccount to that object's creation name and deletes the object, no subaccount is
/// closed, neither with the tenant's credentials nor with the operator's.
#[tokio::test]
async fn a_failed_create_never_closes_a_subaccount_found_by_name() {
    let w = World::new("rename", false).await;
    let account = format!("suspend-{}", w.attacker);
    let policy = json!({
        "credentials": {"fromEnvironment": true},
        "namespaces": {"names": [w.attacker]},
        "subaccounts": {"deletionPolicies": ["Retain", "Suspend"]},
    });
    w.cp.apply_account(&account, policy).await;
    let subs = w.tenant::<TwilioSubaccount>();
    let spec =
        json!({"accountRef": {"name": account}, "secret": {"name": "mine"}, "deletionPolicy": "Retain"});
    create(
        &subs,
        json!({"kind": "TwilioSubaccount", "metadata": {"name": "mine"}, "spec": spec}),
    )
    .await;
    let mine = wait_for(&subs, "mine", WAIT, "Ready", ready_sub).await;
    let mine_sid = mine.status.unwrap().sid.unwrap();

    bogus_credentials(&w, "fake", w.emu.main_credentials().account_sid()).await;
    let spec = json!({"credentialsRef": {"name": "fake"}, "deletionPolicy": "Close"});
    let decoy = create(
        &subs,
        json!({"kind": "TwilioSubaccount", "metadata": {"name": "decoy"}, "spec": spec}),
    )
    .await;
    reason(&subs, "decoy", "AuthenticationFailed").await;

    // The tenant holds its subaccount's token, so it can rename it at Twilio directly.
    let secret: Secret = w.tenant().get("mine").await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()["TWILIO_AUTH_TOKEN"].0.clone()).unwrap();
    let own = Credentials::with_auth_token(&mine_sid, SecretString::from(token)).unwrap();
    let rename = twilio_operator::twilio::types::AccountUpdate {
        friendly_name: Some(twilio_operator::tagging::creation_name(&decoy.uid().unwrap())),
        status: None,
    };
    w.emu
        .client()
        .update_account(&own, &mine_sid, &rename)
        .await
        .unwrap();
    subs.delete("decoy", &DeleteParams::default()).await.unwrap();
    wait_gone(&subs, "decoy", WAIT).await;
    assert_eq!(w.status_at_twilio(&mine_sid).await, "active");
}

/// A key whose credentialsRef names another team's subaccount with a bogus token fails alone:
/// the victim's budget callbacks are still verified and acted on.
#[tokio::test]
async fn a_bogus_token_for_a_foreign_sid_leaves_its_callbacks_working() {
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let webhook = [
        ("BUDGET_WEBHOOK_URL", url.as_str()),
        ("WEBHOOK_ADDRESS", &url[7..]),
    ];
    let w = World::with_env("callbacks", false, &webhook).await;
    let spec = json!({"secret": {"name": "team-twilio"}, "budget": {"monthly": "10", "action": "Suspend"}});
    create(
        &w.admin::<TwilioSubaccount>(),
        json!({"kind": "TwilioSubaccount", "metadata": {"name": "team"}, "spec": spec}),
    )
    .await;
    let sub: TwilioSubaccount = wait_for(
        &w.admin(),
        "team",
        WAIT,
        "triggers set",
        |s: &TwilioSubaccount| {
            ready_sub(s)
                && s.status
                    .as_ref()
                    .and_then(|st| st.budget.as_ref())
                    .is_some_and(|b| !b.triggers.is_empty())
        },
    )
    .await;
    let sid = sub.status.unwrap().sid.unwrap();

    bogus_credentials(&w, "fake", &sid).await;
    let keys = w.tenant::<TwilioApiKey>();
    create(&keys, json!({"kind": "TwilioApiKey", "metadata": {"name": "probe"}, "spec": {"credentialsRef": {"name": "fake"}, "secret": {"name": "probe"}}})).await;
    reason(&keys, "probe", "AuthenticationFailed").await;

    w.emu.change_account(&sid, json!({"usage_total": 50})).await;
    wait_for(
        &w.admin(),
        "team",
        Duration::from_secs(15),
        "suspended by the budget",
        support::operator::suspended_by_budget,
    )
    .await;
    let answered = w.emu.state().await["callbacks"].clone();
    assert_eq!(answered["503"].as_u64().unwrap_or(0), 0, "{answered}");
    assert_eq!(w.status_at_twilio(&sid).await, "suspended");
}

/// Deleting a key's Secret again and again never leaves more than three live keys for the
/// object: the third reissue waits, and says why in its condition and an event.
#[tokio::test]
async fn deleting_a_keys_secret_again_and_again_leaves_at_most_three_live_keys() {
    let w = World::new("churn", true).await;
    let keys = w.tenant::<TwilioApiKey>();
    let spec = json!({"secret": {"name": "churn"}});
    let key = create(
        &keys,
        json!({"kind": "TwilioApiKey", "metadata": {"name": "churn"}, "spec": spec}),
    )
    .await;
    let mut current = wait_for(&keys, "churn", WAIT, "Ready", ready_key).await;
    let secrets = w.tenant::<Secret>();
    for round in 0..6 {
        let before = current.status.as_ref().and_then(|st| st.key_sid.clone());
        secrets.delete("churn", &DeleteParams::default()).await.unwrap();
        current = wait_for(&keys, "churn", WAIT, "reissued or held", |k: &TwilioApiKey| {
            let reissued = ready_key(k) && k.status.as_ref().and_then(|st| st.key_sid.clone()) != before;
            reissued || ready_of(k).is_some_and(|(r, _)| r == "QuotaExceeded")
        })
        .await;
        if ready_of(&current).is_some_and(|(r, _)| r == "QuotaExceeded") {
            assert_eq!(round, 2, "two reissues fit: the published key and two retiring");
            break;
        }
    }
    let (_, message) = ready_of(&current).unwrap();
    assert!(
        message.contains("3 keys") && message.contains("waits"),
        "{message}"
    );
    let tag = twilio_operator::tagging::tag(&key.uid().unwrap());
    let live = w.emu.state().await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["friendly_name"].as_str().is_some_and(|n| n.ends_with(&tag)))
        .count();
    assert_eq!(live, 3);
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(w.cp.admin(), &w.attacker);
    let told = events.list(&Default::default()).await.unwrap().items;
    assert!(
        told.iter().any(|e| e.reason.as_deref() == Some("QuotaExceeded")),
        "{told:?}"
    );
}

/// One namespace cannot take what the account's tenants share: past maxPerNamespace an object
/// gets QuotaExceeded before any Twilio call, and proceeds once an older one goes.
#[tokio::test]
async fn a_namespace_gets_no_more_keys_or_subaccounts_than_its_quota() {
    let w = World::new("quota", false).await;
    let account = format!("quota-{}", w.attacker);
    let policy = json!({
        "credentials": {"fromEnvironment": true},
        "namespaces": {"names": [w.attacker]},
        "apiKeys": {"maxPerNamespace": 2},
        "subaccounts": {"maxPerNamespace": 1},
    });
    w.cp.apply_account(&account, policy).await;
    let keys = w.tenant::<TwilioApiKey>();
    // Objects count in creation order; within one second (what creationTimestamp keeps), by name.
    for name in ["k1", "k2", "k3"] {
        // Retain would let a namespace create, retain and delete its way past the limit.
        let spec = json!({"accountRef": {"name": account}, "deletionPolicy": "Retain"});
        create(
            &keys,
            json!({"kind": "TwilioApiKey", "metadata": {"name": name}, "spec": spec}),
        )
        .await;
    }
    let first = wait_for(&keys, "k1", WAIT, "Ready", ready_key).await;
    let first_sid = first.status.unwrap().key_sid.unwrap();
    wait_for(&keys, "k2", WAIT, "Ready", ready_key).await;
    let message = reason(&keys, "k3", "QuotaExceeded").await;
    assert!(
        message.contains(&account)
            && message.contains("spec.apiKeys.maxPerNamespace")
            && message.contains('2'),
        "{message}"
    );
    assert_eq!(
        w.received("api.CreateNewKey").await,
        2,
        "no Twilio call for the third"
    );

    let subs = w.tenant::<TwilioSubaccount>();
    for name in ["s1", "s2"] {
        let spec = json!({"accountRef": {"name": account}});
        create(
            &subs,
            json!({"kind": "TwilioSubaccount", "metadata": {"name": name}, "spec": spec}),
        )
        .await;
    }
    wait_for(&subs, "s1", WAIT, "Ready", ready_sub).await;
    let message = reason(&subs, "s2", "QuotaExceeded").await;
    assert!(message.contains("spec.subaccounts.maxPerNamespace"), "{message}");
    assert_eq!(w.received("api.CreateAccount").await, 1);

    // A place freed is taken by the first one waiting, without waiting out a backoff.
    keys.delete("k1", &DeleteParams::default()).await.unwrap();
    wait_for(&keys, "k3", Duration::from_secs(15), "Ready", ready_key).await;
    wait_gone(&keys, "k1", WAIT).await;
    assert!(
        !w.emu.key_sids().await.contains(&first_sid),
        "a deleted key under a limit is revoked, Retain or not"
    );
    subs.delete("s1", &DeleteParams::default()).await.unwrap();
    wait_for(&subs, "s2", Duration::from_secs(15), "Ready", ready_sub).await;
}

/// Hiding a subaccount from the operator does not escape its policy: an editor may neither
/// strip the finalizer nor move it out of its shard, and deleting it while its passes back off
/// still gets the policy applied once Twilio answers again.
#[tokio::test]
async fn hiding_a_subaccount_does_not_escape_its_deletion_policy() {
    let shard = [("WATCH_LABEL_SELECTOR", "twilio.operator.dev/shard=a")];
    let SuspendOnly {
        ns: _,
        account,
        emu,
        _operator,
        subs,
        ..
    } = SuspendOnly::new("hide", &shard).await;
    let labels = json!({"twilio.operator.dev/shard": "a"});
    let spec = json!({"accountRef": {"name": account}, "deletionPolicy": "Suspend", "budget": {"monthly": "10", "action": "Suspend"}});
    create(
        &subs,
        json!({"kind": "TwilioSubaccount", "metadata": {"name": "team", "labels": labels}, "spec": spec}),
    )
    .await;
    let sub = wait_for(&subs, "team", WAIT, "Ready", ready_sub).await;
    let sid = sub.status.unwrap().sid.unwrap();

    let refused = |patch: Value| {
        let subs = subs.clone();
        async move {
            match subs
                .patch("team", &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
                other => panic!("{patch} was accepted: {other:?}"),
            }
        }
    };
    refused(json!({"metadata": {"finalizers": null}})).await;
    refused(json!({"metadata": {"labels": {"twilio.operator.dev/shard": "elsewhere"}}})).await;
    refused(json!({"metadata": {"labels": {"twilio.operator.dev/shard": null}}})).await;
    refused(json!({"metadata": {"labels": {"twilio.operator.dev/other": "x"}}})).await;
    let hoard: Vec<String> = std::iter::once(twilio_operator::FINALIZER.to_owned())
        .chain((0..8).map(|i| format!("example.com/f{i}")))
        .collect();
    refused(json!({"metadata": {"finalizers": hoard}})).await;
    let other = json!({"metadata": {"labels": {"team": "blue"}}});
    subs.patch("team", &PatchParams::default(), &Patch::Merge(&other))
        .await
        .expect("other labels stay the tenant's");

    // Twilio fails every call: the deletion backs off, then goes on once Twilio answers.
    emu.configure(json!({"knobs": {"fault_5xx": 1.0}})).await;
    subs.delete("team", &DeleteParams::default()).await.unwrap();
    reason(&subs, "team", "Revoking").await;
    refused(json!({"metadata": {"finalizers": null}})).await;
    emu.configure(json!({"knobs": {"fault_5xx": 0.0}})).await;
    wait_gone(&subs, "team", Duration::from_secs(120)).await;
    assert_eq!(status_at_twilio(&emu, &sid).await, "suspended");
}

/// A pod in a tenant namespace reads no metrics (they name every namespace's spend), and cannot
/// starve the operator by holding its metrics and usage-trigger ports open.
#[tokio::test]
async fn a_tenant_pod_reads_no_metrics_and_cannot_starve_the_operator() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let webhook = [
        ("BUDGET_WEBHOOK_URL", url.as_str()),
        ("WEBHOOK_ADDRESS", &url[7..]),
    ];
    let w = World::with_env("scrape", true, &webhook).await;
    w.victim_subaccount().await;

    assert_eq!(w.operator.scrape(None).await.status(), 401);
    assert_eq!(w.operator.scrape(Some("not-a-token")).await.status(), 401);
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(w.cp.admin(), &w.attacker);
    let account = serde_json::from_value(json!({"metadata": {"name": "tenant"}})).unwrap();
    accounts.create(&PostParams::default(), &account).await.unwrap();
    let token = accounts
        .create_token_request("tenant", &PostParams::default(), &Default::default())
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    let refused = w.operator.scrape(Some(&token)).await;
    assert_eq!(refused.status(), 403);
    assert!(!refused.text().await.unwrap().contains(&w.victim));
    assert!(
        w.operator.metrics().await.contains(&w.victim),
        "the admin reads them"
    );

    // Hundreds of connections that never finish their headers, on both ports.
    let metrics_address = w.operator.metrics_url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for address in [metrics_address.as_str(), &url[7..]] {
        for _ in 0..300 {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let _ = stream
                .write_all(b"POST /usage-triggers/x/y HTTP/1.1\r\nHost: x\r\n")
                .await;
            held.push(stream);
        }
    }
    // The operator goes on meanwhile.
    let keys = w.tenant::<TwilioApiKey>();
    create(
        &keys,
        json!({"kind": "TwilioApiKey", "metadata": {"name": "meanwhile"}, "spec": {}}),
    )
    .await;
    wait_for(&keys, "meanwhile", WAIT, "Ready", ready_key).await;
    // Each port serves 64 at a time and lets each go when its headers time out; the others
    // wait their turn, so all are let go within a few rounds of the header timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for stream in &mut held {
        let mut byte = [0u8; 1];
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let closed = tokio::time::timeout(left, stream.read(&mut byte)).await;
        // Closed, or answered before closing: either way the server let go of it.
        assert!(
            closed.is_ok(),
            "a slow connection was held past the header timeout"
        );
    }
    assert_eq!(
        w.operator
            .scrape(Some(twilio_sandbox::cluster::ADMIN_TOKEN))
            .await
            .status(),
        200
    );
}

/// A namespace no account admits cannot grow the operator's memory with large objects: the CRD
/// caps a template at 4096 characters in all, and annotations beyond those a pass reads are
/// cached as a digest. Thirty objects at the caps, each with 200 KiB of annotations, cost the
/// operator little (30 objects with 512 KiB templates used to cost it 24 MiB).
#[tokio::test]
async fn large_objects_from_a_namespace_no_account_admits_cost_little() {
    let w = World::new("bulk", false).await;
    let keys = w.tenant::<TwilioApiKey>();
    let huge = json!({"secret": {"template": {"data": {"a": "x".repeat(3000), "b": "x".repeat(3000)}}}});
    let refused = keys
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey", "metadata": {"name": "huge"}, "spec": huge})).unwrap(),
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains("4096 characters in all")),
        "{refused:?}"
    );

    create(
        &keys,
        json!({"kind": "TwilioApiKey", "metadata": {"name": "first"}, "spec": {}}),
    )
    .await;
    reason(&keys, "first", "NotPermitted").await;
    let before = w.operator.memory_kib().total;
    let bulk = "b".repeat(200 * 1024);
    let template = format!("{{{{ apiKey }}}}{}", "t".repeat(4000));
    for i in 0..30 {
        let spec = json!({"secret": {"template": {"data": {"config": template}}}});
        let metadata = json!({"name": format!("bulk-{i}"), "annotations": {"example.com/bulk": bulk}});
        create(
            &keys,
            json!({"kind": "TwilioApiKey", "metadata": metadata, "spec": spec}),
        )
        .await;
    }
    for i in 0..30 {
        reason(&keys, &format!("bulk-{i}"), "NotPermitted").await;
    }
    // Decoding each object briefly holds its annotations: the allocator hands those pages back
    // within seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let grown_kib = w.operator.memory_kib().total.saturating_sub(before);
        if grown_kib < 8 * 1024 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator grew by {grown_kib} KiB"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The README's ResourceQuota, applied as it says, caps a namespace's objects at creation.
#[tokio::test]
async fn the_readme_resource_quota_caps_a_namespace_at_creation() {
    let w = World::new("quota-count", false).await;
    let file = support::repo_root().join("examples/resourcequota.yaml");
    w.cp.run_tool(
        "kubectl",
        &["-n", &w.attacker, "apply", "-f", file.to_str().unwrap()],
    );
    // Admission enforces a quota once the quota controller has counted the namespace.
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> = Api::namespaced(w.cp.admin(), &w.attacker);
    wait_for(
        &quotas,
        "twilio",
        WAIT,
        "counted",
        |q: &k8s_openapi::api::core::v1::ResourceQuota| {
            q.status
                .as_ref()
                .and_then(|st| st.used.as_ref())
                .is_some_and(|used| used.contains_key("count/twiliosubaccounts.twilio.operator.dev"))
        },
    )
    .await;
    let subs = w.tenant::<TwilioSubaccount>();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut made = 0;
    loop {
        let object = json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount", "metadata": {"name": format!("s{made}")}, "spec": {}});
        match subs
            .create(&PostParams::default(), &serde_json::from_value(object).unwrap())
            .await
        {
            Ok(_) => made += 1,
            Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("exceeded quota") => break,
            // The quota controller has not counted the namespace yet.
            Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("status unknown") => {}
            Err(e) => panic!("{e:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refused after {made}"
        );
        assert!(made <= 5, "a sixth subaccount was admitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(made, 5);
}
