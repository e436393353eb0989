//! Figures for the closing notes, measured end to end: the real control plane, the emulator and
//! the operator process (release build). `cargo bench --bench operator` prints them; inside
//! `cargo test --all-targets` the same code runs as a cheap smoke run.
//!
//! For each size, the keys are applied while the operator is stopped, as after an upgrade or an
//! outage, and the operator is then started; the same for a rotation of every key. Each row
//! prints the time taken, the Twilio floor (Twilio calls × latency / concurrency), the
//! Kubernetes floor (the same writes as the operator made, as many of each kind, issued directly
//! at full concurrency in the same run), the ratio of the time to the larger floor, the Twilio
//! calls, apiserver writes and reads, and reconcile passes per object, the CPU seconds of each
//! process and how busy the machine was (during the floor too), when the first key, 10%, 50%,
//! 90% and all were done, and the operator's memory after.
//!
//! Parameters (environment): `BENCH_KEYS` (comma-separated sizes; default `1000,10000`),
//! `BENCH_FOREIGN_SECRETS` (unrelated 1 KiB Secrets in the namespace; default 30000),
//! `BENCH_LATENCY_MS` (added by the emulator to every call; default 150) and
//! `BENCH_CONCURRENCY` (the emulator's per-account limit, and the operator's; default 25);
//! `BENCH_OPERATOR_LOG` is the operator's `RUST_LOG` (default `warn`; its log is kept in the
//! control plane's directory); `BENCH_MAXIMAL` (default 1000) keys at every size cap, Ready, then
//! as many from a namespace no account admits, with the operator's memory against the chart's.

#[path = "../tests/support/mod.rs"]
mod support;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use support::emulator::Emulator;
use support::operator::{Operator, Resident};
use support::{ControlPlane, cluster};
use twilio_operator::api::TwilioApiKey;
use twilio_operator::conditions::is_ready;

/// How many requests the benchmark itself keeps in flight against the apiserver.
const CLIENT_CONCURRENCY: usize = 64;

struct Params {
    sizes: Vec<usize>,
    /// How many keys of the largest spec admission allows.
    maximal: usize,
    foreign_secrets: usize,
    latency_ms: u64,
    concurrency: usize,
}

impl Params {
    /// `cargo bench` passes `--bench`; without it this is the smoke run of the test command.
    fn from_env() -> Self {
        let full = std::env::args().any(|a| a == "--bench");
        let number = |name: &str, full_default: u64, smoke: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(if full { full_default } else { smoke })
        };
        let sizes = std::env::var("BENCH_KEYS")
            .ok()
            .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| if full { vec![1000, 10000] } else { vec![100] });
        Params {
            sizes,
            maximal: number("BENCH_MAXIMAL", 1000, 20) as usize,
            foreign_secrets: number("BENCH_FOREIGN_SECRETS", 30000, 500) as usize,
            latency_ms: number("BENCH_LATENCY_MS", 150, 20),
            concurrency: number("BENCH_CONCURRENCY", 25, 25) as usize,
        }
    }

    /// An emulator with this latency and concurrency, with room for `n` objects' keys.
    fn emulator(&self, n: usize) -> Emulator {
        let max_keys = (3 * n).max(1000).to_string();
        let (latency, limit) = (self.latency_ms.to_string(), self.concurrency.to_string());
        Emulator::start(&[
            "--max-keys",
            &max_keys,
            "--latency-ms",
            &latency,
            "--concurrency-limit",
            &limit,
        ])
    }

    /// The least time `calls` Twilio calls can take at this latency and concurrency.
    fn twilio_floor(&self, calls: u64) -> Duration {
        Duration::from_millis(calls * self.latency_ms) / self.concurrency as u32
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let params = Params::from_env();
    let cp = cluster();
    println!(
        "control plane started in {:.2}s; latency {} ms, concurrency {}, {} foreign Secrets per namespace",
        cp.startup.as_secs_f64(),
        params.latency_ms,
        params.concurrency,
        params.foreign_secrets
    );
    println!(
        "| work | measured | Twilio floor | Kubernetes floor | ratio | Twilio calls/object | apiserver writes/object | operator RSS after, settled |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &keys in &params.sizes {
        bench_size(cp, &params, keys).await;
    }
    if params.maximal > 0 {
        bench_maximal(cp, &params, params.maximal).await;
    }
}

