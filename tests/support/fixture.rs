//! A test's world: a namespace on the shared control plane, its own emulator and its own
//! operator process watching that namespace, with helpers to drive and inspect them as a user
//! would.

use super::emulator::Emulator;
use super::operator::{Operator, wait_for};
use super::{ControlPlane, cluster};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;
use twilio_operator::api::{TwilioApiKey, TwilioSubaccount};
use twilio_operator::conditions::is_ready;
use twilio_operator::twilio::{Credentials, ErrorClass};

pub const WAIT: Duration = Duration::from_secs(60);

pub struct Fixture {
    pub cp: &'static ControlPlane,
    pub emu: Emulator,
    pub ns: String,
    pub operator: Option<Operator>,
    pub client: Client,
}

impl Fixture {
    pub async fn new(prefix: &str, emulator_flags: &[&str]) -> Self {
        let cp = cluster();
        let ns = cp.tenant_namespace(prefix).await;
        let emu = Emulator::start(emulator_flags);
        let operator = Some(Operator::start(cp, &emu, &ns, &[]));
        Self {
            cp,
            emu,
            ns,
            operator,
            client: cp.admin(),
        }
    }

    pub fn keys(&self) -> Api<TwilioApiKey> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn subaccounts(&self) -> Api<TwilioSubaccount> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates TwilioSubaccount `name` with `spec`, as a user would.
    pub async fn create_subaccount(&self, name: &str, spec: Value) -> TwilioSubaccount {
        let sub: TwilioSubaccount = serde_json::from_value(json!({
            "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioSubaccount", "metadata": {"name": name}, "spec": spec,
        }))
        .expect("a valid TwilioSubaccount");
        self.subaccounts()
            .create(&PostParams::default(), &sub)
            .await
            .expect("create TwilioSubaccount")
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn restart_operator(&mut self, env: &[(&str, &str)]) {
        self.operator = None;
        self.operator = Some(Operator::start(self.cp, &self.emu, &self.ns, env));
    }

    pub fn operator_log(&self) -> String {
        self.operator.as_ref().map(Operator::log_tail).unwrap_or_default()
    }

    pub async fn create(&self, name: &str, spec: Value) -> TwilioApiKey {
        self.create_with(name, json!({}), spec).await
    }

    pub async fn create_with(&self, name: &str, annotations: Value, spec: Value) -> TwilioApiKey {
        let key: TwilioApiKey = serde_json::from_value(json!({
            "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
            "metadata": {"name": name, "annotations": annotations}, "spec": spec,
        }))
        .expect("a valid TwilioApiKey");
        self.keys()
            .create(&PostParams::default(), &key)
            .await
            .expect("create TwilioApiKey")
    }

    /// Waits until the key is Ready for its current generation, with a key SID.
    pub async fn ready(&self, name: &str) -> TwilioApiKey {
        self.ready_where(name, "Ready", |_| true).await
    }

    pub async fn ready_where(
        &self,
        name: &str,
        what: &str,
        extra: impl Fn(&TwilioApiKey) -> bool,
    ) -> TwilioApiKey {
        wait_for(&self.keys(), name, WAIT, what, |k: &TwilioApiKey| {
            k.status.as_ref().is_some_and(|s| {
                is_ready(&s.conditions)
                    && s.observed_generation == k.metadata.generation
                    && s.key_sid.is_some()
            }) && extra(k)
        })
        .await
    }

    pub async fn reason(&self, name: &str, reason: &str) -> TwilioApiKey {
        wait_for(&self.keys(), name, WAIT, reason, |k: &TwilioApiKey| {
            k.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == reason)
            })
        })
        .await
    }

    /// Credentials read from the key's Secret, as a pod would read them.
    pub async fn published(&self, secret: &str) -> Credentials {
        let secret = self.secrets().get(secret).await.expect("the Secret exists");
        let data = secret.data.unwrap_or_default();
        let get = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        Credentials::with_api_key(
            get("TWILIO_ACCOUNT_SID"),
            get("TWILIO_API_KEY"),
            SecretString::from(get("TWILIO_API_SECRET")),
        )
        .expect("valid credentials")
    }

    /// Whether credentials authenticate at the emulator (a balance read their account allows).
    pub async fn works(&self, creds: &Credentials) -> bool {
        match self.emu.client().fetch_balance(creds, creds.account_sid()).await {
            Ok(_) => true,
            Err(e) if e.class() == ErrorClass::Credentials => false,
            Err(e) => panic!("unexpected Twilio error: {e}"),
        }
    }

    /// Keys at the emulator whose friendly name carries this object's tag.
    pub async fn tagged(&self, key: &TwilioApiKey) -> Vec<String> {
        let tag = twilio_operator::tagging::tag(&key.uid().unwrap());
        self.emu.state().await["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["friendly_name"].as_str().is_some_and(|n| n.ends_with(&tag)))
            .map(|k| k["sid"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await.expect("list events");
        list.items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect()
    }

    pub async fn wait_event(&self, name: &str, reason: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some((_, _, message)) = self.events(name).await.into_iter().find(|(_, r, _)| r == reason) {
                return message;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {reason} event for {name}: {:?}\n{}",
                self.events(name).await,
                self.operator_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Rewrites part of an object's status as if time had passed, until the operator acts on it:
    /// a pass already under way may write its own view over the first attempt.
    pub async fn time_travel<K>(&self, api: &Api<K>, name: &str, status: Value, acted: impl Fn(&K) -> bool)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
    {
        let patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
        for _ in 0..5 {
            api.patch_status(
                name,
                &PatchParams::apply("time-travel").force(),
                &Patch::Apply(&patch),
            )
            .await
            .expect("patch status");
            let cond = |obj: Option<&K>| obj.is_some_and(&acted);
            if let Ok(Ok(Some(_))) = tokio::time::timeout(
                Duration::from_secs(10),
                kube::runtime::wait::await_condition(api.clone(), name, cond),
            )
            .await
            {
                return;
            }
        }
        panic!(
            "the operator never acted on the changed status of {name}:\n{}",
            self.operator_log()
        );
    }

    pub async fn annotate(&self, name: &str, key: &str, value: &str) {
        self.keys()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .expect("annotate");
    }
}
