//! The Twilio client against the emulator: every endpoint, every error class, bounded retries
//! under injected faults (counted at the emulator), and no secret in any log line. Every
//! request and response is checked against Twilio's OpenAPI files along the way.

mod support;

use secrecy::{ExposeSecret, SecretString};
use std::time::{Duration, Instant};
use support::emulator::{Emulator, MAIN_SID};
use twilio_operator::twilio::types::{AccountFilter, AccountStatus, AccountUpdate, NewUsageTrigger};
use twilio_operator::twilio::{Credentials, Error, ErrorClass, TwilioClient};

/// A recurring monthly trigger on total price at `value`, calling `url`.
fn monthly_price_trigger(url: &str, value: &str) -> NewUsageTrigger {
    NewUsageTrigger {
        callback_url: url.into(),
        trigger_value: value.into(),
        usage_category: "totalprice".into(),
        friendly_name: Some("budget".into()),
        recurring: Some("monthly".into()),
        trigger_by: Some("price".into()),
    }
}

fn class<T: std::fmt::Debug>(result: Result<T, Error>) -> (ErrorClass, Option<i64>) {
    let error = result.expect_err("the call should fail");
    (error.class(), error.code())
}

fn subaccount_credentials(account: &twilio_operator::twilio::types::Account) -> Credentials {
    let token = account
        .auth_token
        .clone()
        .expect("Twilio returns the subaccount's token");
    Credentials::with_auth_token(account.sid.clone(), token).expect("valid credentials")
}

