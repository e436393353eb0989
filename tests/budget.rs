//! Budgets end to end: the operator process against the real control plane and the emulator,
//! driven through the Kubernetes API as a user would, with spend set at the emulator as Twilio
//! would record it and its clock moved into the next month.

mod support;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::fixture::{Fixture, WAIT};
use support::operator::{sample, wait_for, wait_gone};
use twilio_operator::api::TwilioSubaccount;
use twilio_operator::api::subaccount::{BudgetState, BudgetStatus};
use twilio_operator::conditions::is_ready;

const MONTH: i64 = 32 * 86_400;

fn subs(f: &Fixture) -> Api<TwilioSubaccount> {
    f.subaccounts()
}

async fn create(f: &Fixture, name: &str, spec: Value) {
    f.create_subaccount(name, spec).await;
}

/// The object once Ready, with a budget status that satisfies `what`; on timeout the failure
/// shows the object and the operator's log.
async fn budget_where(
    f: &Fixture,
    name: &str,
    what: &str,
    check: impl Fn(&BudgetStatus) -> bool,
) -> TwilioSubaccount {
    let done = |s: &TwilioSubaccount| {
        s.status.as_ref().is_some_and(|st| {
            is_ready(&st.conditions)
                && st.observed_generation == s.metadata.generation
                && st.budget.as_ref().is_some_and(&check)
        })
    };
    let waited = tokio::time::timeout(
        WAIT,
        kube::runtime::wait::await_condition(subs(f), name, |s: Option<&TwilioSubaccount>| {
            s.is_some_and(done)
        }),
    )
    .await;
    match waited {
        Ok(Ok(Some(sub))) => sub,
        _ => panic!(
            "{name} never became {what}: {:?}\n{}",
            subs(f).get(name).await.ok().and_then(|s| s.status),
            f.operator_log()
        ),
    }
}

/// Asks the operator to look again, as a person would: `kubectl annotate`.
async fn look(f: &Fixture, name: &str) {
    let now = format!("{:?}", Instant::now());
    subs(f)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"example.com/look": now}}})),
        )
        .await
        .expect("annotate");
}

/// Sets the subaccount's spend this month at Twilio and makes the operator look.
async fn spend(f: &Fixture, name: &str, sid: &str, total: f64) {
    f.emu.change_account(sid, json!({"usage_total": total})).await;
    look(f, name).await;
}

/// Moves Twilio into the next month and makes the operator look; returns the new month.
async fn new_month(f: &Fixture, name: &str) -> String {
    let travelled = f.emu.advance_clock(MONTH).await;
    look(f, name).await;
    travelled["period"].as_str().expect("the new month").to_owned()
}

/// Changes the spec as a person would.
async fn edit(f: &Fixture, name: &str, spec: Value) {
    subs(f)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .expect("edit the spec");
}

fn sid(sub: &TwilioSubaccount) -> String {
    sub.status.as_ref().and_then(|s| s.sid.clone()).expect("a SID")
}

fn budget_condition(sub: &TwilioSubaccount) -> (String, String) {
    let c = sub
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Budget")
        .expect("a Budget condition");
    (c.status.clone(), c.reason.clone())
}

async fn count_events(f: &Fixture, name: &str, reason: &str) -> usize {
    f.events(name)
        .await
        .iter()
        .filter(|(_, r, _)| r == reason)
        .count()
}

