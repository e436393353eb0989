//! A real Kubernetes control plane for integration tests: the sandbox's local cluster (etcd,
//! kube-apiserver with RBAC, kube-controller-manager, kube-scheduler and a kwok node, so
//! Deployments get Running pods), on free loopback ports in a temporary directory, with this
//! project's CRDs installed and Established.
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
pub mod proxy;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
pub use twilio_sandbox::cluster::tethered;
use twilio_sandbox::cluster::{ADMIN_TOKEN, Cluster};

/// The label that admits a test namespace to the TwilioAccount `default`.
pub const TENANT_LABEL: &str = "twilio.operator.dev/tenant";

fn account_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::erase::<twilio_operator::api::TwilioAccount>(&())
}

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The running control plane shared by every test in this binary; its fields (`bin_dir`, `dir`,
/// `kubeconfig`, `startup`) are the cluster's.
pub struct ControlPlane {
    cluster: Cluster,
    namespaces: AtomicU32,
}

impl std::ops::Deref for ControlPlane {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

/// Stopped at exit from an atexit handler, because statics never drop.
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
        self.cluster.admin().expect("admin client")
    }

    /// A client that acts as the ServiceAccount `namespace/name`, through impersonation, so a
    /// test exercises exactly the RBAC that account was granted.
    pub fn as_service_account(&self, namespace: &str, name: &str) -> Client {
        let mut config = self.cluster.config();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ]);
        Client::try_from(config).expect("impersonating client")
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
        CHART_ROLES.get_or_init(|| self.apply_chart_tenancy()).await;
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

    /// Applies the chart's ClusterRoles that aggregate into the built-in view and edit roles, and
    /// its admission policy, as installing the chart would; waits until the policy is enforced.
    async fn apply_chart_tenancy(&self) {
        self.apply_chart_aggregated_roles().await;
        let rendered = self.render_chart("templates/admission-policy.yaml");
        let path = self.dir.join("admission-policy.yaml");
        std::fs::write(&path, rendered).expect("write the admission policy");
        self.run_tool(
            "kubectl",
            &["apply", "--server-side", "-f", path.to_str().unwrap()],
        );
        self.wait_policy_enforced().await;
    }

    /// Waits until the admission policy refuses an editor's finalizer removal: policies take
    /// effect a moment after they are created.
    async fn wait_policy_enforced(&self) {
        let ns = self.namespace("policy-probe").await;
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "probe-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": ns}],
        }))
        .expect("a RoleBinding");
        Api::<RoleBinding>::namespaced(self.admin(), &ns)
            .create(&PostParams::default(), &binding)
            .await
            .expect("bind the probe to edit");
        let admin: Api<twilio_operator::api::TwilioApiKey> = Api::namespaced(self.admin(), &ns);
        let probe: twilio_operator::api::TwilioApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "twilio.operator.dev/v1alpha1", "kind": "TwilioApiKey",
            "metadata": {"name": "probe", "finalizers": [twilio_operator::FINALIZER]}, "spec": {},
        }))
        .expect("a TwilioApiKey");
        admin
            .create(&PostParams::default(), &probe)
            .await
            .expect("create the probe");
        let editor: Api<twilio_operator::api::TwilioApiKey> =
            Api::namespaced(self.as_service_account(&ns, "probe"), &ns);
        let strip = serde_json::json!({"metadata": {"finalizers": null}});
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match editor
                .patch("probe", &PatchParams::default(), &Patch::Merge(&strip))
                .await
            {
                Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("finalizer") => break,
                outcome => {
                    if outcome.is_ok() {
                        let back =
                            serde_json::json!({"metadata": {"finalizers": [twilio_operator::FINALIZER]}});
                        admin
                            .patch("probe", &PatchParams::default(), &Patch::Merge(&back))
                            .await
                            .expect("put the finalizer back");
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the admission policy never took effect: {outcome:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let strip = serde_json::json!({"metadata": {"finalizers": null}});
        admin
            .patch("probe", &PatchParams::default(), &Patch::Merge(&strip))
            .await
            .expect("an admin may remove the finalizer");
    }

    /// The chart's `template` as `helm template` renders it with the default values.
    fn render_chart(&self, template: &str) -> String {
        let chart = repo_root().join("charts/twilio-operator");
        let chart = chart.to_str().unwrap();
        self.run_tool("helm", &["template", "tw", chart, "--show-only", template])
    }

    /// Applies the chart's ClusterRoles that aggregate into the built-in view and edit roles.
    async fn apply_chart_aggregated_roles(&self) {
        let rendered = self.render_chart("templates/rbac.yaml");
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
    twilio_sandbox::cluster::free_port().expect("free port")
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

/// A binary of another package of the workspace, built (debug) on first use so no test depends
/// on build order.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    // The profile of the binary asking: a benchmark (release) measures against a release build,
    // so a debug helper's cost does not crowd the process being measured.
    let release = !cfg!(debug_assertions);
    let path = target.join(if release { "release" } else { "debug" }).join(bin);
    let mut built = BUILT.lock().unwrap();
    if !built.contains(&path) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", package, "--bin", bin])
            .args(release.then_some("--release"))
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building {bin} failed");
        built.push(path.clone());
    }
    path
}

/// The directory of the control-plane binaries, which the setup script builds if missing.
pub fn control_plane_binaries() -> PathBuf {
    let out = setup_script("control-plane.sh");
    PathBuf::from(
        out.lines()
            .last()
            .expect("the script prints the binary directory")
            .trim(),
    )
}

fn start() -> ControlPlane {
    let bin_dir = control_plane_binaries();
    let dir = tempfile::Builder::new()
        .prefix("twop-cp-")
        .tempdir()
        .expect("temp dir")
        .keep();
    // SAFETY: registering a plain extern "C" function with no captured state.
    unsafe { libc::atexit(teardown_at_exit) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = runtime
        .block_on(Cluster::start(&bin_dir, &dir))
        .unwrap_or_else(|e| panic!("start the control plane: {e}"));
    eprintln!(
        "control plane ready in {:.1}s ({})",
        cluster.startup.as_secs_f64(),
        dir.display()
    );
    ControlPlane {
        cluster,
        namespaces: AtomicU32::new(0),
    }
}

extern "C" fn teardown_at_exit() {
    if let Some(cp) = CLUSTER.get() {
        cp.cluster.stop();
    }
}