#[tokio::test]
async fn accounts_lifecycle_and_status_machine() {
    let emu = Emulator::start(&[]);
    let mut config = emu.client_config();
    config.page_size = 2; // several pages from five accounts
    let client = TwilioClient::new(config).unwrap();
    let main = emu.main_credentials();

    let mut tenants = Vec::new();
    for i in 0..4 {
        tenants.push(
            client
                .create_account(&main, Some(&format!("tenant-{i}")))
                .await
                .unwrap(),
        );
    }
    let all = client
        .list_accounts(&main, &AccountFilter::default())
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        5,
        "the main account and its four subaccounts, across pages"
    );
    assert!(all.iter().any(|a| a.sid == MAIN_SID));
    let by_name = client
        .list_accounts(
            &main,
            &AccountFilter {
                friendly_name: Some("tenant-2".into()),
                status: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        by_name.iter().map(|a| a.sid.as_str()).collect::<Vec<_>>(),
        [tenants[2].sid.as_str()]
    );

    let t = &tenants[0];
    assert_eq!(t.owner_account_sid.as_deref(), Some(MAIN_SID));
    let renamed = client
        .update_account(
            &main,
            &t.sid,
            &AccountUpdate {
                friendly_name: Some("renamed".into()),
                status: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.friendly_name.as_deref(), Some("renamed"));
    let suspend = AccountUpdate {
        friendly_name: None,
        status: Some(AccountStatus::Suspended),
    };
    assert_eq!(
        client
            .update_account(&main, &t.sid, &suspend)
            .await
            .unwrap()
            .status,
        Some(AccountStatus::Suspended)
    );
    let suspended = client
        .list_accounts(
            &main,
            &AccountFilter {
                friendly_name: None,
                status: Some(AccountStatus::Suspended),
            },
        )
        .await
        .unwrap();
    assert_eq!(suspended.len(), 1);
    // A suspended account's own credentials stop working.
    assert_eq!(
        class(client.fetch_account(&subaccount_credentials(t), &t.sid).await),
        (ErrorClass::Credentials, Some(20003))
    );
    let activate = AccountUpdate {
        friendly_name: None,
        status: Some(AccountStatus::Active),
    };
    client.update_account(&main, &t.sid, &activate).await.unwrap();
    let close = AccountUpdate {
        friendly_name: None,
        status: Some(AccountStatus::Closed),
    };
    assert_eq!(
        client.update_account(&main, &t.sid, &close).await.unwrap().status,
        Some(AccountStatus::Closed)
    );
    assert_eq!(
        class(client.update_account(&main, &t.sid, &activate).await),
        (ErrorClass::Permanent, Some(21479))
    );
    assert_eq!(
        client.fetch_account(&main, &t.sid).await.unwrap().status,
        Some(AccountStatus::Closed),
        "closed accounts stay visible"
    );

    // A subaccount cannot nest, nor see its parent or its siblings.
    let sub = subaccount_credentials(&tenants[1]);
    assert_eq!(
        class(client.create_account(&sub, None).await),
        (ErrorClass::Permanent, Some(21101))
    );
    assert_eq!(
        class(client.fetch_account(&sub, MAIN_SID).await).0,
        ErrorClass::NotFound
    );
    assert_eq!(
        class(client.list_keys(&sub, &tenants[2].sid).await).0,
        ErrorClass::NotFound
    );
    assert_eq!(
        client
            .list_accounts(&sub, &AccountFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    // A suspended parent suspends its children.
    emu.change_account(MAIN_SID, serde_json::json!({"status": "suspended"}))
        .await;
    assert_eq!(
        class(client.list_keys(&sub, &tenants[1].sid).await),
        (ErrorClass::Credentials, Some(20003))
    );
    emu.assert_contract_clean().await;
}

#[tokio::test]
async fn subaccount_limit_is_reported() {
    let emu = Emulator::start(&["--max-subaccounts", "1"]);
    let client = emu.client();
    let main = emu.main_credentials();
    client.create_account(&main, None).await.unwrap();
    assert_eq!(
        class(client.create_account(&main, None).await),
        (ErrorClass::Permanent, Some(21480))
    );
    emu.assert_contract_clean().await;
}

#[tokio::test]
async fn v2010_keys_lifecycle() {
    let emu = Emulator::start(&[]);
    let mut config = emu.client_config();
    config.page_size = 2;
    let client = TwilioClient::new(config).unwrap();
    let main = emu.main_credentials();
    let tenant = client.create_account(&main, Some("keys")).await.unwrap();

    let mut created = Vec::new();
    for i in 0..5 {
        // The parent's token manages keys inside its subaccount.
        created.push(
            client
                .create_key(&main, &tenant.sid, Some(&format!("k{i}")))
                .await
                .unwrap(),
        );
    }
    let listed = client.list_keys(&main, &tenant.sid).await.unwrap();
    assert_eq!(
        listed.iter().map(|k| &k.sid).collect::<Vec<_>>(),
        created.iter().map(|k| &k.sid).collect::<Vec<_>>()
    );
    let key = &created[0];
    assert!(key.date_created.is_some());
    // The new key authenticates as a Standard key: resources yes, key management no.
    let as_key = Credentials::with_api_key(tenant.sid.clone(), key.sid.clone(), key.secret.clone()).unwrap();
    client.fetch_balance(&as_key, &tenant.sid).await.unwrap();
    assert_eq!(
        class(client.list_keys(&as_key, &tenant.sid).await),
        (ErrorClass::Credentials, Some(20003))
    );

    assert_eq!(
        client
            .fetch_key(&main, &tenant.sid, &key.sid)
            .await
            .unwrap()
            .friendly_name
            .as_deref(),
        Some("k0")
    );
    assert_eq!(
        client
            .update_key(&main, &tenant.sid, &key.sid, "renamed")
            .await
            .unwrap()
            .friendly_name
            .as_deref(),
        Some("renamed")
    );
    client.delete_key(&main, &tenant.sid, &key.sid).await.unwrap();
    client
        .delete_key(&main, &tenant.sid, &key.sid)
        .await
        .expect("deleting a deleted key is done, not an error");
    assert_eq!(
        class(client.fetch_key(&main, &tenant.sid, &key.sid).await),
        (ErrorClass::NotFound, Some(20404))
    );
    assert_eq!(
        class(client.fetch_balance(&as_key, &tenant.sid).await),
        (ErrorClass::Credentials, Some(20003)),
        "revoked at once"
    );
    assert_eq!(client.list_keys(&main, &tenant.sid).await.unwrap().len(), 4);
    emu.assert_contract_clean().await;
}

#[tokio::test]
async fn key_limit_and_bad_names_are_permanent() {
    let emu = Emulator::start(&["--max-keys", "1"]);
    let client = emu.client();
    let main = emu.main_credentials();
    client.create_key(&main, MAIN_SID, None).await.unwrap();
    assert_eq!(
        class(client.create_key(&main, MAIN_SID, None).await),
        (ErrorClass::Permanent, Some(70151))
    );
    emu.assert_contract_clean().await;
}

#[tokio::test]
async fn iam_restricted_keys_lifecycle() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let main = emu.main_credentials();
    let tenant = client.create_account(&main, Some("iam")).await.unwrap();
    let sub = subaccount_credentials(&tenant);
    let send = vec!["/twilio/messaging/messages/create".to_owned()];

    let key = client
        .create_restricted_key(&sub, &tenant.sid, Some("restricted"), &send)
        .await
        .unwrap();
    let listed = client.list_iam_keys(&sub, &tenant.sid).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].flags.is_some(), "IAM list items carry flags");
    let fetched = client.fetch_iam_key(&sub, &key.sid).await.unwrap();
    assert_eq!(fetched.policy.map(|p| p.allow), Some(send.clone()));
    let both = vec![send[0].clone(), "/twilio/billing/balance/read".to_owned()];
    let updated = client
        .update_iam_key(&sub, &key.sid, None, Some(&both))
        .await
        .unwrap();
    assert_eq!(
        updated.policy.map(|p| p.allow),
        Some(both),
        "a new policy replaces the old one"
    );
    // The policy now grants the balance; account management stays forbidden.
    let as_key = Credentials::with_api_key(tenant.sid.clone(), key.sid.clone(), key.secret.clone()).unwrap();
    client.fetch_balance(&as_key, &tenant.sid).await.unwrap();
    assert_eq!(
        class(client.create_account(&as_key, None).await),
        (ErrorClass::Credentials, Some(70051))
    );
    // Product hosts take only the account's own credentials, never its parent's.
    assert_eq!(
        class(client.list_iam_keys(&main, &tenant.sid).await),
        (ErrorClass::Credentials, Some(20003))
    );
    assert_eq!(
        class(
            client
                .create_restricted_key(&sub, &tenant.sid, None, &["messaging".to_owned()])
                .await
        ),
        (ErrorClass::Permanent, Some(70002))
    );
    client.delete_iam_key(&sub, &key.sid).await.unwrap();
    client.delete_iam_key(&sub, &key.sid).await.unwrap();
    assert_eq!(
        class(client.fetch_iam_key(&sub, &key.sid).await).0,
        ErrorClass::NotFound
    );
    emu.assert_contract_clean().await;
}

