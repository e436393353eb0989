//! TwilioSubaccount end to end: the operator process against the real control plane and the
//! emulator, driven through the Kubernetes API as a user would.

mod support;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;
use support::emulator::{MAIN_SID, MAIN_TOKEN};
use support::fixture::{Fixture, WAIT};
use support::operator::{wait_for, wait_gone};
use twilio_operator::api::{TwilioSubaccount, TwilioSubaccountStatus};
use twilio_operator::conditions::is_ready;
use twilio_operator::twilio::types::{AccountStatus, AccountUpdate};
use twilio_operator::twilio::{Credentials, ErrorClass};

fn subs(f: &Fixture) -> Api<TwilioSubaccount> {
    f.subaccounts()
}

async fn create(f: &Fixture, name: &str, spec: Value) -> TwilioSubaccount {
    f.create_subaccount(name, spec).await
}

async fn ready_where(
    f: &Fixture,
    name: &str,
    what: &str,
    extra: impl Fn(&TwilioSubaccountStatus) -> bool,
) -> TwilioSubaccountStatus {
    let sub = wait_for(&subs(f), name, WAIT, what, |s: &TwilioSubaccount| {
        s.status.as_ref().is_some_and(|st| {
            is_ready(&st.conditions) && st.observed_generation == s.metadata.generation && extra(st)
        })
    })
    .await;
    sub.status.unwrap()
}

async fn ready(f: &Fixture, name: &str) -> TwilioSubaccountStatus {
    ready_where(f, name, "Ready", |_| true).await
}

async fn reason(f: &Fixture, name: &str, reason: &str) -> String {
    let sub = wait_for(&subs(f), name, WAIT, reason, |s: &TwilioSubaccount| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == reason)
        })
    })
    .await;
    sub.status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message
}

/// Subaccounts of the emulator's main account: `(sid, friendly_name, status)`.
async fn subaccounts(f: &Fixture) -> Vec<(String, String, String)> {
    f.emu.state().await["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["owner_account_sid"] == MAIN_SID)
        .map(|a| {
            (
                a["sid"].as_str().unwrap().to_owned(),
                a["friendly_name"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The token published in `secret`, as a pod would read it.
async fn published_token(f: &Fixture, secret: &str) -> Credentials {
    let secret = f.secrets().get(secret).await.expect("the Secret exists");
    let data = secret.data.unwrap_or_default();
    let get = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    Credentials::with_auth_token(
        get("TWILIO_ACCOUNT_SID"),
        SecretString::from(get("TWILIO_AUTH_TOKEN")),
    )
    .unwrap()
}

async fn token_works(f: &Fixture, creds: &Credentials) -> bool {
    match f.emu.client().fetch_account(creds, creds.account_sid()).await {
        Ok(_) => true,
        Err(e) if e.class() == ErrorClass::Credentials => false,
        Err(e) => panic!("unexpected Twilio error: {e}"),
    }
}

async fn set_status_at_twilio(f: &Fixture, sid: &str, status: AccountStatus) {
    let update = AccountUpdate {
        friendly_name: None,
        status: Some(status),
    };
    f.emu
        .client()
        .update_account(&f.emu.main_credentials(), sid, &update)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_subaccount_is_created_once_named_and_published() {
    let f = Fixture::new("sub-create", &[]).await;
    create(
        &f,
        "team-a",
        json!({"friendlyName": "team-a production", "secret": {"name": "team-a-twilio"}}),
    )
    .await;
    create(&f, "team-b", json!({})).await;
    let a = ready(&f, "team-a").await;
    let b = ready(&f, "team-b").await;
    let sid = a.sid.clone().unwrap();
    assert_eq!(a.owner_account_sid.as_deref(), Some(MAIN_SID));
    assert_eq!(a.friendly_name.as_deref(), Some("team-a production"));
    assert_eq!(
        b.friendly_name,
        Some(format!("{}/team-b", f.ns)),
        "the default name is <namespace>/<name>"
    );
    assert_eq!(a.twilio_status.as_deref(), Some("active"));
    let usage = a.usage.clone().expect("usage is reported");
    assert_eq!(usage.currency, "usd");
    let at_twilio = subaccounts(&f).await;
    assert_eq!(at_twilio.len(), 2);
    assert!(
        at_twilio.contains(&(sid.clone(), "team-a production".into(), "active".into())),
        "renamed after creation: {at_twilio:?}"
    );

    let creds = published_token(&f, "team-a-twilio").await;
    assert_eq!(creds.account_sid(), sid);
    assert!(token_works(&f, &creds).await, "the published auth token works");
    let secret = f.secrets().get("team-a-twilio").await.unwrap();
    assert_eq!(secret.owner_references()[0].kind, "TwilioSubaccount");
    assert!(
        !serde_json::to_string(&a)
            .unwrap()
            .contains(&String::from_utf8(secret.data.unwrap()["TWILIO_AUTH_TOKEN"].0.clone()).unwrap())
    );

    // Usage is not read on every reconcile.
    for i in 0..3 {
        subs(&f)
            .patch(
                "team-a",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"friendlyName": format!("renamed {i}")}})),
            )
            .await
            .unwrap();
        ready_where(&f, "team-a", "renamed", |st| {
            st.friendly_name == Some(format!("renamed {i}"))
        })
        .await;
    }
    assert_eq!(
        f.emu.calls("api.ListUsageRecordThisMonth").await,
        2,
        "once per subaccount, not per reconcile"
    );
    assert_eq!(f.emu.calls("api.CreateAccount").await, 2);
    f.emu.assert_contract_clean().await;
}

#[tokio::test]
async fn state_follows_the_spec_and_drift_is_undone() {
    let mut f = Fixture::new("sub-state", &[]).await;
    f.restart_operator(&[("RESYNC_INTERVAL", "2s")]);
    create(&f, "tenant", json!({})).await;
    let sid = ready(&f, "tenant").await.sid.unwrap();
    subs(&f)
        .patch(
            "tenant",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"state": "Suspended"}})),
        )
        .await
        .unwrap();
    ready_where(&f, "tenant", "suspended", |st| {
        st.twilio_status.as_deref() == Some("suspended")
    })
    .await;
    subs(&f)
        .patch(
            "tenant",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"state": "Active"}})),
        )
        .await
        .unwrap();
    ready_where(&f, "tenant", "active", |st| {
        st.twilio_status.as_deref() == Some("active")
    })
    .await;

    set_status_at_twilio(&f, &sid, AccountStatus::Suspended).await;
    let message = f.wait_event("tenant", "StatusDrift").await;
    assert!(
        message.contains(&sid) && message.contains("suspended"),
        "{message}"
    );
    ready_where(&f, "tenant", "reactivated", |st| {
        st.twilio_status.as_deref() == Some("active")
    })
    .await;
    assert_eq!(subaccounts(&f).await[0].2, "active");
}

