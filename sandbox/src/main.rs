//! `twilio-sandbox`: a local Kubernetes cluster with a simulated node, the Twilio emulator (or
//! real Twilio, when asked) and twilio-operator, with a demo applied, in the foreground until
//! Ctrl-C. `hack/sandbox.sh` builds everything and runs it.

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use twilio_sandbox::cluster::{Cluster, Error, free_port, tail, tethered};
use twilio_sandbox::demo;

/// A local sandbox for twilio-operator: Kubernetes (etcd, kube-apiserver, controller-manager,
/// scheduler and a kwok node), the Twilio emulator and the operator, with a demo subaccount, API
/// key and Deployment. Stops and removes everything on Ctrl-C.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory with the cluster's binaries (hack/control-plane.sh builds them and prints it).
    #[arg(long, env = "SANDBOX_BIN_DIR")]
    bin_dir: PathBuf,
    /// The twilio-operator binary; by default the one next to this program.
    #[arg(long)]
    operator: Option<PathBuf>,
    /// Use real Twilio, with TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN from the environment,
    /// instead of the emulator. The demo creates a real subaccount and key, and closes the
    /// subaccount on exit.
    #[arg(long)]
    real_twilio: bool,
    /// Run the demo through one rotation, check that the pods rolled onto the new key exactly
    /// once, then stop; exits 0 when everything held, 1 otherwise.
    #[arg(long)]
    check: bool,
}

/// How long any one step may take before the sandbox gives up.
const STEP: Duration = Duration::from_secs(90);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let began = Instant::now();
    let dir = match tempfile::Builder::new().prefix("twilio-sandbox-").tempdir() {
        Ok(dir) => dir.keep(),
        Err(e) => return fail(&format!("cannot make a scratch directory: {e}")),
    };
    let mut sandbox = Sandbox {
        dir,
        began,
        cluster: None,
        operator: None,
    };
    let outcome = tokio::select! {
        outcome = sandbox.run(&args) => outcome,
        _ = interrupted() => Ok(()),
    };
    println!();
    // After a failure the logs stay, for the person to read.
    sandbox.stop(outcome.is_ok()).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("twilio-sandbox: {message}");
    ExitCode::FAILURE
}

/// Ctrl-C, SIGTERM, or the terminal closing (SIGHUP): each stops the sandbox cleanly.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut hangup = signal(SignalKind::hangup()).expect("a SIGHUP handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = hangup.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

struct Sandbox {
    dir: PathBuf,
    began: Instant,
    cluster: Option<Cluster>,
    operator: Option<Child>,
}

impl Sandbox {
    fn step(&self, text: &str) {
        println!("[{:>5.1}s] {text}", self.began.elapsed().as_secs_f64());
    }

    async fn run(&mut self, args: &Args) -> Result<(), Error> {
        self.step("starting Kubernetes: etcd, kube-apiserver, controller-manager, scheduler, one kwok node");
        let cluster = Cluster::start(&args.bin_dir, &self.dir).await?;
        let client = cluster.admin()?;
        let kubeconfig = cluster.kubeconfig.clone();
        self.cluster = Some(cluster);

        let twilio = if args.real_twilio {
            real_twilio()?
        } else {
            self.step("starting the Twilio emulator");
            emulator().await?
        };
        if args.real_twilio {
            println!(
                "\n  *** REAL TWILIO: account {}. The demo creates a real subaccount and API key\n  \
                 *** there (usage on them is billed), and closes the subaccount when you stop.\n",
                twilio.account_sid
            );
        }
        self.step("starting twilio-operator (its log: operator.log below)");
        let operator = args.operator.clone().unwrap_or_else(beside_me);
        let health = self.start_operator(&operator, &kubeconfig, &twilio)?;
        self.wait_operator_ready(&health).await?;

        self.step("applying the demo (sandbox/demo.yaml)");
        demo::apply(&client).await?;
        let working = demo::working(&client, STEP).await?;
        self.step(&format!(
            "ready: subaccount {} with key {}, Deployment {} has {} pods Running (ReplicaSet {})",
            working.subaccount_sid,
            working.key_sid,
            demo::DEPLOYMENT,
            working.rollout.pods.len(),
            working.rollout.replica_set
        ));

        if args.check {
            self.step("rotating the key (as `kubectl annotate ... twilio.operator.dev/rotate=...` does)");
            let after = demo::rotate(&client, &working, "sandbox-check", STEP).await?;
            self.step(&format!(
                "rotated: key {} published, old key {} revoked after its grace period, Deployment rolled \
                 once to ReplicaSet {} with {} pods Running",
                after.key_sid,
                working.key_sid,
                after.rollout.replica_set,
                after.rollout.pods.len()
            ));
            self.step("check passed");
            return Ok(());
        }

        self.print_next_steps(&kubeconfig, &twilio);
        self.watch_operator().await
    }

