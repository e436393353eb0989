//! A real Kubernetes control plane for integration tests: etcd, kube-apiserver (with RBAC) and
//! kube-controller-manager (garbage collector and namespace controller), on free loopback ports
//! in a temporary directory, with this project's CRDs installed and Established.
//!
//! Contract:
//! - one control plane per test binary, started by the first [`cluster`] call, and a fresh
//!   namespace per test from [`ControlPlane::namespace`];
//! - the binaries come from `hack/control-plane.sh` (which honours `$KUBEBUILDER_ASSETS`), so a
//!   missing binary is built, never a reason to skip;
//! - nothing outlives the test binary: the processes are stopped and the directory removed at
//!   process exit (also after a failed test), and the kernel kills them if the binary itself is
//!   killed (`PR_SET_PDEATHSIG`).
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod emulator;
pub mod fixture;
pub mod operator;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The label that admits a test namespace to the TwilioAccount `default`.
pub const TENANT_LABEL: &str = "twilio.operator.dev/tenant";

fn account_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::erase::<twilio_operator::api::TwilioAccount>(&())
}

const ADMIN_TOKEN: &str = "twilio-operator-test-admin-token";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The running control plane shared by every test in this binary.
pub struct ControlPlane {
    /// Directory holding kube-apiserver, etcd, kube-controller-manager and helm.
    pub bin_dir: PathBuf,
    /// Scratch directory of this control plane (certificates, logs, etcd data).
    pub dir: PathBuf,
    /// An admin kubeconfig, for kubectl and helm.
    pub kubeconfig: PathBuf,
    /// Time from the first process spawn to CRDs Established.
    pub startup: Duration,
    config: Config,
    namespaces: AtomicU32,
}