#[tokio::test]
async fn a_subaccount_closed_outside_is_reported_and_never_reopened() {
    let mut f = Fixture::new("sub-closed", &[]).await;
    f.restart_operator(&[("RESYNC_INTERVAL", "2s")]);
    create(&f, "doomed", json!({})).await;
    let sid = ready(&f, "doomed").await.sid.unwrap();
    set_status_at_twilio(&f, &sid, AccountStatus::Closed).await;
    f.emu.reset_stats().await;
    let message = reason(&f, "doomed", "SubaccountClosed").await;
    assert!(message.contains("cannot be undone"), "{message}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(f.emu.calls("api.UpdateAccount").await, 0, "no attempt to reopen");
    assert_eq!(subaccounts(&f).await[0].2, "closed");
}

#[tokio::test]
async fn existing_subaccounts_are_adopted_and_bad_sids_explained() {
    let f = Fixture::new("sub-adopt", &[]).await;
    let existing = f
        .emu
        .client()
        .create_account(&f.emu.main_credentials(), Some("made elsewhere"))
        .await
        .unwrap();
    f.emu.reset_stats().await;
    // Adoption needs an explicit grant from a cluster admin, one per SID and namespace.
    let missing_sid = format!("AC{}", "9".repeat(32));
    let grants: Vec<_> = [existing.sid.as_str(), missing_sid.as_str(), MAIN_SID]
        .iter()
        .map(|sid| json!({"sid": sid, "namespace": f.ns}))
        .collect();
    let policy = json!({
        "credentials": {"fromEnvironment": true},
        "namespaces": {"names": [f.ns]},
        "subaccounts": {"adopt": grants},
    });
    f.cp.apply_account(&f.ns, policy).await;
    let granted = json!({"name": f.ns});
    create(
        &f,
        "adopted",
        json!({"sid": existing.sid, "friendlyName": "made elsewhere", "accountRef": granted}),
    )
    .await;
    assert_eq!(
        ready(&f, "adopted").await.sid.as_deref(),
        Some(existing.sid.as_str())
    );
    assert_eq!(
        f.emu.calls("api.CreateAccount").await,
        0,
        "adoption creates nothing"
    );

    create(&f, "missing", json!({"sid": missing_sid, "accountRef": granted})).await;
    assert!(reason(&f, "missing", "NotFound").await.contains("does not exist"));
    create(&f, "itself", json!({"sid": MAIN_SID, "accountRef": granted})).await;
    assert!(
        reason(&f, "itself", "NotASubaccount")
            .await
            .contains("not a subaccount")
    );
}

/// Creates the subaccount object `once` named `friendly_name` under an operator armed to crash
/// right after Twilio's create, and waits for that crash: the subaccount exists at Twilio, and
/// nothing recorded it.
async fn crash_after_create(f: &mut Fixture, friendly_name: &str) {
    f.restart_operator(&[("TWILIO_OPERATOR_FAILPOINT", "subaccount-after-create")]);
    create(f, "once", json!({"friendlyName": friendly_name})).await;
    let exit = f.operator.as_mut().unwrap().wait_exit(WAIT);
    assert!(!exit.success());
    assert_eq!(
        subaccounts(f).await.len(),
        1,
        "the create happened before the crash"
    );
}

#[tokio::test]
async fn a_crash_between_create_and_status_write_makes_no_second_subaccount() {
    let mut f = Fixture::new("sub-crash", &[]).await;
    crash_after_create(&mut f, "exactly once").await;
    f.restart_operator(&[]);
    let st = ready(&f, "once").await;
    let at_twilio = subaccounts(&f).await;
    assert_eq!(at_twilio.len(), 1, "no second subaccount: {at_twilio:?}");
    assert_eq!(
        at_twilio[0],
        (st.sid.unwrap(), "exactly once".into(), "active".into())
    );
    f.wait_event("once", "Recovered").await;
}

/// The name an interrupted create is found by comes from the object's UID alone: renaming the
/// object while the operator is down must not make it create a second subaccount.
#[tokio::test]
async fn a_rename_after_an_interrupted_create_makes_no_second_subaccount() {
    let mut f = Fixture::new("sub-rename", &[]).await;
    crash_after_create(&mut f, "before").await;
    let rename = json!({"spec": {"friendlyName": "after"}});
    subs(&f)
        .patch("once", &PatchParams::default(), &Patch::Merge(&rename))
        .await
        .unwrap();
    f.restart_operator(&[]);
    let st = ready_where(&f, "once", "renamed", |st| {
        st.friendly_name.as_deref() == Some("after")
    })
    .await;
    let at_twilio = subaccounts(&f).await;
    assert_eq!(at_twilio.len(), 1, "no second subaccount: {at_twilio:?}");
    assert_eq!(at_twilio[0], (st.sid.unwrap(), "after".into(), "active".into()));
}

#[tokio::test]
async fn deletion_policies_retain_suspend_and_close() {
    let f = Fixture::new("sub-delete", &[]).await;
    let mut sids = Vec::new();
    for (name, policy) in [("kept", "Retain"), ("paused", "Suspend"), ("ended", "Close")] {
        create(&f, name, json!({"deletionPolicy": policy})).await;
        sids.push(ready(&f, name).await.sid.unwrap());
    }
    for name in ["kept", "paused", "ended"] {
        subs(&f).delete(name, &DeleteParams::default()).await.unwrap();
        wait_gone(&subs(&f), name, WAIT).await;
    }
    let at_twilio = subaccounts(&f).await;
    let status_of = |sid: &str| at_twilio.iter().find(|a| a.0 == sid).unwrap().2.clone();
    assert_eq!(
        [status_of(&sids[0]), status_of(&sids[1]), status_of(&sids[2])],
        ["active", "suspended", "closed"]
    );
}

/// A namespace torn down with its credentials Secret first still goes away, but the policy is
/// not applied: an object with credentialsRef never borrows the operator's credentials.
#[tokio::test]
async fn namespace_deletion_completes_without_the_credentials_secret() {
    let f = Fixture::new("sub-nsdelete", &[]).await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "parent"},
        "stringData": {"TWILIO_ACCOUNT_SID": MAIN_SID, "TWILIO_AUTH_TOKEN": MAIN_TOKEN}
    }))
    .unwrap();
    f.secrets().create(&PostParams::default(), &secret).await.unwrap();
    create(
        &f,
        "closing",
        json!({"credentialsRef": {"name": "parent"}, "deletionPolicy": "Close"}),
    )
    .await;
    let sid = ready(&f, "closing").await.sid.unwrap();
    f.secrets()
        .delete("parent", &DeleteParams::default())
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(f.client.clone());
    namespaces.delete(&f.ns, &DeleteParams::default()).await.unwrap();
    wait_gone(&namespaces, &f.ns, Duration::from_secs(120)).await;
    assert!(
        subaccounts(&f)
            .await
            .contains(&(sid, format!("{}/closing", f.ns), "active".into()))
    );
}