/// The chart's default memory limit, which the largest objects must fit in at the documented
/// maximum count.
const CHART_MEMORY_LIMIT_MIB: f64 = 128.0;

/// A key whose spec is as large as admission allows: every size cap of the CRD filled, and
/// 16 KiB of annotations on the object, which the operator folds into a digest.
fn maximal_key(name: &str) -> TwilioApiKey {
    let template = format!("{{{{ apiKey }}}}:{{{{ apiSecret }}}}{}", "t".repeat(4096 - 40));
    let permissions: Vec<String> = (0..100)
        .map(|i| format!("/twilio/messaging/p{i:02}/{}", "x".repeat(60)))
        .collect();
    let annotations: serde_json::Map<String, Value> = (0..7)
        .map(|i| (format!("example.com/a{i:02}"), json!("a".repeat(250))))
        .collect();
    let labels: serde_json::Map<String, Value> = (0..16)
        .map(|i| (format!("example.com/l{i:02}"), json!("l".repeat(48))))
        .collect();
    let workloads: Vec<Value> = (0..32)
        .map(|i| json!({"kind": "Deployment", "name": format!("w{i:02}{}", "w".repeat(61))}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
        "metadata": {"name": name, "annotations": {"example.com/bulk": "b".repeat(16 * 1024)}},
        "spec": {
            "friendlyName": "f".repeat(64),
            "keyType": "Restricted",
            "permissions": permissions[..4096 / 82],
            "restartWorkloads": workloads,
            "rotation": {"every": "720h", "gracePeriod": "0s"},
            "secret": {
                "annotations": annotations,
                "labels": labels,
                "template": {"data": {"config": template}},
            },
        }
    }))
    .unwrap()
}

/// The worst case per object: `n` keys of the largest spec admission allows, Ready, then as
/// many again in a namespace no account admits. Prints the operator's memory after each,
/// against the chart's limit.
async fn bench_maximal(cp: &ControlPlane, params: &Params, n: usize) {
    let admitted = cp.tenant_namespace("bench-max").await;
    let refused = cp.namespace("bench-max-refused").await;
    let emu = params.emulator(n);
    let limit = params.concurrency.to_string();
    let env = [("RUST_LOG", "warn"), ("TWILIO_MAX_CONCURRENCY", limit.as_str())];
    let client = cp.admin();
    let (keys, strays): (Api<TwilioApiKey>, Api<TwilioApiKey>) = (
        Api::namespaced(client.clone(), &admitted),
        Api::namespaced(client, &refused),
    );
    for api in [&keys, &strays] {
        concurrently(0..n, |i| {
            let api = api.clone();
            async move {
                let key = maximal_key(&format!("m{i:05}"));
                api.create(&PostParams::default(), &key).await.unwrap();
            }
        })
        .await;
    }
    let reason = |k: &TwilioApiKey, wanted: &str| {
        k.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == wanted)
        })
    };
    let started = Instant::now();
    let operator = Operator::start(cp, &emu, &admitted, &env);
    wait_all(&keys, n, |k| reason(k, "Ready"), started).await;
    let alone = settled_memory(&operator).await;
    let took = started.elapsed();
    drop(operator);
    let operator = Operator::start(cp, &emu, &format!("{admitted},{refused}"), &env);
    wait_all(&strays, n, |k| reason(k, "NotPermitted"), Instant::now()).await;
    wait_all(&keys, n, |k| reason(k, "Ready"), Instant::now()).await;
    let both = settled_memory(&operator).await;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "largest specs: {n} keys Ready in {:.1} s, operator RSS {:.1} MiB; with {n} more from a namespace no account admits, {:.1} MiB ({:.1} KiB per refused object); peak {:.1} MiB; chart limit {CHART_MEMORY_LIMIT_MIB} MiB: {}",
        took.as_secs_f64(),
        mib(alone.total),
        mib(both.total),
        both.total.saturating_sub(alone.total) as f64 / n as f64,
        mib(both.peak),
        if mib(both.peak) < CHART_MEMORY_LIMIT_MIB {
            "holds"
        } else {
            "EXCEEDED"
        }
    );
}