/// The status Twilio (the emulator) reports for account `sid`.
async fn twilio_status(f: &Fixture, sid: &str) -> String {
    f.emu.state().await["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["sid"] == sid)
        .map(|a| a["status"].as_str().unwrap().to_owned())
        .expect("the account exists at Twilio")
}

/// The usage triggers Twilio holds for account `sid`.
async fn triggers(f: &Fixture, sid: &str) -> Vec<Value> {
    f.emu.state().await["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["account_sid"] == sid)
        .cloned()
        .collect()
}

#[tokio::test]
async fn thresholds_warn_once_a_month_and_alert_changes_nothing_at_twilio() {
    let f = Fixture::new("budget-alert", &[]).await;
    create(
        &f,
        "team",
        json!({"budget": {"monthly": "50.00", "warnAt": [50, 80]}}),
    )
    .await;
    let sub = budget_where(&f, "team", "budget Ok", |b| b.state == BudgetState::Ok).await;
    let sid = sid(&sub);
    assert_eq!(budget_condition(&sub), ("True".into(), "WithinBudget".into()));
    f.emu.reset_stats().await;

    spend(&f, "team", &sid, 30.0).await;
    let sub = budget_where(&f, "team", "60%", |b| b.percent == 60).await;
    let budget = sub.status.as_ref().unwrap().budget.clone().unwrap();
    assert_eq!(
        (budget.spent.as_str(), budget.currency.as_str(), budget.state),
        ("30.0", "usd", BudgetState::Warning)
    );
    assert_eq!(budget_condition(&sub), ("True".into(), "BudgetWarning".into()));
    let warned = f.wait_event("team", "BudgetWarning").await;
    assert!(warned.contains("50%"), "{warned}");

    spend(&f, "team", &sid, 45.0).await;
    budget_where(&f, "team", "90%", |b| b.percent == 90).await;
    spend(&f, "team", &sid, 55.0).await;
    let sub = budget_where(&f, "team", "Exceeded", |b| b.state == BudgetState::Exceeded).await;
    assert_eq!(budget_condition(&sub), ("False".into(), "BudgetExceeded".into()));
    let exceeded = f.wait_event("team", "BudgetExceeded").await;
    assert!(exceeded.contains("action is Alert"), "{exceeded}");
    let metrics = f.operator.as_ref().unwrap().metrics().await;
    let series = format!(
        "twilio_operator_subaccount_budget_ratio{{namespace=\"{}\",name=\"team\"}}",
        f.ns
    );
    assert_eq!(sample(&metrics, &series), Some(1.1), "{metrics}");

    // Another look in the same month announces nothing again.
    spend(&f, "team", &sid, 56.0).await;
    budget_where(&f, "team", "a new read", |b| b.spent == "56.0").await;
    assert_eq!(
        count_events(&f, "team", "BudgetWarning").await,
        2,
        "50% and 80%, once each"
    );
    assert_eq!(count_events(&f, "team", "BudgetExceeded").await, 1);

    // A new month at Twilio: spend starts from zero, and thresholds are announced again.
    let period = new_month(&f, "team").await;
    budget_where(&f, "team", "the new month", |b| {
        b.period == period && b.state == BudgetState::Ok
    })
    .await;
    spend(&f, "team", &sid, 45.0).await;
    budget_where(&f, "team", "90% again", |b| b.percent == 90 && b.period == period).await;
    let deadline = Instant::now() + WAIT;
    while count_events(&f, "team", "BudgetWarning").await < 4 {
        assert!(Instant::now() < deadline, "{:?}", f.events("team").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert_eq!(twilio_status(&f, &sid).await, "active", "Alert never suspends");
    assert_eq!(
        f.emu.calls("api.UpdateAccount").await,
        0,
        "nothing was asked of Twilio but reads"
    );
    f.emu.assert_contract_clean().await;
}

#[tokio::test]
async fn suspend_stops_the_spend_until_a_higher_limit_or_the_next_month_and_never_overrides_the_spec() {
    let f = Fixture::new("budget-suspend", &[]).await;
    create(
        &f,
        "team",
        json!({"budget": {"monthly": "20", "action": "Suspend"}}),
    )
    .await;
    let sid = sid(&budget_where(&f, "team", "budget Ok", |b| b.state == BudgetState::Ok).await);

    spend(&f, "team", &sid, 25.0).await;
    let sub = budget_where(&f, "team", "suspended by the budget", |b| b.suspended_by_budget).await;
    let st = sub.status.as_ref().unwrap();
    assert_eq!(st.twilio_status.as_deref(), Some("suspended"));
    assert_eq!(twilio_status(&f, &sid).await, "suspended");
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("budget"), "{}", ready.message);
    let note = f.wait_event("team", "BudgetSuspended").await;
    assert!(note.contains(&sid), "{note}");
    // A key living in it is told what to change: the limit, or the month; not spec.state.
    f.create("inside", json!({"subaccountRef": {"name": "team"}}))
        .await;
    let key = f.reason("inside", "SubaccountSuspended").await;
    let message = &key.status.unwrap().conditions[0].message;
    assert!(
        message.contains("budget")
            && message.contains("spec.budget.monthly")
            && !message.contains("spec.state"),
        "{message}"
    );

    // Raising the limit above the spend lifts the suspension.
    edit(&f, "team", json!({"budget": {"monthly": "30"}})).await;
    budget_where(&f, "team", "reactivated", |b| !b.suspended_by_budget).await;
    assert_eq!(twilio_status(&f, &sid).await, "active");
    f.wait_event("team", "BudgetReactivated").await;

    // Spend past the new limit suspends again; the next month reactivates.
    spend(&f, "team", &sid, 31.0).await;
    budget_where(&f, "team", "suspended again", |b| b.suspended_by_budget).await;
    let period = new_month(&f, "team").await;
    budget_where(&f, "team", "the new month", |b| {
        b.period == period && !b.suspended_by_budget
    })
    .await;
    assert_eq!(twilio_status(&f, &sid).await, "active");

    // A subaccount the spec suspends stays suspended, whatever the budget says.
    spend(&f, "team", &sid, 40.0).await;
    budget_where(&f, "team", "suspended by the budget", |b| b.suspended_by_budget).await;
    edit(&f, "team", json!({"state": "Suspended"})).await;
    let sub = budget_where(&f, "team", "suspended by the spec", |b| !b.suspended_by_budget).await;
    assert_eq!(sub.status.unwrap().twilio_status.as_deref(), Some("suspended"));
    let period = new_month(&f, "team").await;
    budget_where(&f, "team", "the month after", |b| {
        b.period == period && b.state == BudgetState::Ok
    })
    .await;
    assert_eq!(
        twilio_status(&f, &sid).await,
        "suspended",
        "the budget never reactivates what spec.state suspends"
    );
    f.emu.assert_contract_clean().await;
}

/// Starts the operator of `f` with its usage-trigger endpoint public at a local port.
fn with_webhook(f: &mut Fixture) -> String {
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let address = format!("127.0.0.1:{port}");
    f.restart_operator(&[
        ("BUDGET_WEBHOOK_URL", url.as_str()),
        ("WEBHOOK_ADDRESS", address.as_str()),
    ]);
    url
}

#[tokio::test]
async fn trigger_callbacks_act_within_seconds_and_forged_ones_change_nothing() {
    let mut f = Fixture::new("budget-trigger", &[]).await;
    let base = with_webhook(&mut f);
    create(
        &f,
        "team",
        json!({"budget": {"monthly": "10", "warnAt": [50], "action": "Suspend"}}),
    )
    .await;
    let sub = budget_where(&f, "team", "two triggers", |b| b.triggers.len() == 2).await;
    let sid = sid(&sub);
    let callback = format!("{base}/usage-triggers/{}/team", f.ns);
    let at_twilio = triggers(&f, &sid).await;
    assert_eq!(at_twilio.len(), 2, "{at_twilio:?}");
    let mut values: Vec<&str> = at_twilio
        .iter()
        .map(|t| t["trigger_value"].as_str().unwrap())
        .collect();
    values.sort_unstable();
    assert_eq!(values, vec!["10", "5"]);
    assert!(
        at_twilio
            .iter()
            .all(|t| t["callback_url"] == callback.as_str() && t["recurring"] == "monthly")
    );
    f.wait_event("team", "BudgetTriggersSet").await;

    // The real thing: spend crosses the limit, Twilio calls, the operator acts within seconds.
    let started = Instant::now();
    f.emu.change_account(&sid, json!({"usage_total": 12})).await;
    let suspended = budget_where(&f, "team", "suspended through the callback", |b| {
        b.suspended_by_budget
    })
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(twilio_status(&f, &sid).await, "suspended");
    let answered = f.emu.state().await["callbacks"].clone();
    assert!(answered["204"].as_u64().unwrap_or(0) >= 1, "{answered}");

    // Forgeries: unsigned, signed with another token, signed with the parent's, oversized.
    let token = f
        .emu
        .client()
        .fetch_account(&f.emu.main_credentials(), &sid)
        .await
        .unwrap()
        .auth_token
        .unwrap();
    let params = vec![
        ("AccountSid".to_owned(), sid.clone()),
        (
            "UsageTriggerSid".to_owned(),
            "UT00000000000000000000000000000000".to_owned(),
        ),
        ("CurrentValue".to_owned(), "10".to_owned()),
    ];
    // No connection is reused: the endpoint closes one after refusing an oversized body, and a
    // later request sent on it would fail with a broken pipe instead of getting its answer.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let post = |signature: Option<String>, body: String| {
        let mut request = http
            .post(&callback)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(s) = signature {
            request = request.header("X-Twilio-Signature", s);
        }
        request.send()
    };
    let form = serde_urlencoded::to_string(&params).unwrap();
    let sign = |token: &str| twilio_operator::webhook::signature(token, &callback, &params);
    let reads = || f.emu.calls("api.ListUsageRecordThisMonth");
    let reads_before = reads().await;
    let read_at = suspended
        .status
        .as_ref()
        .unwrap()
        .budget
        .as_ref()
        .unwrap()
        .observed_at
        .clone();
    let forged = [
        None,
        Some(sign("00000000000000000000000000000000")),
        Some(sign(support::emulator::MAIN_TOKEN)),
        Some("bm90IGEgc2lnbmF0dXJl".to_owned()),
    ];
    for signature in forged {
        let status = post(signature.clone(), form.clone()).await.unwrap().status();
        assert_eq!(status, 403, "{signature:?}");
    }
    // Genuinely signed, but about another object: a tenant signing with its own token cannot
    // wake somebody else's.
    let elsewhere = format!("{base}/usage-triggers/{}/other", f.ns);
    let status = http
        .post(&elsewhere)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header(
            "X-Twilio-Signature",
            twilio_operator::webhook::signature(
                secrecy::ExposeSecret::expose_secret(&token),
                &elsewhere,
                &params,
            ),
        )
        .body(form.clone())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);
    let big = post(
        Some(sign(secrecy::ExposeSecret::expose_secret(&token))),
        "A".repeat(64 * 1024),
    )
    .await
    .unwrap()
    .status();
    assert_eq!(big, 413);
    // A flood of forgeries, and of replays of one genuine call.
    let genuine = sign(secrecy::ExposeSecret::expose_secret(&token));
    let flood = (0..200).map(|i| {
        let signature = if i % 2 == 0 {
            Some(genuine.clone())
        } else {
            Some(sign("forged"))
        };
        post(signature, form.clone())
    });
    // 32 at once, as a busy Twilio might; the endpoint serves 64 and queues the rest.
    let answers: Vec<_> = futures::stream::iter(flood).buffer_unordered(32).collect().await;
    let (accepted, refused) =
        answers
            .iter()
            .fold((0, 0), |(a, r), x| match x.as_ref().unwrap().status().as_u16() {
                204 => (a + 1, r),
                403 => (a, r + 1),
                other => panic!("unexpected answer {other}"),
            });
    assert_eq!((accepted, refused), (100, 100));
    // The replays are acted on once, when the spacing after the callback's read allows.
    budget_where(&f, "team", "read again after the replays", |b| {
        b.observed_at != read_at
    })
    .await;
    let extra = reads().await - reads_before;
    assert!(extra <= 2, "a flood of 200 calls cost {extra} usage reads");
    let status = subs(&f).get("team").await.unwrap().status.unwrap();
    assert!(
        status.budget.unwrap().suspended_by_budget,
        "no call changed anything"
    );
    assert_eq!(twilio_status(&f, &sid).await, "suspended");

    // A restart confirms the triggers once, and makes none again.
    let creates = f.emu.calls("api.CreateUsageTrigger").await;
    f.restart_operator(&[
        ("BUDGET_WEBHOOK_URL", base.as_str()),
        ("WEBHOOK_ADDRESS", base.trim_start_matches("http://")),
    ]);
    look(&f, "team").await;
    f.emu
        .wait_calls(
            "api.ListUsageTrigger",
            2,
            "the restarted operator never confirmed the triggers",
        )
        .await;
    assert_eq!(f.emu.calls("api.CreateUsageTrigger").await, creates);
    assert_eq!(triggers(&f, &sid).await.len(), 2);

    // A new public URL repoints the triggers; none is made again.
    let moved = with_webhook(&mut f);
    look(&f, "team").await;
    budget_where(&f, "team", "triggers at the new URL", |b| {
        b.triggers.len() == 2 && b.triggers.iter().all(|t| t.callback_url.starts_with(&moved))
    })
    .await;
    let at_twilio = triggers(&f, &sid).await;
    assert_eq!(at_twilio.len(), 2, "{at_twilio:?}");
    assert!(
        at_twilio
            .iter()
            .all(|t| t["callback_url"].as_str().unwrap().starts_with(&moved))
    );
    assert_eq!(f.emu.calls("api.UpdateUsageTrigger").await, 2);
    assert_eq!(f.emu.calls("api.CreateUsageTrigger").await, creates);

    // Deleting the object removes its triggers at Twilio.
    subs(&f).delete("team", &DeleteParams::default()).await.unwrap();
    wait_gone(&subs(&f), "team", WAIT).await;
    assert!(triggers(&f, &sid).await.is_empty());
    f.emu.assert_contract_clean().await;
}

#[tokio::test]
async fn the_account_policy_can_require_a_budget_cap_it_and_insist_on_suspend() {
    let cp = support::cluster();
    let ns = cp.namespace("budget-policy").await;
    cp.apply_account(
        &format!("{ns}-budgeted"),
        json!({
            "credentials": {"fromEnvironment": true},
            "namespaces": {"names": [ns]},
            "subaccounts": {"budget": {"required": true, "maxMonthly": "100.00", "actions": ["Suspend"]}},
        }),
    )
    .await;
    let emu = support::emulator::Emulator::start(&[]);
    let _operator = support::operator::Operator::start(cp, &emu, &ns, &[]);
    let tenant = cp.tenant(&ns).await;
    let api: Api<TwilioSubaccount> = Api::namespaced(tenant, &ns);
    let account = json!({"name": format!("{ns}-budgeted")});
    let apply = |spec: Value| {
        let api = api.clone();
        async move {
            let sub = json!({
                "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount",
                "metadata": {"name": "team"}, "spec": spec,
            });
            api.patch("team", &PatchParams::apply("tenant").force(), &Patch::Apply(&sub))
                .await
                .expect("the tenant may write its TwilioSubaccount")
        }
    };
    let refused = |what: &'static str| {
        let api = api.clone();
        async move {
            let sub = wait_for(&api, "team", WAIT, what, |s: &TwilioSubaccount| {
                s.status.as_ref().is_some_and(|st| {
                    st.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.reason == "NotPermitted" && c.message.contains(what))
                })
            })
            .await;
            sub.status.unwrap()
        }
    };
    apply(json!({"accountRef": account})).await;
    refused("requires spec.budget").await;
    apply(json!({"accountRef": account, "budget": {"monthly": "500", "action": "Suspend"}})).await;
    refused("maxMonthly").await;
    apply(json!({"accountRef": account, "budget": {"monthly": "100"}})).await;
    let st = refused("spec.budget.action Alert").await;
    assert!(st.sid.is_none());
    let subaccounts = emu.state().await["accounts"].as_array().unwrap().len();
    assert_eq!(subaccounts, 1, "nothing was created at Twilio while refused");
    apply(json!({"accountRef": account, "budget": {"monthly": "100", "action": "Suspend"}})).await;
    let sub = wait_for(&api, "team", WAIT, "Ready", |s: &TwilioSubaccount| {
        s.status
            .as_ref()
            .is_some_and(|st| is_ready(&st.conditions) && st.budget.is_some())
    })
    .await;
    let sid = sub.status.unwrap().sid.expect("a subaccount");
    // Removing the budget afterwards is refused, and does not lift the account's limit: the
    // subaccount is held to maxMonthly with Suspend meanwhile.
    apply(json!({"accountRef": account})).await;
    let st = refused("requires spec.budget").await;
    assert!(
        st.conditions
            .iter()
            .any(|c| c.message.contains("held to a budget of 100.00"))
    );
    emu.change_account(&sid, json!({"usage_total": 150})).await;
    let tenant_api = api.clone();
    tenant_api
        .patch(
            "team",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"example.com/look": "1"}}})),
        )
        .await
        .expect("the tenant may annotate");
    let held = wait_for(
        &api,
        "team",
        WAIT,
        "suspended by the imposed budget",
        support::operator::suspended_by_budget,
    )
    .await;
    assert_eq!(held.status.unwrap().twilio_status.as_deref(), Some("suspended"));
    api.delete("team", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "team", WAIT).await;
}