#[tokio::test]
async fn the_auth_token_rotates_through_the_secondary_token() {
    let f = Fixture::new("sub-token", &[]).await;
    create(&f, "rotating", json!({"secret": {"name": "rotating-twilio"}, "authTokenRotation": {"every": "24h", "gracePeriod": "5s"}})).await;
    let st = ready(&f, "rotating").await;
    assert!(st.auth_token.as_ref().unwrap().next_rotation_at.is_some());
    let old = published_token(&f, "rotating-twilio").await;
    // Travel in time: the token was last rotated long ago.
    let published = |s: &TwilioSubaccount| {
        s.status
            .as_ref()
            .and_then(|st| st.auth_token.as_ref())
            .is_some_and(|t| t.secondary_published_at.is_some())
    };
    f.time_travel(
        &subs(&f),
        "rotating",
        json!({"authToken": {"rotatedAt": "2020-01-01T00:00:00Z"}}),
        published,
    )
    .await;
    let secondary = published_token(&f, "rotating-twilio").await;
    assert!(
        token_works(&f, &secondary).await && token_works(&f, &old).await,
        "both tokens work during the grace period"
    );
    let done = ready_where(&f, "rotating", "promoted", |st| {
        st.auth_token
            .as_ref()
            .is_some_and(|t| t.secondary_published_at.is_none() && t.rotated_at.0.as_second() > 1_700_000_000)
    })
    .await;
    assert!(token_works(&f, &published_token(&f, "rotating-twilio").await).await);
    assert!(
        !token_works(&f, &old).await,
        "the old primary stops working after promotion"
    );
    f.wait_event("rotating", "AuthTokenRotated").await;
    assert!(done.auth_token.unwrap().next_rotation_at.is_some());
    f.emu.assert_contract_clean().await;
}

