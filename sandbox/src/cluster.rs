//! A local Kubernetes cluster from pinned binaries: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and a kwok node whose pods are scheduled, run and roll, with the project's CRDs
//! Established. [`Cluster::start`] returns once all is up and reports which process failed, with
//! its log's tail; every process gets SIGKILL when the thread that started it ends
//! (`PR_SET_PDEATHSIG`), so start it from a thread that lives as long as the cluster should.
//! [`Cluster::stop`] (also on drop) is idempotent and removes the directory unless asked to keep it.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The project's CRDs, as users apply them from crds/.
pub const CRDS: [&str; 3] = [
    include_str!("../../crds/twilioaccounts.yaml"),
    include_str!("../../crds/twiliosubaccounts.yaml"),
    include_str!("../../crds/twilioapikeys.yaml"),
];

/// What kwok makes the node and its pods do.
const KWOK_STAGES: &str = include_str!("../kwok-stages.yaml");

/// The name of the simulated node every pod runs on.
pub const NODE: &str = "kwok-node-0";

/// The bearer token of the cluster's admin (group system:masters), in its kubeconfig.
pub const ADMIN_TOKEN: &str = "twilio-operator-local-admin-token";
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A running local cluster.
pub struct Cluster {
    /// Directory holding the binaries (kube-apiserver, etcd, kube-controller-manager,
    /// kube-scheduler, kwok, helm, promtool).
    pub bin_dir: PathBuf,
    /// Scratch directory: certificates, logs, etcd data, the kubeconfig.
    pub dir: PathBuf,
    /// An admin kubeconfig, for kubectl and helm.
    pub kubeconfig: PathBuf,
    /// Time from the first process spawn to a Ready node.
    pub startup: Duration,
    config: Config,
    processes: Mutex<Vec<Process>>,
    /// Whether [`Cluster::stop`] leaves the directory (and the logs in it) behind.
    keep_files: std::sync::atomic::AtomicBool,
}

struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// What it was started with, to start it again.
    args: Vec<String>,
}