/// The measurements of one piece of work by the operator.
struct Row {
    work: String,
    took: Duration,
    objects: usize,
    twilio_calls: u64,
    /// Twilio calls by operation, as the emulator counts them.
    twilio_operations: Value,
    writes: BTreeMap<String, u64>,
    /// Reads the apiserver served, by verb and resource.
    reads: BTreeMap<String, u64>,
    rss: Resident,
    /// Reconcile passes over keys, as the operator counts them.
    passes: f64,
    /// CPU seconds each process of the run spent on the work.
    cpu: BTreeMap<String, f64>,
    /// When the first key, a tenth, half, nine tenths and all of them were done.
    progress: Vec<Duration>,
}

impl Row {
    async fn print(&self, cp: &ControlPlane, params: &Params) {
        let writes: u64 = self.writes.values().sum();
        let twilio = params.twilio_floor(self.twilio_calls);
        let (kubernetes, floor_busy) = kubernetes_floor(cp, &self.writes, self.objects).await;
        let floor = twilio.max(kubernetes);
        let per = |n: u64| n as f64 / self.objects as f64;
        println!(
            "| {} | {:.1} s | {:.1} s | {:.1} s | {:.2}× | {:.2} | {:.2} ({}) | {:.1} MiB |",
            self.work,
            self.took.as_secs_f64(),
            twilio.as_secs_f64(),
            kubernetes.as_secs_f64(),
            self.took.as_secs_f64() / floor.as_secs_f64().max(0.001),
            per(self.twilio_calls),
            per(writes),
            self.writes
                .iter()
                .map(|(what, n)| format!("{what} {:.2}", per(*n)))
                .collect::<Vec<_>>()
                .join(", "),
            self.rss.total as f64 / 1024.0
        );
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "  operator RSS once settled: {:.1} MiB heap and stacks, {:.1} MiB mapped files (code); peak {:.1} MiB",
            mib(self.rss.anon),
            mib(self.rss.file),
            mib(self.rss.peak)
        );
        println!("  Twilio calls by operation: {}", self.twilio_operations);
        let reads: Vec<String> = self
            .reads
            .iter()
            .map(|(what, n)| format!("{what} {:.2}", per(*n)))
            .collect();
        println!("  apiserver reads/object: {}", reads.join(", "));
        let cpu: Vec<String> = self.cpu.iter().map(|(p, s)| format!("{p} {s:.1}")).collect();
        println!("  CPU seconds: {}", cpu.join(", "));
        // Whether the floor had the machine to itself as the operator's run had: a floor that
        // leaves cores idle is not the apiserver's limit.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        println!(
            "  machine busy: {:.0}% of {cores} cores while the operator worked, {:.0}% while the Kubernetes floor ran",
            100.0 * self.cpu.get(MACHINE).copied().unwrap_or(0.0) / self.took.as_secs_f64() / cores,
            100.0 * floor_busy / kubernetes.as_secs_f64() / cores,
        );
        let progress: Vec<String> = ["first", "10%", "50%", "90%", "all"]
            .iter()
            .zip(&self.progress)
            .map(|(share, at)| format!("{share} {:.1} s", at.as_secs_f64()))
            .collect();
        println!("  done after start: {}", progress.join(", "));
        println!(
            "  reconcile passes/object: {:.2}",
            self.passes / self.objects as f64
        );
    }
}

