//! The operator binary as tests run it: a real process against the test control plane and an
//! emulator, watching one namespace, so tests can kill it and start it again.
//!
//! Contract: [`Operator::start`] spawns `twilio-operator` with the emulator's main account as its
//! credentials; dropping it kills the process. Its log goes to a file whose tail
//! [`Operator::log_tail`] returns for failure messages.

use super::emulator::{Emulator, MAIN_SID, MAIN_TOKEN};
use super::{ControlPlane, tethered};
use kube::Resource;
use kube::api::Api;
use kube::runtime::wait::await_condition;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Operator {
    child: Child,
    pub log: PathBuf,
    /// `http://127.0.0.1:PORT`, serving /metrics.
    pub metrics_url: String,
    /// `http://127.0.0.1:PORT`, serving /healthz and /readyz.
    pub health_url: String,
}

impl Operator {
    /// Starts the operator on `namespace` with extra environment (such as a failpoint).
    pub fn start(cp: &ControlPlane, emu: &Emulator, namespace: &str, env: &[(&str, &str)]) -> Self {
        let mut all = vec![("WATCH_NAMESPACES", namespace)];
        all.extend_from_slice(env);
        Self::start_as(cp, emu, &cp.kubeconfig, &all)
    }

    /// Starts the operator with `kubeconfig` (for example one that impersonates a
    /// ServiceAccount) and `env`, which should name the namespaces to watch.
    pub fn start_as(
        cp: &ControlPlane,
        emu: &Emulator,
        kubeconfig: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        let log = cp.dir.join(format!(
            "operator-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let file = std::fs::File::create(&log).expect("operator log");
        let (metrics_port, health_port) = (super::free_port(), super::free_port());
        let child = tethered(std::path::Path::new(env!("CARGO_BIN_EXE_twilio-operator")))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig)
            .env("TWILIO_BASE_URL", &emu.url)
            .env("TWILIO_ACCOUNT_SID", MAIN_SID)
            .env("TWILIO_AUTH_TOKEN", MAIN_TOKEN)
            .env("RESYNC_INTERVAL", "10m")
            .env("RUST_LOG", "info,twilio_operator=debug")
            .env("METRICS_ADDRESS", format!("127.0.0.1:{metrics_port}"))
            .env("HEALTH_ADDRESS", format!("127.0.0.1:{health_port}"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .expect("start twilio-operator");
        Self {
            child,
            log,
            metrics_url: format!("http://127.0.0.1:{metrics_port}"),
            health_url: format!("http://127.0.0.1:{health_port}"),
        }
    }

    /// Resident memory of the process, in KiB, from /proc.
    pub fn memory_kib(&self) -> Resident {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Resident {
            total: field("VmRSS:"),
            peak: field("VmHWM:"),
            anon: field("RssAnon:"),
            file: field("RssFile:"),
        }
    }

    /// Sends SIGTERM, as Kubernetes does when it stops a pod.
    pub fn terminate(&self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits for the process to exit on its own (a failpoint), killing it after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        assert!(
            self.exited_within(timeout),
            "the operator did not stop within {timeout:?}:\n{}",
            self.log_tail()
        );
        self.child.try_wait().expect("poll operator").expect("exited")
    }

    /// Whether the process exits within `timeout`.
    pub fn exited_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("poll operator").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The operator's /metrics text, scraped as the cluster admin.
    pub async fn metrics(&self) -> String {
        let scraped = self.scrape(Some(twilio_sandbox::cluster::ADMIN_TOKEN)).await;
        assert_eq!(scraped.status(), 200, "scrape /metrics as the admin");
        scraped.text().await.expect("metrics text")
    }

    /// GET /metrics with bearer `token`, if any.
    pub async fn scrape(&self, token: Option<&str>) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(format!("{}/metrics", self.metrics_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("scrape /metrics")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's resident memory in KiB: in all, at its peak, its heap and stacks, and mapped files
/// (its code).
#[derive(Debug, Clone, Copy, Default)]
pub struct Resident {
    pub total: u64,
    pub peak: u64,
    pub anon: u64,
    pub file: u64,
}

/// Whether the subaccount's status says its budget suspended it.
pub fn suspended_by_budget(s: &twilio_operator::api::TwilioSubaccount) -> bool {
    s.status
        .as_ref()
        .and_then(|st| st.budget.as_ref())
        .is_some_and(|b| b.suspended_by_budget)
}

/// The value of `series` (a metric name with its labels, as the operator writes them) in a
/// /metrics text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Waits up to `timeout` until the object satisfies `done`, and returns it. A watch that breaks
/// (an expired resource version, say) is simply started again.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&K) -> bool + Clone,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let done = done.clone();
        let cond = move |obj: Option<&K>| obj.is_some_and(&done);
        match tokio::time::timeout_at(deadline, await_condition(api.clone(), name, cond)).await {
            Ok(Ok(Some(obj))) => return obj,
            Ok(_) => continue,
            Err(_) => panic!(
                "{name} was not {what} within {timeout:?}; it is now {:?}",
                api.get_opt(name).await
            ),
        }
    }
}

/// Waits up to `timeout` until the object is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let gone = |obj: Option<&K>| obj.is_none();
        match tokio::time::timeout_at(deadline, await_condition(api.clone(), name, gone)).await {
            Ok(Ok(_)) => return,
            Ok(Err(_)) => continue,
            Err(_) => panic!("{name} still exists after {timeout:?}"),
        }
    }
}