/// Processes to stop at exit; globals because statics never drop.
static TEARDOWN: Mutex<Vec<Process>> = Mutex::new(Vec::new());
static CLUSTER: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane of this test binary, started on first use.
pub fn cluster() -> &'static ControlPlane {
    CLUSTER.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tx, rx) = std::sync::mpsc::channel();
        // Children are spawned from a thread that lives as long as the process: PR_SET_PDEATHSIG
        // fires when the spawning *thread* exits, and test threads exit after every test.
        std::thread::Builder::new()
            .name("control-plane".into())
            .spawn(move || {
                let started = std::panic::catch_unwind(start);
                let _ = tx.send(started);
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the control-plane thread");
        match rx.recv().expect("control-plane thread ended without an answer") {
            Ok(cp) => cp,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

impl ControlPlane {
    /// A client with cluster-admin rights (group system:masters).
    pub fn admin(&self) -> Client {
        Client::try_from(self.config.clone()).expect("admin client")
    }

    /// A client that acts as the ServiceAccount `namespace/name`, through impersonation, so a
    /// test exercises exactly the RBAC that account was granted.
    pub fn as_service_account(&self, namespace: &str, name: &str) -> Client {
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ]);
        Client::try_from(config).expect("impersonating client")
    }

    /// The admin client configuration, for code under test that builds its own client.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// Creates a fresh namespace named after `prefix` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{n}");
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.admin())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        name
    }

    /// A fresh namespace admitted by the TwilioAccount `default`, which acts with the operator's
    /// environment and allows everything (Close included); the account is made on first use.
    pub async fn tenant_namespace(&self, prefix: &str) -> String {
        static DEFAULT_ACCOUNT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        DEFAULT_ACCOUNT
            .get_or_init(|| async {
                let spec = serde_json::json!({
                    "credentials": {"fromEnvironment": true},
                    "namespaces": {"selector": {"matchLabels": {TENANT_LABEL: "true"}}},
                    "subaccounts": {"deletionPolicies": ["Retain", "Suspend", "Close"]},
                });
                self.apply_account("default", spec).await;
            })
            .await;
        let name = self.namespace(prefix).await;
        let labels = serde_json::json!({"metadata": {"labels": {TENANT_LABEL: "true"}}});
        Api::<Namespace>::all(self.admin())
            .patch(&name, &PatchParams::default(), &Patch::Merge(&labels))
            .await
            .unwrap_or_else(|e| panic!("label namespace {name}: {e}"));
        name
    }

    /// Creates or replaces the TwilioAccount `name` with `spec`, as a cluster admin would.
    pub async fn apply_account(&self, name: &str, spec: serde_json::Value) {
        let account = serde_json::json!({
            "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioAccount",
            "metadata": {"name": name}, "spec": spec,
        });
        Api::<kube::api::DynamicObject>::all_with(self.admin(), &account_resource())
            .patch(
                name,
                &PatchParams::apply("cluster-admin").force(),
                &Patch::Apply(&account),
            )
            .await
            .unwrap_or_else(|e| panic!("apply TwilioAccount {name}: {e}"));
    }

    /// A client acting as the ServiceAccount `namespace/tenant`, bound in `namespace` to the
    /// built-in `edit` ClusterRole with the chart's Twilio rules aggregated into it: exactly what
    /// a namespace editor holds once the chart is installed.
    pub async fn tenant(&self, namespace: &str) -> Client {
        static CHART_ROLES: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        CHART_ROLES
            .get_or_init(|| self.apply_chart_aggregated_roles())
            .await;
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "tenant-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": namespace}],
        }))
        .expect("a RoleBinding");
        Api::<RoleBinding>::namespaced(self.admin(), namespace)
            .patch(
                "tenant-edit",
                &PatchParams::apply("test").force(),
                &Patch::Apply(&binding),
            )
            .await
            .expect("bind the tenant to edit");
        let tenant = self.as_service_account(namespace, "tenant");
        // The aggregation controller fills `edit` in shortly after the chart's roles appear.
        let keys: Api<twilio_operator::api::TwilioApiKey> = Api::namespaced(tenant.clone(), namespace);
        let deadline = Instant::now() + START_TIMEOUT;
        while keys.list(&Default::default()).await.is_err() {
            assert!(Instant::now() < deadline, "edit never gained the chart's rules");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tenant
    }

    /// Applies the chart's ClusterRoles that aggregate into the built-in view and edit roles.
    async fn apply_chart_aggregated_roles(&self) {
        let chart = repo_root().join("charts/twilio-operator");
        let rendered = self.run_tool(
            "helm",
            &[
                "template",
                "tw",
                chart.to_str().unwrap(),
                "--show-only",
                "templates/rbac.yaml",
            ],
        );
        let roles = Api::<ClusterRole>::all(self.admin());
        for doc in rendered.split("\n---").filter(|d| d.contains("aggregate-to-")) {
            let role: ClusterRole = serde_saphyr::from_str(doc).expect("a rendered ClusterRole");
            let name = role.metadata.name.clone().expect("named");
            roles
                .patch(&name, &PatchParams::apply("test").force(), &Patch::Apply(&role))
                .await
                .expect("apply the chart's aggregated role");
        }
    }

    /// A kubeconfig that acts as the ServiceAccount `namespace/name`, for processes (such as the
    /// operator) that should hold exactly that account's rights.
    pub fn impersonating_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("read kubeconfig");
        let user = format!(
            "    as: system:serviceaccount:{namespace}:{name}\n    as-groups:\n    - system:serviceaccounts\n    - system:serviceaccounts:{namespace}\n    - system:authenticated\n"
        );
        let text = text.replacen(
            &format!("    token: {ADMIN_TOKEN}\n"),
            &format!("    token: {ADMIN_TOKEN}\n{user}"),
            1,
        );
        let path = self.dir.join(format!("{namespace}-{name}.kubeconfig"));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Runs a binary from the control-plane directory (kubectl excepted: it is on PATH) against
    /// this cluster and returns its output, panicking with stderr when it fails.
    pub fn run_tool(&self, tool: &str, args: &[&str]) -> String {
        let program = if tool == "kubectl" {
            PathBuf::from("kubectl")
        } else {
            self.bin_dir.join(tool)
        };
        let out = Command::new(&program)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"))
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs one of the project's setup scripts under hack/ (they fetch or build what is missing,
/// reporting progress on stderr) and returns what it printed on stdout.
pub fn setup_script(name: &str) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("hack").join(name))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run hack/{name}: {e}"));
    assert!(
        out.status.success(),
        "hack/{name} failed (see its messages above)"
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The directory of the control-plane binaries, which the setup script builds if missing.
fn control_plane_binaries() -> PathBuf {
    let out = setup_script("control-plane.sh");
    PathBuf::from(
        out.lines()
            .last()
            .expect("the script prints the binary directory")
            .trim(),
    )
}

struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A command whose process dies with the thread that spawned it and has its own process group.
pub fn tethered(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    // SAFETY: prctl and setpgid are async-signal-safe and touch only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    cmd
}

fn spawn(name: &'static str, bin: &Path, args: &[String], dir: &Path) {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("create log file");
    let mut cmd = tethered(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup log"))
        .stderr(file);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    TEARDOWN.lock().unwrap().push(Process { name, child, log });
}

/// Polls `ready` until it holds, failing fast with the process's log if the process exits.
async fn wait_ready<F, Fut>(name: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ready().await {
            return;
        }
        let exited = {
            let mut procs = TEARDOWN.lock().unwrap();
            let p = procs.iter_mut().find(|p| p.name == name).expect("known process");
            p.child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| (status, p.log.clone()))
        };
        if let Some((status, log)) = exited {
            panic!("{name} exited with {status} during startup:\n{}", log_tail(&log));
        }
        if Instant::now() > deadline {
            let log = TEARDOWN
                .lock()
                .unwrap()
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.log.clone());
            panic!(
                "{name} not ready after {START_TIMEOUT:?}:\n{}",
                log.map(|l| log_tail(&l)).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn start() -> ControlPlane {
    let bin_dir = control_plane_binaries();
    let dir = tempfile::Builder::new()
        .prefix("twop-cp-")
        .tempdir()
        .expect("temp dir")
        .keep();
    *SCRATCH.lock().unwrap() = Some(dir.clone());
    // SAFETY: registering a plain extern "C" function with no captured state.
    unsafe { libc::atexit(teardown_at_exit) };

    let began = Instant::now();
    let (etcd_port, etcd_peer, api_port) = (free_port(), free_port(), free_port());
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    spawn(
        "etcd",
        &bin_dir.join("etcd"),
        &[
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ],
        &dir,
    );

    write_credentials(&dir);
    let api_url = format!("https://127.0.0.1:{api_port}");
    spawn(
        "kube-apiserver",
        &bin_dir.join("kube-apiserver"),
        &[
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--authorization-mode=RBAC".into(),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            format!("--service-account-issuer={api_url}/"),
            format!("--service-account-key-file={}", dir.join("sa.pub").display()),
            format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ),
            "--v=0".into(),
        ],
        &dir,
    );

    let kubeconfig = dir.join("admin.kubeconfig");
    std::fs::write(&kubeconfig, admin_kubeconfig(&api_url)).expect("write kubeconfig");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = runtime.block_on(async {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        wait_ready("etcd", || {
            let http = http.clone();
            let url = format!("{etcd_url}/health");
            async move { http.get(url).send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        wait_ready("kube-apiserver", || {
            let http = http.clone();
            let url = format!("{api_url}/readyz");
            async move {
                http.get(url)
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        let kc = Kubeconfig::read_from(&kubeconfig).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        install_crds(Client::try_from(config.clone()).expect("client")).await;
        config
    });

    spawn(
        "kube-controller-manager",
        &bin_dir.join("kube-controller-manager"),
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            "--controllers=garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller".into(),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
        ],
        &dir,
    );

    let startup = began.elapsed();
    eprintln!(
        "control plane ready in {:.1}s ({})",
        startup.as_secs_f64(),
        dir.display()
    );
    ControlPlane {
        bin_dir,
        dir,
        kubeconfig,
        startup,
        config,
        namespaces: AtomicU32::new(0),
    }
}

/// Writes the static admin token and the service-account signing key pair.
fn write_credentials(dir: &Path) {
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n"),
    )
    .expect("write tokens");
    let key = rcgen::KeyPair::generate().expect("service-account key");
    std::fs::write(dir.join("sa.key"), key.serialize_pem()).expect("write sa.key");
    std::fs::write(dir.join("sa.pub"), key.public_key_pem()).expect("write sa.pub");
}

fn admin_kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {ADMIN_TOKEN}
contexts:
- name: test
  context:
    cluster: test
    user: admin
current-context: test
"
    )
}

/// Applies every CRD in crds/ (the committed files users apply) and waits until Established.
async fn install_crds(client: Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("crds")).expect("read crds/") {
        let path = entry.expect("crds/ entry").path();
        let text = std::fs::read_to_string(&path).expect("read CRD");
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        let name = crd.metadata.name.clone().expect("CRD name");
        crds.patch(
            &name,
            &PatchParams::apply("twilio-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {}: {e}", path.display()));
        names.push(name);
    }
    for name in names {
        tokio::time::timeout(
            START_TIMEOUT,
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established"))
        .expect("watch CRD");
    }
}

static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn teardown_at_exit() {
    let procs = TEARDOWN
        .lock()
        .map(|mut p| std::mem::take(&mut *p))
        .unwrap_or_default();
    stop_all(procs);
    if let Some(dir) = SCRATCH.lock().ok().and_then(|mut d| d.take()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// SIGTERM to each process group, then SIGKILL to whatever is still there after five seconds.
fn stop_all(mut procs: Vec<Process>) {
    for p in &procs {
        // SAFETY: signalling a process group we created; a stale id at worst gets ESRCH.
        unsafe { libc::kill(-(p.child.id() as i32), libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for p in &mut procs {
        while Instant::now() < deadline && matches!(p.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(p.child.try_wait(), Ok(None)) {
            // SAFETY: as above.
            unsafe { libc::kill(-(p.child.id() as i32), libc::SIGKILL) };
            let _ = p.child.wait();
        }
    }
}