#[tokio::test]
async fn auth_token_rotation_flow() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let main = emu.main_credentials();
    let tenant = client.create_account(&main, Some("tokens")).await.unwrap();
    let old = subaccount_credentials(&tenant);

    let secondary = client.create_secondary_auth_token(&old).await.unwrap();
    let with_secondary =
        Credentials::with_auth_token(tenant.sid.clone(), secondary.secondary_auth_token.clone()).unwrap();
    client
        .fetch_account(&with_secondary, &tenant.sid)
        .await
        .expect("the secondary works at once");
    client
        .fetch_account(&old, &tenant.sid)
        .await
        .expect("the primary still works");
    assert_eq!(
        class(client.create_secondary_auth_token(&old).await),
        (ErrorClass::Permanent, Some(70002))
    );

    let promoted = client.promote_secondary_auth_token(&old).await.unwrap();
    assert_eq!(
        promoted.auth_token.expose_secret(),
        secondary.secondary_auth_token.expose_secret()
    );
    assert_eq!(
        class(client.fetch_account(&old, &tenant.sid).await).0,
        ErrorClass::Credentials,
        "the old primary is dead"
    );
    let fetched = client.fetch_account(&with_secondary, &tenant.sid).await.unwrap();
    assert_eq!(
        fetched.auth_token.unwrap().expose_secret(),
        secondary.secondary_auth_token.expose_secret()
    );
    assert_eq!(
        class(client.promote_secondary_auth_token(&with_secondary).await).0,
        ErrorClass::NotFound
    );

    client.create_secondary_auth_token(&with_secondary).await.unwrap();
    client.delete_secondary_auth_token(&with_secondary).await.unwrap();
    client
        .create_secondary_auth_token(&with_secondary)
        .await
        .expect("a new secondary after the delete");
    emu.assert_contract_clean().await;
}