async fn bench_size(cp: &ControlPlane, params: &Params, n: usize) {
    let ns = cp.tenant_namespace("bench").await;
    let client = cp.admin();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let filler = "x".repeat(1024);
    concurrently(0..params.foreign_secrets, |i| {
        let (secrets, filler) = (secrets.clone(), filler.clone());
        async move {
            let s: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("foreign-{i}")}, "stringData": {"blob": filler}}))
            .unwrap();
            secrets.create(&PostParams::default(), &s).await.unwrap();
        }
    })
    .await;
    let emu = params.emulator(n);
    let limit = params.concurrency.to_string();
    let log = std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into());
    let env = [
        ("RUST_LOG", log.as_str()),
        ("TWILIO_MAX_CONCURRENCY", limit.as_str()),
    ];
    let keys: Api<TwilioApiKey> = Api::namespaced(client.clone(), &ns);
    let world = World {
        cp,
        params,
        emu: &emu,
        keys: &keys,
        ns: &ns,
        env: &env,
        n,
    };

    // Create: every object present before the operator starts.
    concurrently(0..n, |i| {
        let keys = keys.clone();
        async move {
            let key: TwilioApiKey =
                serde_json::from_value(json!({"apiVersion": "twilio.operator.dev/v1alpha1",
                "kind": "TwilioApiKey", "metadata": {"name": format!("k{i:05}")},
                "spec": {"rotation": {"every": "720h", "gracePeriod": "0s"}}}))
                .unwrap();
            keys.create(&PostParams::default(), &key).await.unwrap();
        }
    })
    .await;
    let ready = |k: &TwilioApiKey| {
        k.status
            .as_ref()
            .is_some_and(|s| is_ready(&s.conditions) && s.key_sid.is_some())
    };
    let mut operator = Some(world.phase(format!("{n} keys created"), ready).await);

    // Rotate: every rotation asked while the operator is stopped.
    stop(&mut operator);
    concurrently(0..n, |i| {
        let keys = keys.clone();
        async move {
            let patch = json!({"metadata": {"annotations": {"twilio.operator.dev/rotate": "bench"}}});
            keys.patch(&format!("k{i:05}"), &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        }
    })
    .await;
    let rotated = |k: &TwilioApiKey| {
        k.status.as_ref().is_some_and(|s| {
            is_ready(&s.conditions)
                && s.last_rotation_request.as_deref() == Some("bench")
                && s.retiring_keys.is_empty()
        })
    };
    operator = Some(
        world
            .phase(format!("{n} keys rotated and old keys revoked"), rotated)
            .await,
    );

    // Restart with every object present: the first reconcile, and a new key Ready.
    stop(&mut operator);
    let started = Instant::now();
    let restarted = Operator::start(cp, &emu, &ns, &env);
    let first = first_reconcile(&restarted).await;
    let key: TwilioApiKey = serde_json::from_value(json!({"apiVersion": "twilio.operator.dev/v1alpha1",
        "kind": "TwilioApiKey", "metadata": {"name": "newcomer"}, "spec": {}}))
    .unwrap();
    keys.create(&PostParams::default(), &key).await.unwrap();
    support::operator::wait_for(&keys, "newcomer", Duration::from_secs(600), "Ready", ready).await;
    println!(
        "restart with {n} keys present: first reconcile {:.2} s after start; a new key Ready {:.1} s after start",
        first.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// What one size's phases share.
struct World<'a> {
    cp: &'a ControlPlane,
    params: &'a Params,
    emu: &'a Emulator,
    keys: &'a Api<TwilioApiKey>,
    ns: &'a str,
    env: &'a [(&'a str, &'a str)],
    n: usize,
}

/// The operator's memory once the work is over: its allocator hands freed pages back within a
/// second, so memory is sampled until it stops falling (by 1% over a second), for 5 s at most.
async fn settled_memory(operator: &Operator) -> Resident {
    let mut samples = vec![operator.memory_kib()];
    while samples.len() < 20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        samples.push(operator.memory_kib());
        if let [.., second_ago, _, _, _, now] = samples[..]
            && now.total * 100 >= second_ago.total * 99
        {
            break;
        }
    }
    *samples.last().expect("sampled")
}