    fn start_operator(&mut self, binary: &Path, kubeconfig: &Path, twilio: &Twilio) -> Result<String, Error> {
        let log = self.dir.join("operator.log");
        let file = std::fs::File::create(&log)?;
        let health = format!("127.0.0.1:{}", free_port()?);
        let mut command = tethered(binary);
        // Only what the sandbox sets: an exported WATCH_NAMESPACES or LEADER_ELECT meant for
        // another install would quietly keep the demo from ever becoming Ready.
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig)
            .env("TWILIO_ACCOUNT_SID", &twilio.account_sid)
            .env("TWILIO_AUTH_TOKEN", &twilio.auth_token)
            .env("METRICS_ADDRESS", format!("127.0.0.1:{}", free_port()?))
            .env("HEALTH_ADDRESS", &health)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        if let Some(url) = &twilio.base_url {
            command.env("TWILIO_BASE_URL", url);
        }
        let child = command.spawn().map_err(|e| {
            format!(
                "cannot start {}: {e} (build it with `cargo build --release --bin twilio-operator`)",
                binary.display()
            )
        })?;
        self.operator = Some(child);
        Ok(health)
    }

    async fn wait_operator_ready(&mut self, health: &str) -> Result<(), Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + STEP;
        loop {
            let ready = http.get(format!("http://{health}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            self.operator_alive()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "the operator was not ready within {STEP:?}:\n{}",
                    self.operator_log()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn operator_alive(&mut self) -> Result<(), Error> {
        let exited = self.operator.as_mut().and_then(|c| c.try_wait().ok().flatten());
        match exited {
            Some(status) => Err(format!("the operator exited ({status}):\n{}", self.operator_log()).into()),
            None => Ok(()),
        }
    }

    fn operator_log(&self) -> String {
        tail(&self.dir.join("operator.log"), 20)
    }

    /// Runs until interrupted, or fails if the operator dies.
    async fn watch_operator(&mut self) -> Result<(), Error> {
        loop {
            self.operator_alive()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn print_next_steps(&self, kubeconfig: &Path, twilio: &Twilio) {
        let dir = self.dir.display();
        let kc = kubeconfig.display();
        let (ns, key, deploy) = (demo::NAMESPACE, demo::KEY, demo::DEPLOYMENT);
        let rotate = demo::rotate_command();
        let twilio_line = match &twilio.base_url {
            Some(url) => format!("Twilio emulator:  {url} (its state: {url}/_emulator/state)"),
            None => format!("Twilio:           the real one, account {}", twilio.account_sid),
        };
        let sub = demo::SUBACCOUNT;
        // Spend is something only the emulator can fake.
        let budget = match &twilio.base_url {
            Some(url) => format!(
                "
Spend against the subaccount's budget (20.00 a month; warns at 50% and 80%, suspends at 100%):

  sid=$(kubectl -n {ns} get twsub {sub} -o jsonpath='{{.status.sid}}')
  curl -s -H 'Content-Type: application/json' -d '{{\"add_usage\": 12}}' {url}/_emulator/accounts/$sid
  kubectl -n {ns} annotate twsub {sub} example.com/look=\"$(date +%s)\" --overwrite   # look now
  kubectl -n {ns} get twsub {sub}             # BUDGET Warning; add 10 more: Exceeded, suspended

Widen the subaccount's voice dialing permissions at Twilio, as anybody holding its auth token
could, to toll-fraud numbers in Cuba; the operator puts them back within its resync interval
(10 minutes) and says so in an event:

  token=$(kubectl -n {ns} get secret {sub}-twilio -o jsonpath='{{.data.TWILIO_AUTH_TOKEN}}' | base64 -d)
  curl -s -u \"$sid:$token\" --data-urlencode 'UpdateRequest=[{{\"iso_code\":\"CU\",\"low_risk_numbers_enabled\":true,\"high_risk_tollfraud_numbers_enabled\":true}}]' {url}/v1/DialingPermissions/BulkCountryUpdates
  kubectl -n {ns} annotate twsub {sub} example.com/look=\"$(date +%s%N)\" --overwrite   # look now
  kubectl -n {ns} get events --field-selector reason=DialingPermissionsRepaired   # CU put back
"
            ),
            None => String::new(),
        };
        println!(
            "
The sandbox is up. In another terminal:

  export KUBECONFIG={kc}
  kubectl get twilio -A                      # the account, subaccount and key, with their status
  kubectl -n {ns} get secret {key}-twilio -o jsonpath='{{.data.TWILIO_API_KEY}}' | base64 -d; echo

Rotate the key and watch the pods roll (the old key is revoked 20s later):

  kubectl -n {ns} get pods -l app={deploy} -w &
  {rotate}
  kubectl -n {ns} describe twkey {key}        # events: KeyCreated, KeyRotated, KeyRevoked

{budget}
Try your own objects: examples/ has every field; `kubectl explain twilioapikey.spec` documents them.

Operator log:     {dir}/operator.log
{twilio_line}

Press Ctrl-C to stop; everything (the cluster, and {dir}) is removed."
        );
    }

    /// Removes the demo (so real Twilio keeps nothing), stops the operator and the cluster, and
    /// unless `tidy` is false (after a failure) removes the scratch directory.
    async fn stop(&mut self, tidy: bool) {
        if let (Some(cluster), Some(_)) = (&self.cluster, &self.operator) {
            self.step(
                "stopping: deleting the demo's key and subaccount (the operator revokes and closes them)",
            );
            let removed = match cluster.admin() {
                Ok(client) => demo::remove(&client, Duration::from_secs(30)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                eprintln!(
                    "twilio-sandbox: the demo was not fully removed ({e}); with --real-twilio, close its subaccount in the Twilio Console if it is still there (its SID is in operator.log)"
                );
            }
        }
        if let Some(mut operator) = self.operator.take() {
            // SAFETY: signalling our own child, which finishes its reconciles on SIGTERM.
            unsafe { libc::kill(operator.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(operator.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = operator.kill();
            let _ = operator.wait();
        }
        if let Some(cluster) = self.cluster.take() {
            if !tidy {
                cluster.keep_files();
            }
            cluster.stop();
        }
        if tidy {
            let _ = std::fs::remove_dir_all(&self.dir);
            self.step(&format!("stopped; removed {}", self.dir.display()));
        } else {
            self.step(&format!("stopped; the logs are kept in {}", self.dir.display()));
        }
    }
}

/// Where the operator gets its Twilio credentials.
struct Twilio {
    account_sid: String,
    auth_token: String,
    base_url: Option<String>,
}

fn real_twilio() -> Result<Twilio, Error> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("--real-twilio needs {name} in the environment"))
    };
    Ok(Twilio {
        account_sid: var("TWILIO_ACCOUNT_SID")?,
        auth_token: var("TWILIO_AUTH_TOKEN")?,
        base_url: None,
    })
}

/// Serves the emulator from this process, with a fresh main account.
async fn emulator() -> Result<Twilio, Error> {
    use twilio_emulator::{App, faults::Knobs, world::Rules};
    let app = Arc::new(App::new(Knobs::default(), Rules::default(), None));
    let (account_sid, auth_token) = app
        .world
        .lock()
        .map_err(|_| "emulator poisoned")?
        .bootstrap_main(None, None, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, twilio_emulator::http::router(app)).await });
    Ok(Twilio {
        account_sid,
        auth_token,
        base_url: Some(url),
    })
}

fn beside_me() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|d| d.join("twilio-operator")))
        .unwrap_or_else(|| PathBuf::from("twilio-operator"))
}