#[tokio::test]
async fn balance_usage_and_triggers() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let main = emu.main_credentials();
    let tenant = client.create_account(&main, Some("usage")).await.unwrap();
    emu.change_account(&tenant.sid, serde_json::json!({"usage_total": 12.34}))
        .await;

    let balance = client.fetch_balance(&main, MAIN_SID).await.unwrap();
    assert_eq!(
        (balance.balance.as_deref(), balance.currency.as_deref()),
        (Some("20.00"), Some("USD"))
    );
    let records = client
        .usage_this_month(&main, &tenant.sid, "totalprice")
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].price.as_deref(), records[0].price_unit.as_deref()),
        (Some("12.34"), Some("usd"))
    );

    let trigger = monthly_price_trigger("https://example.com/usage", "+30");
    let created = client
        .create_usage_trigger(&main, &tenant.sid, &trigger)
        .await
        .unwrap();
    assert_eq!(
        created.trigger_value.as_deref(),
        Some("+30"),
        "a literal + survives form encoding"
    );
    assert_eq!(
        client
            .list_usage_triggers(&main, &tenant.sid)
            .await
            .unwrap()
            .len(),
        1
    );
    client
        .delete_usage_trigger(&main, &tenant.sid, &created.sid)
        .await
        .unwrap();
    assert!(
        client
            .list_usage_triggers(&main, &tenant.sid)
            .await
            .unwrap()
            .is_empty()
    );
    emu.assert_contract_clean().await;
}

#[tokio::test]
async fn main_keys_act_for_their_account_and_standard_keys_do_not() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let (main_key, main_secret) = emu.bootstrap_key(MAIN_SID, "main").await;
    let as_main_key = Credentials::with_api_key(MAIN_SID, main_key, SecretString::from(main_secret)).unwrap();
    let tenant = client
        .create_account(&as_main_key, Some("made by a main key"))
        .await
        .unwrap();
    client.create_key(&as_main_key, MAIN_SID, None).await.unwrap();
    // Whether a Main key reaches into subaccounts is disputed; the emulator denies by default.
    assert_eq!(
        class(client.list_keys(&as_main_key, &tenant.sid).await),
        (ErrorClass::Credentials, Some(20003))
    );

    let (standard, standard_secret) = emu.bootstrap_key(MAIN_SID, "standard").await;
    let as_standard =
        Credentials::with_api_key(MAIN_SID, standard, SecretString::from(standard_secret)).unwrap();
    assert_eq!(
        class(
            client
                .list_accounts(&as_standard, &AccountFilter::default())
                .await
        ),
        (ErrorClass::Credentials, Some(20003))
    );
    assert_eq!(
        class(client.create_key(&as_standard, MAIN_SID, None).await),
        (ErrorClass::Credentials, Some(20003))
    );
    let wrong = Credentials::with_auth_token(MAIN_SID, SecretString::from("not-the-token")).unwrap();
    assert_eq!(
        class(client.fetch_account(&wrong, MAIN_SID).await),
        (ErrorClass::Credentials, Some(20003))
    );
    emu.assert_contract_clean().await;
}