impl World<'_> {
    /// Starts the operator and lets it work until every key is `done`; prints the row of
    /// `work`: what it took, in time, Twilio calls and apiserver writes, and the operator's
    /// memory after. Answers the running operator.
    async fn phase(&self, work: String, done: impl Fn(&TwilioApiKey) -> bool) -> Operator {
        let before = apiserver_requests(self.cp).await;
        let cpu_before = cpu_seconds();
        self.emu.reset_stats().await;
        let operator = Operator::start(self.cp, self.emu, self.ns, self.env);
        let started = Instant::now();
        let progress = wait_all(self.keys, self.n, done, started).await;
        let took = started.elapsed();
        let cpu = cpu_seconds()
            .into_iter()
            .map(|(p, s)| (p.clone(), s - cpu_before.get(&p).copied().unwrap_or(0.0)))
            .collect();
        let state = self.emu.state().await;
        let twilio_calls = state["received"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_u64)
            .sum();
        let after = apiserver_requests(self.cp).await;
        let (writes, reads) = after
            .into_iter()
            .map(|(what, count)| {
                let delta = count - before.get(&what).copied().unwrap_or(0);
                (what, delta)
            })
            .filter(|(_, delta)| *delta > 0)
            .partition(|(what, _)| WRITES.iter().any(|v| what.starts_with(v)));
        let row = Row {
            work,
            took,
            objects: self.n,
            twilio_calls,
            twilio_operations: state["received"].clone(),
            writes,
            reads,
            rss: settled_memory(&operator).await,
            passes: support::operator::sample(
                &operator.metrics().await,
                r#"twilio_operator_reconcile_duration_seconds_count{kind="TwilioApiKey"}"#,
            )
            .unwrap_or(0.0),
            cpu,
            progress,
        };
        row.print(self.cp, self.params).await;
        operator
    }
}

/// Stops the operator as Kubernetes would, and waits for it to exit.
fn stop(operator: &mut Option<Operator>) {
    if let Some(mut running) = operator.take() {
        running.terminate();
        running.wait_exit(Duration::from_secs(60));
    }
}