impl Cluster {
    /// Starts a cluster from the binaries in `bin_dir`, keeping its files in the existing,
    /// empty directory `dir` (removed by [`Cluster::stop`]).
    pub async fn start(bin_dir: &Path, dir: &Path) -> Result<Self, Error> {
        let began = Instant::now();
        let mut cluster = Self {
            bin_dir: bin_dir.to_owned(),
            dir: dir.to_owned(),
            kubeconfig: dir.join("kubeconfig"),
            startup: Duration::ZERO,
            config: Config::new("http://unset.invalid".parse()?),
            processes: Mutex::new(Vec::new()),
            keep_files: false.into(),
        };
        let (etcd_port, etcd_peer, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        cluster.spawn(
            "etcd",
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
        )?;
        write_credentials(dir)?;
        let api_url = format!("https://127.0.0.1:{api_port}");
        cluster.spawn(
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--cert-dir={}", dir.join("certs").display()),
                format!("--secure-port={api_port}"),
                "--bind-address=127.0.0.1".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--allow-privileged=true".into(),
                // No token controller runs, so pods must not wait for a ServiceAccount token, and
                // no node-lifecycle controller runs to lift the not-ready taint from a new node.
                "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition".into(),
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
        )?;
        std::fs::write(&cluster.kubeconfig, admin_kubeconfig(&api_url))?;

        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(2))
            .build()?;
        let etcd_health = format!("{etcd_url}/health");
        cluster
            .wait_ready("etcd", || async {
                http.get(&etcd_health)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await?;
        let api_ready = format!("{api_url}/readyz");
        cluster
            .wait_ready("kube-apiserver", || async {
                http.get(&api_ready)
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await?;
        let kubeconfig = Kubeconfig::read_from(&cluster.kubeconfig)?;
        cluster.config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let client = cluster.admin()?;
        install_crds(client.clone()).await?;

        let kubeconfig_flag = format!("--kubeconfig={}", cluster.kubeconfig.display());
        cluster.spawn(
            "kube-controller-manager",
            &[
                kubeconfig_flag.clone(),
                "--controllers=garbage-collector-controller,namespace-controller,\
                 clusterrole-aggregation-controller,deployment-controller,replicaset-controller,\
                 resourcequota-controller"
                    .into(),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
            ],
        )?;
        cluster.spawn(
            "kube-scheduler",
            &[
                kubeconfig_flag.clone(),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
            ],
        )?;
        let stages = dir.join("kwok-stages.yaml");
        std::fs::write(&stages, KWOK_STAGES)?;
        cluster.spawn(
            "kwok",
            &[
                kubeconfig_flag,
                format!("--config={}", stages.display()),
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
                "--cidr=10.1.0.0/16".into(),
                "--node-ip=127.0.0.1".into(),
            ],
        )?;
        add_node(&cluster, client).await?;
        cluster.startup = began.elapsed();
        Ok(cluster)
    }

    /// A client with cluster-admin rights (group system:masters).
    pub fn admin(&self) -> Result<Client, Error> {
        Ok(Client::try_from(self.config.clone())?)
    }

    /// The admin client configuration.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// The last lines of a process's log, such as `kube-apiserver`.
    pub fn log_tail(&self, name: &str) -> String {
        tail(&self.dir.join(format!("{name}.log")), 30)
    }

    /// Leaves the directory, with every process's log, when the cluster stops.
    pub fn keep_files(&self) {
        self.keep_files.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// SIGTERM to each process group, SIGKILL to whatever is left after five seconds, then the
    /// directory is removed (unless [`Cluster::keep_files`] was called).
    pub fn stop(&self) {
        let mut procs = self
            .processes
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        if procs.is_empty() {
            return;
        }
        for p in procs.iter().rev() {
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
        if !self.keep_files.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn spawn(&self, name: &'static str, args: &[String]) -> Result<(), Error> {
        let log = self.dir.join(format!("{name}.log"));
        // Appended to: a process started again keeps the log of its earlier run.
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let bin = self.bin_dir.join(name);
        let child = tethered(&bin)
            .args(args)
            // kwok would also read a configuration from the user's home.
            .env("KWOK_WORKDIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        self.processes
            .lock()
            .map_err(|_| "process list poisoned")?
            .push(Process {
                name,
                child,
                log,
                args: args.to_vec(),
            });
        Ok(())
    }

    /// Kills process `name` (its whole process group, SIGKILL), as a crash or a machine restart
    /// would, keeping what it was started with for [`Cluster::start_again`].
    pub fn kill_process(&self, name: &str) -> Result<(), Error> {
        let mut procs = self.processes.lock().map_err(|_| "process list poisoned")?;
        let process = procs
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("no process {name}"))?;
        // SAFETY: signalling a process group we created; a stale id at worst gets ESRCH.
        unsafe { libc::kill(-(process.child.id() as i32), libc::SIGKILL) };
        process.child.wait()?;
        Ok(())
    }

    /// Starts process `name` again, as it was started first, after [`Cluster::kill_process`];
    /// for the apiserver, returns once it answers again. The process is tied to the calling
    /// thread (see [`tethered`]).
    pub async fn start_again(&self, name: &str) -> Result<(), Error> {
        let (name, args) = {
            let mut procs = self.processes.lock().map_err(|_| "process list poisoned")?;
            let at = procs
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| format!("no process {name}"))?;
            let old = procs.remove(at);
            (old.name, old.args)
        };
        self.spawn(name, &args)?;
        if name == "kube-apiserver" {
            let client = self.admin()?;
            self.wait_ready(name, || async { client.apiserver_version().await.is_ok() })
                .await?;
        }
        Ok(())
    }

    /// Polls `ready` until it holds, failing fast with the process's log if the process exits.
    async fn wait_ready<F, Fut>(&self, name: &str, mut ready: F) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready().await {
                return Ok(());
            }
            let exited = {
                let mut procs = self.processes.lock().map_err(|_| "process list poisoned")?;
                procs
                    .iter_mut()
                    .find(|p| p.name == name)
                    .and_then(|p| p.child.try_wait().ok().flatten().map(|s| (s, p.log.clone())))
            };
            if let Some((status, log)) = exited {
                return Err(
                    format!("{name} exited with {status} during startup:\n{}", tail(&log, 30)).into(),
                );
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} not ready after {START_TIMEOUT:?}:\n{}",
                    self.log_tail(name)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
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

pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes the static admin token and the service-account signing key pair.
fn write_credentials(dir: &Path) -> Result<(), Error> {
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n"),
    )?;
    let key = rcgen::KeyPair::generate()?;
    std::fs::write(dir.join("sa.key"), key.serialize_pem())?;
    std::fs::write(dir.join("sa.pub"), key.public_key_pem())?;
    Ok(())
}

fn admin_kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {ADMIN_TOKEN}
contexts:
- name: local
  context:
    cluster: local
    user: admin
current-context: local
"
    )
}

/// Applies the CRDs and waits until they are Established.
async fn install_crds(client: Client) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let mut names = Vec::new();
    for text in CRDS {
        let crd: CustomResourceDefinition = serde_saphyr::from_str(text)?;
        let name = crd.metadata.name.clone().ok_or("a CRD without a name")?;
        crds.patch(
            &name,
            &PatchParams::apply("twilio-sandbox").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        names.push(name);
    }
    for name in names {
        tokio::time::timeout(
            START_TIMEOUT,
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| format!("CRD {name} not Established"))??;
    }
    Ok(())
}

/// Registers the simulated node and waits until kwok reports it Ready.
async fn add_node(cluster: &Cluster, client: Client) -> Result<(), Error> {
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": NODE,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux", "type": "kwok"},
        },
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        },
    }))?;
    let nodes: Api<Node> = Api::all(client);
    nodes
        .patch(
            NODE,
            &PatchParams::apply("twilio-sandbox").force(),
            &Patch::Apply(&node),
        )
        .await?;
    let ready = |n: Option<&Node>| {
        n.and_then(|n| n.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    match tokio::time::timeout(START_TIMEOUT, await_condition(nodes, NODE, ready)).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(format!(
            "node {NODE} not Ready after {START_TIMEOUT:?}:\n{}",
            cluster.log_tail("kwok")
        )
        .into()),
    }
}