#[tokio::test]
async fn malformed_sids_never_reach_the_wire() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let main = emu.main_credentials();
    for result in [
        client
            .fetch_key(&main, MAIN_SID, "SK../../Accounts")
            .await
            .map(|_| ()),
        client
            .delete_key(&main, "ACnot-a-sid", &format!("SK{}", "0".repeat(32)))
            .await,
        client.fetch_account(&main, "AC0123/../x").await.map(|_| ()),
    ] {
        assert!(matches!(result, Err(Error::InvalidSid { .. })), "{result:?}");
    }
    assert!(
        emu.state().await["calls"].as_object().unwrap().is_empty(),
        "no request was sent"
    );
}

#[tokio::test]
async fn retries_are_bounded_and_creates_are_never_duplicated() {
    let emu = Emulator::start(&[]);
    let mut config = emu.client_config();
    config.max_retries = 3;
    let client = TwilioClient::new(config).unwrap();
    let main = emu.main_credentials();

    emu.configure(serde_json::json!({"knobs": {"fault_429": 1.0}}))
        .await;
    assert_eq!(
        class(client.list_keys(&main, MAIN_SID).await).0,
        ErrorClass::RateLimited
    );
    assert_eq!(emu.calls("api.ListKey").await, 4, "one attempt and three retries");
    // A 429 was never processed, so even a create may be repeated.
    assert_eq!(
        class(client.create_key(&main, MAIN_SID, None).await).0,
        ErrorClass::RateLimited
    );
    assert_eq!(emu.calls("api.CreateNewKey").await, 4);

    emu.configure(serde_json::json!({"knobs": {"fault_429": 0.0, "fault_5xx": 1.0}}))
        .await;
    emu.reset_stats().await;
    assert_eq!(
        class(client.fetch_account(&main, MAIN_SID).await).0,
        ErrorClass::Transient
    );
    assert_eq!(emu.calls("api.FetchAccount").await, 4);
    // A 5xx may have been processed: a create is not repeated, so it cannot leave a twin.
    assert_eq!(
        class(client.create_account(&main, None).await).0,
        ErrorClass::Transient
    );
    assert_eq!(emu.calls("api.CreateAccount").await, 1);

    emu.configure(serde_json::json!({"knobs": {"fault_5xx": 0.0, "fault_reset": 1.0}}))
        .await;
    emu.reset_stats().await;
    assert_eq!(
        class(client.list_accounts(&main, &AccountFilter::default()).await).0,
        ErrorClass::Transient
    );
    assert_eq!(emu.calls("api.ListAccount").await, 4);

    emu.configure(serde_json::json!({"knobs": {"fault_reset": 0.0, "fault_slow": 1.0, "slow_ms": 1500}}))
        .await;
    emu.reset_stats().await;
    let mut quick = emu.client_config();
    quick.max_retries = 1;
    quick.timeout = Duration::from_millis(300);
    let quick = TwilioClient::new(quick).unwrap();
    assert_eq!(
        class(quick.fetch_balance(&main, MAIN_SID).await).0,
        ErrorClass::Transient,
        "timeouts are transient"
    );
    assert_eq!(
        emu.calls("api.FetchBalance").await,
        2,
        "one attempt and one retry, no more"
    );

    // Intermittent faults are absorbed by the retries.
    emu.configure(serde_json::json!({"knobs": {"fault_slow": 0.0, "fault_429": 0.3, "fault_5xx": 0.1}}))
        .await;
    let mut patient = emu.client_config();
    patient.max_retries = 10;
    let patient = TwilioClient::new(patient).unwrap();
    for _ in 0..10 {
        patient
            .fetch_account(&main, MAIN_SID)
            .await
            .expect("retries get through intermittent faults");
    }
    emu.assert_contract_clean().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let emu = Emulator::start(&["--fault-429", "1.0", "--retry-after-secs", "1"]);
    let mut config = emu.client_config();
    config.max_retries = 1;
    let client = TwilioClient::new(config).unwrap();
    let started = Instant::now();
    assert_eq!(
        class(client.fetch_account(&emu.main_credentials(), MAIN_SID).await).0,
        ErrorClass::RateLimited
    );
    // The backoff alone would wait under 50 ms; Retry-After asked for a second.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited only {:?}",
        started.elapsed()
    );
    assert_eq!(emu.calls("api.FetchAccount").await, 2);
}