/// After a crash between publishing the secondary token and recording it, the operator checks
/// whether the Secret's token is that secondary. A passing Twilio error in that check is retried,
/// never taken for "not a secondary": the published token is kept and promoted, not replaced.
#[tokio::test]
async fn a_transient_error_never_restarts_an_interrupted_token_rotation() {
    let mut f = Fixture::new("sub-token-flaky", &[]).await;
    create(&f, "careful", json!({"secret": {"name": "careful-twilio"}, "authTokenRotation": {"every": "24h", "gracePeriod": "5s"}})).await;
    let sid = ready(&f, "careful").await.sid.unwrap();
    crash_in_rotation(&mut f, "careful", "token-after-secret").await;
    let secret_token = |s: &Secret| s.data.as_ref().unwrap()["TWILIO_AUTH_TOKEN"].0.clone();
    let published = secret_token(&f.secrets().get("careful-twilio").await.unwrap());
    let flaky = json!({"rules": {"fail_next": {"operation": "api.FetchAccount", "account": sid, "status": 503, "times": 6}}});
    f.emu.configure(flaky).await;
    f.restart_operator(&[]);
    ready_where(&f, "careful", "rotated", |st| {
        st.auth_token
            .as_ref()
            .is_some_and(|t| t.secondary_published_at.is_none() && t.rotated_at.0.as_second() > 1_700_000_000)
    })
    .await;
    let config: Value = reqwest::get(format!("{}/_emulator/config", f.emu.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        config["rules"]["fail_next"].is_null(),
        "the check did meet the failures: {config}"
    );
    assert_eq!(
        secret_token(&f.secrets().get("careful-twilio").await.unwrap()),
        published,
        "the published secondary was promoted, not replaced"
    );
    assert_eq!(f.emu.calls("accounts.DeleteSecondaryAuthToken").await, 0);
    assert!(token_works(&f, &published_token(&f, "careful-twilio").await).await);
}

#[tokio::test]
async fn a_crash_anywhere_in_the_token_rotation_never_locks_consumers_out() {
    for failpoint in [
        "token-after-create-secondary",
        "token-after-secret",
        "token-after-promote",
    ] {
        let mut f = Fixture::new("sub-token-crash", &[]).await;
        create(&f, "careful", json!({"secret": {"name": "careful-twilio"}, "authTokenRotation": {"every": "24h", "gracePeriod": "2s"}})).await;
        ready(&f, "careful").await;
        crash_in_rotation(&mut f, "careful", failpoint).await;
        assert!(
            token_works(&f, &published_token(&f, "careful-twilio").await).await,
            "{failpoint}: the Secret works while the operator is down"
        );
        f.restart_operator(&[]);
        ready_where(&f, "careful", "rotated", |st| {
            st.auth_token.as_ref().is_some_and(|t| {
                t.secondary_published_at.is_none() && t.rotated_at.0.as_second() > 1_700_000_000
            })
        })
        .await;
        assert!(
            token_works(&f, &published_token(&f, "careful-twilio").await).await,
            "{failpoint}: the Secret works after recovery"
        );
        let state = f.emu.state().await;
        let sub = state["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["owner_account_sid"] == MAIN_SID)
            .unwrap()
            .clone();
        assert_eq!(
            sub["has_secondary_token"], false,
            "{failpoint}: the rotation finished"
        );
    }
}

#[tokio::test]
async fn keys_wait_for_their_subaccount_then_live_inside_it() {
    let f = Fixture::new("sub-keys", &[]).await;
    f.create("inside", json!({"subaccountRef": {"name": "home"}, "keyType": "Restricted", "permissions": ["/twilio/billing/balance/read"]})).await;
    assert!(
        f.reason("inside", "SubaccountNotReady")
            .await
            .status
            .unwrap()
            .conditions[0]
            .message
            .contains("home")
    );
    // Waiting for a subaccount being made is normal: told, but not as a Warning.
    let told = f.wait_event("inside", "SubaccountNotReady").await;
    let waits = f.events("inside").await;
    assert!(
        waits
            .iter()
            .all(|(type_, reason, _)| reason != "SubaccountNotReady" || type_ == "Normal"),
        "{told}: {waits:?}"
    );
    create(&f, "home", json!({})).await;
    let sid = ready(&f, "home").await.sid.unwrap();
    let key = f.ready("inside").await;
    assert_eq!(
        key.status.as_ref().unwrap().account_sid.as_deref(),
        Some(sid.as_str()),
        "the key lives in the subaccount"
    );
    let creds = f.published("inside").await;
    assert_eq!(creds.account_sid(), sid);
    f.emu
        .client()
        .fetch_balance(&creds, &sid)
        .await
        .expect("the key works in its subaccount");
    ready_where(&f, "home", "counting keys", |st| st.api_keys == Some(1)).await;

    subs(&f)
        .patch(
            "home",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"state": "Suspended"}})),
        )
        .await
        .unwrap();
    f.reason("inside", "SubaccountSuspended").await;
    subs(&f)
        .patch(
            "home",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"state": "Active"}})),
        )
        .await
        .unwrap();
    f.ready_where("inside", "back", |k| {
        k.status.as_ref().unwrap().conditions[0].reason == "Ready"
    })
    .await;
    set_status_at_twilio(&f, &sid, AccountStatus::Closed).await;
    subs(&f)
        .patch(
            "home",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"poke": "1"}}})),
        )
        .await
        .unwrap();
    f.reason("inside", "SubaccountClosed").await;
}