/// Waits, through one watch, until `n` keys are `done`.
/// Waits until all `n` keys are `done`; answers when the first, a tenth, half, nine tenths and
/// all of them were, since `started`.
async fn wait_all(
    keys: &Api<TwilioApiKey>,
    n: usize,
    done: impl Fn(&TwilioApiKey) -> bool,
    started: Instant,
) -> Vec<Duration> {
    let mut finished = HashSet::new();
    let mut progress = Vec::new();
    let milestones = [1, n.div_ceil(10), n.div_ceil(2), (n * 9).div_ceil(10), n];
    let events = watcher(keys.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut events = std::pin::pin!(events);
    let deadline = Duration::from_secs(3600);
    tokio::time::timeout(deadline, async {
        while let Some(key) = events.try_next().await.unwrap() {
            let name = key.metadata.name.clone().unwrap_or_default();
            if done(&key) {
                finished.insert(name);
            } else {
                finished.remove(&name);
            }
            while milestones
                .get(progress.len())
                .is_some_and(|m| finished.len() >= *m)
            {
                progress.push(started.elapsed());
            }
            if finished.len() >= n {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} keys converged", finished.len()));
    progress
}

/// How long after start the operator finished its first reconcile, from its metrics.
async fn first_reconcile(operator: &Operator) -> Duration {
    let started = Instant::now();
    let http = reqwest::Client::new();
    loop {
        let scrape = http
            .get(format!("{}/metrics", operator.metrics_url))
            .bearer_auth(twilio_sandbox::cluster::ADMIN_TOKEN);
        let text = match scrape.send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let reconciled = text
            .lines()
            .filter(|l| l.starts_with("twilio_operator_reconciles_total{"))
            .any(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
                    > 0.0
            });
        if reconciled {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(600), "no reconcile");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The name under which `cpu_seconds` counts every process on the machine.
const MACHINE: &str = "machine";

/// CPU seconds used so far by each process the work runs on (the control plane, the emulator,
/// the operator), by process name, and by the whole machine, from /proc.
fn cpu_seconds() -> BTreeMap<String, f64> {
    const WATCHED: [&str; 4] = ["kube-apiserver", "etcd", "twilio-emulator", "twilio-operator"];
    // Linux reports these times in clock ticks of 1/100 s.
    const TICKS_PER_SECOND: f64 = 100.0;
    let mut cpu = BTreeMap::new();
    // The first line of /proc/stat sums every CPU: user, nice, system, idle, iowait, irq,
    // softirq, steal; all but idle and iowait are work.
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| ![3, 4].contains(i))
        .map(|(_, t)| t)
        .sum();
    cpu.insert(MACHINE.to_owned(), busy / TICKS_PER_SECOND);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The name is in parentheses and may hold spaces; the fields after it are numbered
        // from 3 (state), so utime and stime (fields 14 and 15) are the 12th and 13th.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        if !WATCHED.contains(&name) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: f64 = fields[11..13].iter().filter_map(|f| f.parse::<f64>().ok()).sum();
        *cpu.entry(name.to_owned()).or_default() += ticks / TICKS_PER_SECOND;
    }
    cpu
}

/// The verbs that write, as the apiserver's metrics name them.
const WRITES: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];
/// The verbs of single reads and lists (watches are connections, not requests per object).
const READS: [&str; 2] = ["GET", "LIST"];

/// Requests the apiserver has served for the resources the operator writes, by verb and
/// resource, from its own metrics.
async fn apiserver_requests(cp: &ControlPlane) -> BTreeMap<String, u64> {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = cp.admin().request_text(request).await.unwrap();
    let mut writes = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            let end = line[start..].find('"')? + start;
            Some(line[start..end].to_owned())
        };
        let (Some(verb), Some(resource)) = (label("verb"), label("resource")) else {
            continue;
        };
        let ours = ["twilioapikeys", "secrets", "events", "deployments"].contains(&resource.as_str());
        if !ours || !WRITES.iter().chain(&READS).any(|v| *v == verb) {
            continue;
        }
        let subresource = label("subresource").filter(|s| !s.is_empty());
        let mut what = match subresource {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        };
        if label("dry_run").is_some_and(|d| !d.is_empty()) {
            what = format!("{what} (dry run)");
        }
        // Refusals count too (a conflict is a request the apiserver served), shown apart.
        if let Some(code) = label("code").filter(|c| !c.starts_with('2')) {
            what = format!("{what} → {code}");
        }
        let count = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        *writes.entry(what).or_default() += count as u64;
    }
    writes
}