#[tokio::test]
async fn concurrency_stays_under_the_per_account_cap() {
    let emu = Emulator::start(&["--concurrency-limit", "2", "--latency-ms", "100"]);
    let mut config = emu.client_config();
    config.max_concurrency = 2;
    config.max_retries = 0;
    let client = TwilioClient::new(config).unwrap();
    let main = emu.main_credentials();
    let calls = (0..8).map(|_| client.fetch_account(&main, MAIN_SID));
    for result in futures::future::join_all(calls).await {
        result.expect("no call should meet the emulator's concurrency limit");
    }
    let state = emu.state().await;
    assert_eq!(state["calls"]["api.FetchAccount"]["200"], 8, "{}", state["calls"]);
}

#[tokio::test]
async fn official_python_sdk_sees_consistent_data() {
    let emu = Emulator::start(&[]);
    let script = support::repo_root().join("tests/sdk/scenario.py");
    let out = std::process::Command::new(&support::emulator::artefacts().sdk_python)
        .arg(&script)
        .env("EMULATOR_URL", &emu.url)
        .env("TWILIO_ACCOUNT_SID", MAIN_SID)
        .env("TWILIO_AUTH_TOKEN", support::emulator::MAIN_TOKEN)
        .output()
        .expect("run the SDK scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the official SDK scenario failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("scenario complete"), "{stdout}");
    emu.assert_contract_clean().await;
}

#[tokio::test]
async fn contract_checks_catch_departures_from_the_spec() {
    use twilio_emulator::contract::Contract;
    let contract = Contract::load(&support::emulator::artefacts().oai_dir).expect("load Twilio's spec");
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    let form = "application/x-www-form-urlencoded";
    let pairs = |items: &[(&str, &str)]| {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };

    assert!(
        contract
            .check_request(
                &post,
                "/2010-04-01/Accounts.json",
                &[],
                Some(form),
                &pairs(&[("FriendlyName", "ok")])
            )
            .is_empty()
    );
    let unknown = contract.check_request(
        &post,
        "/2010-04-01/Accounts.json",
        &[],
        Some(form),
        &pairs(&[("Bogus", "1")]),
    );
    assert!(unknown.iter().any(|p| p.contains("Bogus")), "{unknown:?}");
    let bad_enum = contract.check_request(
        &get,
        "/2010-04-01/Accounts.json",
        &pairs(&[("Status", "frozen")]),
        None,
        &[],
    );
    assert!(
        bad_enum
            .iter()
            .any(|p| p.contains("Status") && p.contains("frozen")),
        "{bad_enum:?}"
    );
    let missing = contract.check_request(&get, "/v1/Keys", &[], None, &[]);
    assert!(missing.iter().any(|p| p.contains("AccountSid")), "{missing:?}");
    let json_body = contract.check_request(
        &post,
        "/v1/Keys",
        &[],
        Some("application/json"),
        &pairs(&[("AccountSid", MAIN_SID)]),
    );
    assert!(!json_body.is_empty(), "a JSON body where the spec wants a form");
    assert!(
        !contract
            .check_request(&reqwest::Method::PUT, "/2010-04-01/Accounts.json", &[], None, &[])
            .is_empty()
    );
    assert!(
        !contract
            .check_request(&get, "/2010-04-01/Nowhere.json", &[], None, &[])
            .is_empty()
    );

    let account = serde_json::json!({"sid": MAIN_SID, "status": "frozen", "type": "Full"});
    let wrong = contract.check_response(
        &get,
        &format!("/2010-04-01/Accounts/{MAIN_SID}.json"),
        200,
        account.to_string().as_bytes(),
    );
    assert!(wrong.iter().any(|p| p.contains("frozen")), "{wrong:?}");
    let page = serde_json::json!({"accounts": [], "page": "zero"});
    assert!(
        !contract
            .check_response(
                &get,
                "/2010-04-01/Accounts.json",
                200,
                page.to_string().as_bytes()
            )
            .is_empty()
    );
    assert!(
        !contract
            .check_response(&post, "/2010-04-01/Accounts.json", 200, b"{}")
            .is_empty(),
        "create answers 201, not 200"
    );
}

#[tokio::test]
async fn usage_triggers_fire_once_a_month_with_a_signature_the_official_sdk_accepts() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let main = emu.main_credentials();
    let tenant = client.create_account(&main, Some("budgeted")).await.unwrap();
    let token = tenant.auth_token.clone().expect("a new subaccount's token");
    let (sink, mut calls) = support::emulator::callback_sink().await;
    let callback_url = format!("{sink}/usage-triggers/team/budget?shard=1");
    let trigger = monthly_price_trigger(&callback_url, "10");
    let created = client
        .create_usage_trigger(&main, &tenant.sid, &trigger)
        .await
        .unwrap();
    let fires = |state: serde_json::Value| state["triggers"][0]["fires"].as_u64().unwrap();

    emu.change_account(&tenant.sid, serde_json::json!({"usage_total": 9.99}))
        .await;
    assert_eq!(fires(emu.state().await), 0, "below the value");
    emu.change_account(&tenant.sid, serde_json::json!({"add_usage": 0.01}))
        .await;
    let call = tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .expect("the trigger calls back within seconds")
        .unwrap();
    assert_eq!(call.path_and_query, "/usage-triggers/team/budget?shard=1");
    let param = |name: &str| {
        call.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {:?}", call.params))
    };
    assert_eq!(param("AccountSid"), tenant.sid);
    assert_eq!(param("UsageTriggerSid"), created.sid);
    assert_eq!(
        (param("TriggerBy"), param("Recurring")),
        ("price".into(), "monthly".into())
    );
    assert_eq!(
        (param("TriggerValue"), param("CurrentValue")),
        ("10".into(), "10".into())
    );
    for name in ["DateFired", "UsageCategory", "UsageRecordUri", "IdempotencyToken"] {
        assert!(!param(name).is_empty(), "{name}");
    }
    let signature = call.signature.clone().expect("X-Twilio-Signature");
    assert!(
        support::emulator::sdk_validates(token.expose_secret(), &callback_url, &call.params, &signature),
        "Twilio's SDK accepts the signature"
    );
    assert!(
        !support::emulator::sdk_validates(
            support::emulator::MAIN_TOKEN,
            &callback_url,
            &call.params,
            &signature
        ),
        "signed with the subaccount's token, not the parent's"
    );

    emu.change_account(&tenant.sid, serde_json::json!({"usage_total": 25}))
        .await;
    assert_eq!(fires(emu.state().await), 1, "once per month");

    // The next month: spend starts again from zero, and the trigger fires again when reached.
    let travel = emu.advance_clock(32 * 86_400).await;
    let records = client
        .usage_this_month(&main, &tenant.sid, "totalprice")
        .await
        .unwrap();
    assert_eq!(records[0].price.as_deref(), Some("0.0"), "{travel}");
    assert_eq!(
        records[0].start_date.as_deref().map(|d| &d[..7]),
        travel["period"].as_str()
    );
    emu.change_account(&tenant.sid, serde_json::json!({"usage_total": 10}))
        .await;
    tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .expect("fires again in a new month")
        .unwrap();
    assert_eq!(fires(emu.state().await), 2);

    let moved = client
        .update_usage_trigger(&main, &tenant.sid, &created.sid, "https://example.com/moved")
        .await
        .unwrap();
    assert_eq!(moved.callback_url.as_deref(), Some("https://example.com/moved"));
    emu.assert_contract_clean().await;
}