#[tokio::test]
async fn twilio_errors_become_actionable_reasons() {
    let f = Fixture::new("sub-errors", &["--max-subaccounts", "1"]).await;
    create(&f, "first", json!({})).await;
    let first = ready(&f, "first").await;
    create(&f, "second", json!({})).await;
    let limit = reason(&f, "second", "LimitReached").await;
    assert!(limit.contains("21480") && limit.contains("support"), "{limit}");

    let wrong: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong"},
        "stringData": {"TWILIO_ACCOUNT_SID": MAIN_SID, "TWILIO_AUTH_TOKEN": "wrong"}
    }))
    .unwrap();
    f.secrets().create(&PostParams::default(), &wrong).await.unwrap();
    create(&f, "denied", json!({"credentialsRef": {"name": "wrong"}})).await;
    assert!(
        reason(&f, "denied", "AuthenticationFailed")
            .await
            .contains("20003")
    );

    // Subaccount credentials cannot make subaccounts.
    let token = f
        .emu
        .client()
        .fetch_account(&f.emu.main_credentials(), first.sid.as_deref().unwrap())
        .await
        .unwrap()
        .auth_token
        .unwrap();
    let nested: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nested"},
        "stringData": {"TWILIO_ACCOUNT_SID": first.sid, "TWILIO_AUTH_TOKEN": secrecy::ExposeSecret::expose_secret(&token)}
    }))
    .unwrap();
    f.secrets().create(&PostParams::default(), &nested).await.unwrap();
    create(&f, "nested", json!({"credentialsRef": {"name": "nested"}})).await;
    assert!(
        reason(&f, "nested", "CredentialsNotParent")
            .await
            .contains("21101")
    );
}