/// The time the operator's `writes` take when issued directly at full concurrency, in a
/// namespace no operator watches: each kind of write (by verb and resource, as the apiserver
/// counted them) repeated as often, on objects like the operator's, prepared beforehand. A
/// custom resource's status write costs the apiserver several times a small ConfigMap's create
/// (schema and CEL validation, managed fields), so only the same writes make a fair floor.
async fn kubernetes_floor(
    cp: &ControlPlane,
    writes: &BTreeMap<String, u64>,
    objects: usize,
) -> (Duration, f64) {
    let ns = cp.namespace("floor").await;
    let client = cp.admin();
    let keys: Api<TwilioApiKey> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let needs = |resource: &str| writes.keys().any(|w| w.contains(resource));
    // The objects the writes land on: keys for status and finalizer writes, Secrets to apply.
    concurrently(0..objects, |i| {
        let (keys, secrets) = (keys.clone(), secrets.clone());
        let (with_keys, with_secrets) = (needs(" twilioapikeys"), needs("APPLY secrets"));
        async move {
            if with_keys {
                keys.create(&PostParams::default(), &floor_key(i)).await.unwrap();
            }
            if with_secrets {
                secrets
                    .create(&PostParams::default(), &floor_secret(i, 0))
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    let started = Instant::now();
    let busy = cpu_seconds()[MACHINE];
    for (kind, (what, &count)) in writes.iter().enumerate() {
        let what = what.as_str();
        concurrently(0..count as usize, |i| {
            let (keys, secrets, client, ns) = (keys.clone(), secrets.clone(), client.clone(), ns.clone());
            let (name, round) = (format!("f{:05}", i % objects.max(1)), i / objects.max(1) + 1);
            async move {
                let mut apply = PatchParams::apply("bench-floor").force();
                let dry_run = what.contains("(dry run)");
                apply.dry_run = dry_run;
                if what.ends_with("twilioapikeys/status") {
                    let status = json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
                        "status": floor_status(i, round)});
                    keys.patch_status(&name, &apply, &Patch::Apply(status)).await.unwrap();
                } else if what.ends_with("twilioapikeys") {
                    let patch = json!({"metadata": {"finalizers": [format!("bench.floor/f{round}")]}});
                    keys.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
                } else if what.starts_with("APPLY secrets") || what.starts_with("PATCH secrets") {
                    secrets.patch(&name, &apply, &Patch::Apply(floor_secret(i, round))).await.unwrap();
                } else if what.starts_with("POST secrets") {
                    let mut secret = floor_secret(i, round);
                    secret.metadata.name = Some(format!("n{kind}-{i:06}"));
                    let params = PostParams {
                        dry_run,
                        ..PostParams::default()
                    };
                    secrets.create(&params, &secret).await.unwrap();
                } else if what.starts_with("POST events") {
                    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, &ns);
                    let event = serde_json::from_value(json!({"metadata": {"name": format!("e{kind}-{i:06}")},
                        "involvedObject": {"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
                            "namespace": ns, "name": name},
                        "reason": "KeyCreated", "type": "Normal", "action": "Issue",
                        "message": format!("Key SK{i:032} created and published in Secret {name}"),
                        "reportingComponent": "twilio-operator", "reportingInstance": "bench-floor",
                        "eventTime": "2026-01-01T00:00:00.000000Z"}))
                    .unwrap();
                    events.create(&PostParams::default(), &event).await.unwrap();
                } else {
                    let configmaps: Api<ConfigMap> = Api::namespaced(client, &ns);
                    let cm = serde_json::from_value(json!({"metadata": {"name": format!("w{kind}-{i:06}")},
                        "data": {"k": "v"}}))
                    .unwrap();
                    configmaps.create(&PostParams::default(), &cm).await.unwrap();
                }
            }
        })
        .await;
    }
    (started.elapsed(), cpu_seconds()[MACHINE] - busy)
}

fn floor_key(i: usize) -> TwilioApiKey {
    serde_json::from_value(json!({"apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
        "metadata": {"name": format!("f{i:05}")}, "spec": {"rotation": {"every": "720h", "gracePeriod": "0s"}}}))
    .unwrap()
}

/// A status like the operator's, different in each `round`.
fn floor_status(i: usize, round: usize) -> Value {
    let now = "2026-01-01T00:00:00Z";
    json!({"accountSid": "AC00000000000000000000000000000001", "keySid": format!("SK{:032}", i * 10 + round),
        "keyCreatedAt": now, "nextRotationAt": now, "secretName": format!("f{i:05}"), "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "observedGeneration": 1,
            "lastTransitionTime": now, "message": format!("Key SK{i:032} is published, round {round}")}]})
}

/// A Secret like the operator's, holding different data in each `round`.
fn floor_secret(i: usize, round: usize) -> Secret {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("f{i:05}"), "labels": {"app.kubernetes.io/managed-by": "bench-floor"},
            "annotations": {"twilio.operator.dev/credential-sid": format!("SK{:032}", i * 10 + round)}},
        "stringData": {"TWILIO_ACCOUNT_SID": "AC00000000000000000000000000000001",
            "TWILIO_API_KEY": format!("SK{:032}", i * 10 + round), "TWILIO_API_SECRET": format!("{round:032}")}}))
    .unwrap()
}

/// Runs `task` for each item, `CLIENT_CONCURRENCY` at a time.
async fn concurrently<I, F, Fut>(items: I, task: F)
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(items)
        .map(task)
        .buffer_unordered(CLIENT_CONCURRENCY)
        .collect::<()>()
        .await;
}