/// Whether the Ready condition reports a template the operator cannot render.
fn template_invalid(s: &TwilioSubaccount) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "TemplateInvalid")
    })
}

/// A subaccount "team" with a budget of 20 (action Suspend), Ready and within it, then edited
/// to a template the schema admits but the operator cannot render, plus `also` in its spec;
/// returns its SID once the operator reports the template. The hold to the budget runs before
/// a pass reports the spec, so by then that pass's hold is over.
async fn budgeted_then_unusable(f: &Fixture, also: Value) -> String {
    create(
        f,
        "team",
        json!({"secret": {"name": "team-twilio"}, "budget": {"monthly": "20", "action": "Suspend"}}),
    )
    .await;
    let sid = sid(&budget_where(f, "team", "budget Ok", |b| b.state == BudgetState::Ok).await);
    let mut spec = json!({"secret": {"template": {"data": {"X": "{{ nope }}"}}}});
    spec.as_object_mut()
        .unwrap()
        .extend(also.as_object().cloned().unwrap_or_default());
    edit(f, "team", spec).await;
    wait_for(&subs(f), "team", WAIT, "TemplateInvalid", template_invalid).await;
    sid
}

#[tokio::test]
async fn a_spec_that_cannot_be_used_still_holds_the_subaccount_to_its_budget() {
    let f = Fixture::new("budget-broken", &[]).await;
    let sid = budgeted_then_unusable(&f, json!({})).await;
    f.emu.change_account(&sid, json!({"usage_total": 25})).await;
    look(&f, "team").await;
    let held = wait_for(
        &subs(&f),
        "team",
        WAIT,
        "suspended by its budget",
        |s: &TwilioSubaccount| {
            template_invalid(s)
                && s.status
                    .as_ref()
                    .and_then(|st| st.budget.as_ref())
                    .is_some_and(|b| b.suspended_by_budget)
        },
    )
    .await;
    assert_eq!(held.status.unwrap().twilio_status.as_deref(), Some("suspended"));
    assert_eq!(twilio_status(&f, &sid).await, "suspended");
    f.wait_event("team", "BudgetSuspended").await;
}

#[tokio::test]
async fn a_spec_that_cannot_be_used_suspends_nothing_its_budget_does_not() {
    let f = Fixture::new("budget-broken-state", &[]).await;
    // Only the budget holds while the spec cannot be used, and this one is far from its limit:
    // spec.state Suspended, edited at the same time, is not applied.
    let sid = budgeted_then_unusable(&f, json!({"state": "Suspended"})).await;
    assert_eq!(twilio_status(&f, &sid).await, "active");
    assert_eq!(count_events(&f, "team", "BudgetSuspended").await, 0);
}