/// A Secret deleted during a token rotation's grace period comes back at once with a token that
/// works (a fresh secondary, since Twilio shows a secondary only when it is made), instead of
/// staying missing until the promotion.
#[tokio::test]
async fn a_secret_deleted_during_the_token_grace_period_comes_back_at_once() {
    let f = Fixture::new("sub-token-lost", &[]).await;
    create(&f, "lost", json!({"secret": {"name": "lost-twilio"}, "authTokenRotation": {"every": "24h", "gracePeriod": "40s"}})).await;
    ready(&f, "lost").await;
    let past = json!({"authToken": {"rotatedAt": "2020-01-01T00:00:00Z"}});
    // Retried until the operator acts on it, since a pass under way may overwrite the travel.
    f.time_travel(&subs(&f), "lost", past, |s: &TwilioSubaccount| {
        s.status
            .as_ref()
            .and_then(|st| st.auth_token.as_ref())
            .is_some_and(|t| t.secondary_published_at.is_some())
    })
    .await;
    f.secrets()
        .delete("lost-twilio", &DeleteParams::default())
        .await
        .unwrap();
    let back = wait_for(
        &f.secrets(),
        "lost-twilio",
        Duration::from_secs(15),
        "published again",
        |_: &Secret| true,
    )
    .await;
    assert!(back.metadata.deletion_timestamp.is_none());
    assert!(
        token_works(&f, &published_token(&f, "lost-twilio").await).await,
        "the Secret works again at once"
    );
    ready_where(&f, "lost", "promoted", |st| {
        st.auth_token
            .as_ref()
            .is_some_and(|t| t.secondary_published_at.is_none() && t.rotated_at.0.as_second() > 1_700_000_000)
    })
    .await;
    assert!(
        token_works(&f, &published_token(&f, "lost-twilio").await).await,
        "and after the promotion"
    );
}

/// Arms `failpoint`, makes the token rotation of `name` due, and waits for the operator to abort
/// there.
async fn crash_in_rotation(f: &mut Fixture, name: &str, failpoint: &str) {
    f.restart_operator(&[("TWILIO_OPERATOR_FAILPOINT", failpoint)]);
    let past = json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount", "status": {"authToken": {"rotatedAt": "2020-01-01T00:00:00Z"}}});
    // Until the armed operator has crashed, any pass under way may overwrite the travel.
    for _ in 0..5 {
        subs(f)
            .patch_status(
                name,
                &PatchParams::apply("time-travel").force(),
                &Patch::Apply(&past),
            )
            .await
            .unwrap();
        if f.operator
            .as_mut()
            .unwrap()
            .exited_within(Duration::from_secs(10))
        {
            break;
        }
    }
    let exit = f.operator.as_mut().unwrap().wait_exit(WAIT);
    assert!(!exit.success(), "{failpoint} was reached");
}

/// A key joining a subaccount wakes that subaccount to count it, and that pass asks Twilio
/// nothing: the subaccount was looked at within the resync interval and its spec is unchanged.
#[tokio::test]
async fn a_key_joining_is_counted_without_a_twilio_call() {
    let f = Fixture::new("sub-count", &[]).await;
    create(&f, "home", json!({})).await;
    ready(&f, "home").await;
    f.create("first", json!({"subaccountRef": {"name": "home"}}))
        .await;
    f.ready("first").await;
    ready_where(&f, "home", "counting one key", |st| st.api_keys == Some(1)).await;

    f.emu.reset_stats().await;
    f.create("second", json!({"subaccountRef": {"name": "home"}}))
        .await;
    f.ready("second").await;
    ready_where(&f, "home", "counting two keys", |st| st.api_keys == Some(2)).await;
    assert_eq!(
        f.emu.calls("api.FetchAccount").await,
        0,
        "{}",
        f.emu.state().await
    );
    f.keys().delete("first", &DeleteParams::default()).await.unwrap();
    ready_where(&f, "home", "counting one key", |st| st.api_keys == Some(1)).await;
    assert_eq!(
        f.emu.calls("api.FetchAccount").await,
        0,
        "{}",
        f.emu.state().await
    );
}
