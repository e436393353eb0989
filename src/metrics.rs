//! The operator's Prometheus metrics.
//!
//! Contract: every series is labelled with kinds, operations, statuses, causes and object
//! names only; no value derived from a secret is ever recorded. Key ages are computed at scrape
//! time from the recorded creation times, so they are never stale. The per-object series (Ready,
//! key age and next rotation) are kept as one small record per object and written out at each
//! scrape, so ten thousand objects cost ten thousand records, not three labelled series each;
//! a record goes with its object.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: String,
    result: &'static str,
    /// The Ready condition's reason the pass set, or RequestFailed.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TwilioLabels {
    operation: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationLabels {
    kind: &'static str,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    namespace: String,
    name: String,
    currency: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// A key's creation and next rotation, in Unix seconds.
#[derive(Debug, Clone, Copy)]
struct KeyTimes {
    created: f64,
    next_rotation: Option<f64>,
}

/// An object, as its series name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ObjectId {
    kind: &'static str,
    namespace: String,
    name: String,
}

impl ObjectId {
    fn new(kind: &'static str, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// What an object's series say.
#[derive(Debug, Default)]
struct ObjectRecord {
    ready: Option<bool>,
    key: Option<KeyTimes>,
}

/// The per-object series: one record per object, written out at each scrape.
#[derive(Debug, Default)]
struct Objects {
    records: Mutex<HashMap<ObjectId, ObjectRecord>>,
    /// The time (Unix seconds, as f64 bits) key ages are computed at, set before each scrape.
    scraped_at: AtomicU64,
}

impl Objects {
    fn update(&self, id: ObjectId, change: impl FnOnce(&mut ObjectRecord)) {
        change(self.records.lock().expect("object series").entry(id).or_default());
    }
}

impl Collector for Objects {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = f64::from_bits(self.scraped_at.load(Ordering::Relaxed));
        let records = self.records.lock().expect("object series");
        let mut ready = encoder.encode_descriptor(
            "ready",
            "1 while an object's Ready condition is True, else 0",
            None,
            MetricType::Gauge,
        )?;
        for (id, record) in records.iter() {
            if let Some(is_ready) = record.ready {
                let labels = [
                    ("kind", id.kind),
                    ("namespace", &id.namespace),
                    ("name", &id.name),
                ];
                ConstGauge::new(i64::from(is_ready)).encode(ready.encode_family(&labels)?)?;
            }
        }
        let keys = || records.iter().filter_map(|(id, r)| Some((id, r.key?)));
        let mut age = encoder.encode_descriptor(
            "api_key_age_seconds",
            "Age of each TwilioApiKey's current key",
            None,
            MetricType::Gauge,
        )?;
        for (id, times) in keys() {
            ConstGauge::new(now - times.created).encode(age.encode_family(&key_labels(id))?)?;
        }
        let mut next = encoder.encode_descriptor(
            "api_key_next_rotation_timestamp_seconds",
            "When each TwilioApiKey rotates next (Unix time)",
            None,
            MetricType::Gauge,
        )?;
        for (id, times) in keys() {
            if let Some(at) = times.next_rotation {
                ConstGauge::new(at).encode(next.encode_family(&key_labels(id))?)?;
            }
        }
        Ok(())
    }
}

fn key_labels(id: &ObjectId) -> [(&str, &str); 2] {
    [("namespace", &id.namespace), ("name", &id.name)]
}

/// The operator's Prometheus registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    objects: Arc<Objects>,
    reconcile_duration: Family<KindLabels, Histogram>,
    twilio_requests: Family<TwilioLabels, Counter>,
    twilio_rate_limited: Family<OperationLabels, Counter>,
    rotations: Family<RotationLabels, Counter>,
    workload_restarts: Family<KindLabels, Counter>,
    usage: Family<UsageLabels, FloatGauge>,
    budget_ratio: Family<ObjectLabels, FloatGauge>,
    voice_countries: Family<ObjectLabels, Gauge>,
    voice_high_risk: Family<ObjectLabels, Gauge>,
    dialing_repairs: Family<ObjectLabels, Counter>,
    account_balance: Family<AccountLabels, FloatGauge>,
    leader: Gauge,
    /// The currency of each subaccount's usage series, to find the series again.
    usage_currency: Mutex<BTreeMap<(String, String), String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("twilio_operator");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The operator's version; always 1", build_info);
        let reconciles = Family::default();
        registry.register(
            "reconciles",
            "Reconciles by kind, result and the Ready reason they set (RequestFailed: a Kubernetes call failed)",
            reconciles.clone(),
        );
        let objects = Arc::new(Objects::default());
        registry.register_collector(Box::new(objects.clone()));
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let twilio_requests = Family::default();
        registry.register(
            "twilio_requests",
            "Twilio API requests by operation and HTTP status (0: no answer)",
            twilio_requests.clone(),
        );
        let twilio_rate_limited = Family::default();
        registry.register(
            "twilio_rate_limited",
            "Twilio answers of 429 / 20429 by operation",
            twilio_rate_limited.clone(),
        );
        let rotations = Family::default();
        registry.register(
            "rotations",
            "New credentials issued, by kind and cause",
            rotations.clone(),
        );
        let workload_restarts = Family::default();
        registry.register(
            "workload_restarts",
            "Workloads in restartWorkloads restarted for a new key, by kind",
            workload_restarts.clone(),
        );
        let usage = Family::default();
        registry.register(
            "subaccount_month_to_date_usage",
            "Month-to-date spend of each TwilioSubaccount",
            usage.clone(),
        );
        let budget_ratio = Family::default();
        registry.register(
            "subaccount_budget_ratio",
            "Month-to-date spend of each TwilioSubaccount with spec.budget, as a fraction of spec.budget.monthly (1 is the limit)",
            budget_ratio.clone(),
        );
        let voice_countries = Family::default();
        registry.register(
            "subaccount_voice_countries_enabled",
            "Countries each TwilioSubaccount with dialing permissions may call",
            voice_countries.clone(),
        );
        let voice_high_risk = Family::default();
        registry.register(
            "subaccount_voice_high_risk_countries",
            "Countries in which each TwilioSubaccount with dialing permissions may call a high-risk range",
            voice_high_risk.clone(),
        );
        let dialing_repairs = Family::default();
        registry.register(
            "subaccount_dialing_permission_repairs",
            "Changes made at Twilio to a TwilioSubaccount's dialing permissions that the operator put back",
            dialing_repairs.clone(),
        );
        let account_balance = Family::default();
        registry.register(
            "account_balance",
            "Each TwilioAccount's balance as Twilio reports it, in its currency",
            account_balance.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controllers (it leads, or no election is held), else 0",
            leader.clone(),
        );
        Self {
            budget_ratio,
            voice_countries,
            voice_high_risk,
            dialing_repairs,
            account_balance,
            leader,
            registry,
            reconciles,
            objects,
            reconcile_duration,
            twilio_requests,
            twilio_rate_limited,
            rotations,
            workload_restarts,
            usage,
            usage_currency: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Records whether this replica runs the controllers.
    pub fn leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Times one reconcile of `kind`, counting it when it failed on a Kubernetes call before it
    /// could set the Ready condition (the passes that set it are counted by [`Metrics::outcome`]).
    pub fn reconciled(&self, kind: &'static str, failed: bool, took: Duration) {
        if failed {
            self.count(kind, "error", "RequestFailed");
        }
        self.reconcile_duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    /// Records the Ready condition a pass over an object set: the object's Ready gauge, and the
    /// pass counted by the condition's reason.
    pub fn outcome(&self, kind: &'static str, namespace: &str, name: &str, ready: bool, reason: &str) {
        self.count(kind, if ready { "success" } else { "error" }, reason);
        self.objects
            .update(ObjectId::new(kind, namespace, name), |r| r.ready = Some(ready));
    }

    fn count(&self, kind: &str, result: &'static str, reason: &str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_owned(),
                result,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one Twilio request by operation and HTTP status (0: no answer).
    pub fn twilio_request(&self, operation: &'static str, status: u16) {
        self.twilio_requests
            .get_or_create(&TwilioLabels {
                operation,
                status: status.to_string(),
            })
            .inc();
        if status == 429 {
            self.twilio_rate_limited
                .get_or_create(&OperationLabels { operation })
                .inc();
        }
    }

    /// Counts new credentials issued for `kind`, by cause.
    pub fn rotated(&self, kind: &'static str, cause: &'static str) {
        self.rotations
            .get_or_create(&RotationLabels { kind, cause })
            .inc();
    }

    /// Counts a workload of `kind` restarted for a new key.
    pub fn restarted(&self, kind: &'static str) {
        self.workload_restarts.get_or_create(&KindLabels { kind }).inc();
    }

    /// Records a key's creation and next rotation (Unix seconds).
    pub fn key(&self, namespace: &str, name: &str, created: f64, next_rotation: Option<f64>) {
        let times = KeyTimes {
            created,
            next_rotation,
        };
        self.objects
            .update(ObjectId::new("TwilioApiKey", namespace, name), |r| {
                r.key = Some(times)
            });
    }

    /// Drops the series of an object of `kind` that is gone.
    pub fn forget(&self, kind: &'static str, namespace: &str, name: &str) {
        let id = ObjectId::new(kind, namespace, name);
        self.objects.records.lock().expect("object series").remove(&id);
    }

    /// Records a subaccount's month-to-date spend.
    pub fn usage(&self, namespace: &str, name: &str, currency: &str, month_to_date: f64) {
        let id = (namespace.to_owned(), name.to_owned());
        let previous = self
            .usage_currency
            .lock()
            .expect("usage metrics")
            .insert(id, currency.to_owned());
        if let Some(previous) = previous.filter(|p| p != currency) {
            self.usage.remove(&usage_labels(namespace, name, &previous));
        }
        self.usage
            .get_or_create(&usage_labels(namespace, name, currency))
            .set(month_to_date);
    }

    /// Sets a subaccount's spend against its budget; `None` drops the series (no budget).
    pub fn budget_ratio(&self, namespace: &str, name: &str, ratio: Option<f64>) {
        let labels = ObjectLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        match ratio {
            Some(r) => {
                self.budget_ratio.get_or_create(&labels).set(r);
            }
            None => {
                self.budget_ratio.remove(&labels);
            }
        }
    }

    /// Sets how many countries a subaccount may call, and in how many a high-risk range;
    /// `None` drops its voice series, the repairs counted included (no dialing permissions
    /// kept).
    pub fn voice(&self, namespace: &str, name: &str, counts: Option<(u32, u32)>) {
        let labels = ObjectLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        match counts {
            Some((enabled, high_risk)) => {
                self.voice_countries
                    .get_or_create(&labels)
                    .set(i64::from(enabled));
                self.voice_high_risk
                    .get_or_create(&labels)
                    .set(i64::from(high_risk));
            }
            None => {
                self.voice_countries.remove(&labels);
                self.voice_high_risk.remove(&labels);
                self.dialing_repairs.remove(&labels);
            }
        }
    }

    /// Counts a change to a subaccount's dialing permissions made at Twilio and put back.
    pub fn dialing_repaired(&self, namespace: &str, name: &str) {
        let labels = ObjectLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.dialing_repairs.get_or_create(&labels).inc();
    }

    /// Sets a TwilioAccount's balance; `None` drops the series (unknown, or the account gone).
    pub fn account_balance(&self, account: &str, balance: Option<f64>) {
        let labels = AccountLabels {
            account: account.into(),
        };
        match balance {
            Some(amount) => {
                self.account_balance.get_or_create(&labels).set(amount);
            }
            None => {
                self.account_balance.remove(&labels);
            }
        }
    }

    /// Drops the series of a subaccount whose object is gone.
    pub fn forget_subaccount(&self, namespace: &str, name: &str) {
        self.budget_ratio(namespace, name, None);
        self.voice(namespace, name, None);
        let id = (namespace.to_owned(), name.to_owned());
        let currency = self.usage_currency.lock().expect("usage metrics").remove(&id);
        if let Some(currency) = currency {
            self.usage.remove(&usage_labels(namespace, name, &currency));
        }
        self.forget("TwilioSubaccount", namespace, name);
    }

    /// Drops every per-object series, when this process stops reconciling (a lost lease).
    pub fn forget_objects(&self) {
        self.objects.records.lock().expect("object series").clear();
        self.usage_currency.lock().expect("usage metrics").clear();
        self.usage.clear();
        self.budget_ratio.clear();
        self.voice_countries.clear();
        self.voice_high_risk.clear();
        self.dialing_repairs.clear();
        self.account_balance.clear();
    }

    /// The OpenMetrics text of every series, key ages as of `now` (Unix seconds).
    pub fn render(&self, now: f64) -> String {
        self.objects.scraped_at.store(now.to_bits(), Ordering::Relaxed);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The labels of a subaccount's usage series.
fn usage_labels(namespace: &str, name: &str, currency: &str) -> UsageLabels {
    UsageLabels {
        namespace: namespace.into(),
        name: name.into(),
        currency: currency.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_series() {
        let m = Metrics::default();
        m.reconciled("TwilioApiKey", false, Duration::from_millis(20));
        m.reconciled("TwilioApiKey", true, Duration::from_millis(20));
        m.outcome(
            "TwilioApiKey",
            "team-a",
            "checkout",
            false,
            "AuthenticationFailed",
        );
        m.outcome("TwilioSubaccount", "team-a", "tenant", true, "Ready");
        m.twilio_request("CreateNewKey", 429);
        m.rotated("TwilioApiKey", "Scheduled");
        m.key("team-a", "checkout", 1000.0, Some(5000.0));
        m.usage("team-a", "tenant", "usd", 12.5);
        m.voice("team-a", "tenant", Some((2, 1)));
        m.dialing_repaired("team-a", "tenant");
        m.account_balance("default", Some(42.5));
        let text = m.render(1600.0);
        for series in [
            r#"twilio_operator_build_info{version="0.1.0"} 1"#,
            r#"twilio_operator_reconciles_total{kind="TwilioApiKey",result="error",reason="RequestFailed"} 1"#,
            r#"twilio_operator_reconciles_total{kind="TwilioApiKey",result="error",reason="AuthenticationFailed"} 1"#,
            r#"twilio_operator_reconciles_total{kind="TwilioSubaccount",result="success",reason="Ready"} 1"#,
            r#"twilio_operator_ready{kind="TwilioApiKey",namespace="team-a",name="checkout"} 0"#,
            r#"twilio_operator_ready{kind="TwilioSubaccount",namespace="team-a",name="tenant"} 1"#,
            r#"twilio_operator_twilio_requests_total{operation="CreateNewKey",status="429"} 1"#,
            r#"twilio_operator_twilio_rate_limited_total{operation="CreateNewKey"} 1"#,
            r#"twilio_operator_rotations_total{kind="TwilioApiKey",cause="Scheduled"} 1"#,
            r#"twilio_operator_api_key_age_seconds{namespace="team-a",name="checkout"} 600.0"#,
            r#"twilio_operator_api_key_next_rotation_timestamp_seconds{namespace="team-a",name="checkout"} 5000.0"#,
            r#"twilio_operator_subaccount_month_to_date_usage{namespace="team-a",name="tenant",currency="usd"} 12.5"#,
            r#"twilio_operator_subaccount_voice_countries_enabled{namespace="team-a",name="tenant"} 2"#,
            r#"twilio_operator_subaccount_voice_high_risk_countries{namespace="team-a",name="tenant"} 1"#,
            r#"twilio_operator_subaccount_dialing_permission_repairs_total{namespace="team-a",name="tenant"} 1"#,
            r#"twilio_operator_account_balance{account="default"} 42.5"#,
        ] {
            assert!(text.contains(series), "missing {series} in:\n{text}");
        }
        m.forget("TwilioApiKey", "team-a", "checkout");
        assert!(!m.render(1700.0).contains(r#"name="checkout""#));
        m.usage("team-a", "tenant", "eur", 3.0);
        assert!(!m.render(1700.0).contains("usd"), "one series per subaccount");
        m.forget_subaccount("team-a", "tenant");
        assert!(!m.render(1700.0).contains(r#"name="tenant""#));
        m.key("team-a", "other", 1000.0, None);
        m.outcome("TwilioApiKey", "team-a", "other", true, "Ready");
        m.forget_objects();
        assert!(
            !m.render(1700.0).contains("team-a"),
            "no per-object series after a lost lease"
        );
    }
}
