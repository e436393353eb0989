//! The twilio-operator process: wires the clients and runs the controllers until SIGTERM or
//! Ctrl-C, letting in-flight reconciles finish.

use backon::{ExponentialBuilder, Retryable};
use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use twilio_operator::budget::callbacks::Callbacks;
use twilio_operator::context::Recorder;
use twilio_operator::context::{Cluster, Context};
use twilio_operator::controller::until;
use twilio_operator::fence::Fence;
use twilio_operator::leadership::{Timing, keep_fence};
use twilio_operator::metrics::Metrics;
use twilio_operator::server::Readiness;
use twilio_operator::twilio::{BaseUrls, ClientConfig, Credentials, TwilioClient};

/// Kubernetes operator for Twilio subaccounts and API keys.
///
/// Twilio credentials come from the environment, as Twilio's SDKs read them: TWILIO_ACCOUNT_SID
/// with TWILIO_AUTH_TOKEN, or TWILIO_ACCOUNT_SID with TWILIO_API_KEY and TWILIO_API_SECRET (a
/// Main key). TWILIO_REGION and TWILIO_EDGE pick Twilio's regional hosts.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Namespaces to watch, comma-separated; empty watches the whole cluster.
    #[arg(long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Label selector: only the TwilioApiKeys and TwilioSubaccounts it matches are reconciled, so
    /// several operators (each with its own leader-election Lease) can split the objects
    /// between them. A key and the subaccount it lives in must be in the same shard.
    #[arg(long = "selector", env = "WATCH_LABEL_SELECTOR")]
    selector: Option<String>,
    /// One base URL for all of Twilio's hosts (api, iam, accounts), for the emulator or a proxy.
    #[arg(long, env = "TWILIO_BASE_URL")]
    twilio_base_url: Option<String>,
    /// Twilio requests in flight per account at most (Twilio limits concurrency per account).
    #[arg(long, env = "TWILIO_MAX_CONCURRENCY", default_value_t = 8)]
    twilio_max_concurrency: usize,
    /// Twilio requests per second per account at most; unlimited when unset.
    #[arg(long, env = "TWILIO_REQUESTS_PER_SECOND")]
    twilio_requests_per_second: Option<NonZeroU32>,
    /// How often to look for drift at Twilio (one key list per account), such as "10m".
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    resync_interval: Duration,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Address serving /metrics.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,
    /// Address serving /healthz and /readyz.
    #[arg(long, env = "HEALTH_ADDRESS", default_value = "0.0.0.0:8081")]
    health_address: SocketAddr,
    /// Elect a leader through a Lease, so that of several replicas only one writes.
    #[arg(long, env = "LEADER_ELECT", default_value_t = false, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// The operator's own namespace, where its leader-election Lease and the claims on
    /// subaccount SIDs (one Lease each) live.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// A ConfigMap in the operator's namespace describing a TwilioAccount to keep applied (keys
    /// `name` and `spec.yaml`); the Helm chart renders it from its defaultAccount values.
    #[arg(long, env = "DEFAULT_ACCOUNT_CONFIGMAP")]
    default_account_configmap: Option<String>,
    /// The public base URL at which Twilio reaches the webhook address, such as
    /// "https://twilio-operator.example.com". When set, each budgeted TwilioSubaccount gets
    /// usage triggers at Twilio that call it as spend crosses a threshold; unset, budgets rely
    /// on polling alone.
    #[arg(long, env = "BUDGET_WEBHOOK_URL")]
    budget_webhook_url: Option<String>,
    /// Address serving the usage-trigger endpoint, when budget_webhook_url is set.
    #[arg(long, env = "WEBHOOK_ADDRESS", default_value = "0.0.0.0:8082")]
    webhook_address: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LEADER_ELECTION_LEASE", default_value = "twilio-operator")]
    leader_election_lease: String,
    /// Seconds a leader holds the Lease without renewing it; a standby takes over after that.
    #[arg(long, env = "LEADER_ELECTION_LEASE_SECONDS", default_value_t = 15)]
    leader_election_lease_seconds: u64,
    /// How long a leader goes on acting after its last renewal it has seen, such as "10s";
    /// shorter than the Lease. Default: two thirds of the Lease (10s of 15s).
    #[arg(long, env = "LEADER_ELECTION_RENEW_DEADLINE", value_parser = parse_duration)]
    leader_election_renew_deadline: Option<Duration>,
    /// How often the Lease is renewed and read back, such as "2s"; shorter than the renew
    /// deadline. Default: two fifteenths of the Lease (2s of 15s).
    #[arg(long, env = "LEADER_ELECTION_RETRY_PERIOD", value_parser = parse_duration)]
    leader_election_retry_period: Option<Duration>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    twilio_operator::api::duration::parse(text).map_err(|e| e.to_string())
}

// jemalloc, configured in .cargo/config.toml to hand freed pages back within a second and to keep
// no per-thread caches: after a burst of thousands of reconciles glibc's malloc kept 13-15 MiB
// more resident at 10,000 keys (the benchmark's "operator RSS after").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Display, not Debug: the message is for a person.
            eprintln!("twilio-operator: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(mut args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // The chart sets WATCH_NAMESPACES="" for "the whole cluster".
    args.namespaces.retain(|ns| !ns.trim().is_empty());
    // Exactly one rustls provider in the process: kube and reqwest both use the default.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| "a rustls crypto provider was already installed")?;
    init_tracing(&args.log_format);
    let timing = Timing::new(
        Duration::from_secs(args.leader_election_lease_seconds),
        args.leader_election_renew_deadline,
        args.leader_election_retry_period,
    )?;
    let identity =
        std::env::var("POD_NAME").unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
    // With an election, nothing is sent to Twilio before this replica has seen its own renewal.
    let fence = if args.leader_elect {
        Fence::closed()
    } else {
        Fence::always_open()
    };

    let client = Client::try_default().await?;
    check_crds(&client).await?;

    let urls = args
        .twilio_base_url
        .as_deref()
        .map_or_else(BaseUrls::from_env, BaseUrls::single);
    let mut config = ClientConfig::new(urls);
    config.max_concurrency = args.twilio_max_concurrency;
    config.requests_per_second = args.twilio_requests_per_second;
    config.instance = Some(identity.clone());
    let metrics = Arc::new(Metrics::default());
    let observer = metrics.clone();
    let twilio = TwilioClient::new(config)?
        .observed_by(Arc::new(move |operation, status| {
            observer.twilio_request(operation, status)
        }))
        .fenced_by(fence.clone());
    let default_credentials = match Credentials::from_env() {
        Ok(creds) => Some(creds),
        Err(e) => {
            warn!(error = %e, "no usable Twilio credentials in the environment; TwilioAccounts with credentials.fromEnvironment cannot be used");
            None
        }
    };
    let reporter = Reporter {
        controller: "twilio-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    // Read-only caches of TwilioAccounts and Namespaces, kept current for the whole process so a
    // new leader decides from full caches at once.
    let ((accounts, namespaces, changes, filled), keep_current) =
        twilio_operator::controller::shared_caches(&client, &recorder);
    tokio::spawn(keep_current);
    let ctx = Arc::new(Context::new(
        client,
        twilio,
        default_credentials,
        recorder,
        args.resync_interval,
        metrics,
        Cluster {
            accounts,
            namespaces,
            changes,
            own_namespace: args.leader_election_namespace.clone(),
            filled,
        },
    ));
    let callbacks = Arc::new(Callbacks::new(args.budget_webhook_url.clone()));

    let readiness = Readiness::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = || until(stopped.clone());
    let server = twilio_operator::server::serve(
        args.metrics_address,
        args.health_address,
        ctx.metrics.clone(),
        ctx.client.clone(),
        readiness.clone(),
        stopped.clone(),
    )
    .await?;
    let server = tokio::spawn(server);
    if args.budget_webhook_url.is_some() {
        let listener = tokio::net::TcpListener::bind(args.webhook_address).await?;
        info!(webhook = %listener.local_addr()?, "serving the usage-trigger endpoint");
        let app = twilio_operator::webhook::router(ctx.clone(), callbacks.clone());
        tokio::spawn(twilio_operator::server::listener::serve(
            listener,
            app,
            twilio_operator::server::listener::MAX_CONNECTIONS,
            stopped.clone(),
        ));
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down: finishing in-flight reconciles");
        let _ = stop.send(true);
    });

    let scopes: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().cloned().map(Some).collect()
    };
    info!(namespaces = ?args.namespaces, selector = ?args.selector, leader_elect = args.leader_elect, "starting");
    if let Some(selector) = &args.selector
        && !shard_keys_are_guarded(selector)
    {
        tracing::warn!(
            selector,
            "the shard selector uses label keys outside twilio.operator.dev/, which the chart's admission policy does not guard: a namespace editor can relabel an object out of this shard and escape its budget and deletionPolicy"
        );
    }
    if args.leader_elect {
        let namespace = &args.leader_election_namespace;
        let build = || {
            LeaseManagerBuilder::new(ctx.client.clone(), &args.leader_election_lease)
                .with_namespace(namespace)
                .with_identity(&identity)
                .with_duration(timing.lease_seconds())
                .with_grace(timing.renew_grace_seconds())
                .build()
        };
        let manager = build
            .retry(startup_backoff())
            .notify(|e, delay| warn!(error = %e, retry_in = ?delay, "cannot set up the leader Lease yet"))
            .await?;
        let (mut leading, lease_task) = manager.watch().await;
        let leases = Api::namespaced(ctx.client.clone(), namespace);
        let lease_name = args.leader_election_lease.clone();
        tokio::spawn(keep_fence(
            leases,
            lease_name,
            identity.clone(),
            timing,
            fence.clone(),
        ));
        readiness.set();
        info!(%identity, lease = ?timing.lease, renew_deadline = ?timing.renew_deadline, retry = ?timing.retry, "standing for election");
        loop {
            // A term starts once the Lease is this replica's and a renewal of it has been seen.
            let elected = async {
                leading.wait_for(|l| *l).await.map(drop)?;
                fence.opened().await;
                Ok::<(), tokio::sync::watch::error::RecvError>(())
            };
            tokio::select! {
                elected = elected => elected.map_err(|_| "the leader-election task ended")?,
                _ = shutdown() => break,
            }
            info!(%identity, "leading: starting controllers");
            let (halt, halted) = tokio::sync::watch::channel(false);
            ctx.set_leading(true);
            let mut controllers = Box::pin(run_controllers(&ctx, &callbacks, &args, &scopes, halted));
            // Leadership ends when the Lease is another's (or its task ended), or when no renewal
            // was seen within the renew deadline.
            let lost = async {
                tokio::select! {
                    _ = leading.wait_for(|l| !*l) => "the Lease is held by another replica",
                    _ = fence.lapsed() => "no renewal of the Lease was seen within the renew deadline",
                }
            };
            tokio::pin!(lost);
            // Biased, leadership first: after a stall the fence is looked at before any pass
            // is polled again, so none goes on once it has lapsed.
            let why = tokio::select! {
                biased;
                why = &mut lost => Some(why),
                // A graceful stop lets in-flight passes finish, unless leadership ends meanwhile.
                _ = shutdown() => {
                    let _ = halt.send(true);
                    tokio::select! {
                        biased;
                        why = &mut lost => Some(why),
                        _ = &mut controllers => None,
                    }
                }
                _ = &mut controllers => None,
            };
            ctx.set_leading(false);
            let Some(why) = why else {
                info!(%identity, "stopped leading: shutting down");
                break;
            };
            // Not a graceful stop: in-flight passes are dropped where they stand, as in a crash,
            // which every step survives, so nothing is sent once the fence has closed.
            fence.close();
            drop(controllers);
            warn!(%identity, reason = why, "stopped leading: controllers stopped, standing by");
            if shutdown_requested(&stopped) {
                break;
            }
            // The new leader reports the objects now; series left here would go stale.
            ctx.metrics.forget_objects();
            ctx.new_term();
        }
        // Dropping the receiver makes the lease task release the Lease for a quick handover.
        drop(leading);
        let _ = lease_task.await;
    } else {
        readiness.set();
        ctx.set_leading(true);
        run_controllers(&ctx, &callbacks, &args, &scopes, stopped.clone()).await;
    }
    let _ = server.await;
    info!("stopped");
    Ok(())
}

/// Retries at startup while the apiserver cannot be reached (as after a node restart), with
/// backoff and without end; only an answer the apiserver gives ends the wait.
fn startup_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
}

/// Whether `e` is the apiserver answering, not failing to be reached.
fn answered(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(_))
}

/// Checks that the CRDs are installed, all at once: only a CRD the apiserver says is missing
/// stops the process.
async fn check_crds(client: &Client) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names: Vec<String> = twilio_operator::crds::all()
        .into_iter()
        .map(|crd| crd.metadata.name.unwrap_or_default())
        .collect();
    let found = futures::future::join_all(names.iter().map(|name| {
        (|| crds.get(name))
            .retry(startup_backoff())
            .when(|e| !answered(e))
            .notify(|e, delay| warn!(error = %e, retry_in = ?delay, "cannot reach the apiserver yet"))
    }))
    .await;
    for (name, found) in names.iter().zip(found) {
        match found {
            Ok(_) => {}
            // A namespace-scoped install may not read CRDs; the watches will say if they are missing.
            Err(kube::Error::Api(status)) if status.code == 403 => {
                warn!(crd = %name, "cannot check that the CRD is installed (forbidden)")
            }
            Err(e) => {
                return Err(format!(
                    "CRD {name} is not installed ({e}); apply crds/ first: kubectl apply -f crds/"
                ));
            }
        }
    }
    Ok(())
}

/// Whether SIGTERM or Ctrl-C has asked the process to stop.
fn shutdown_requested(stopped: &tokio::sync::watch::Receiver<bool>) -> bool {
    *stopped.borrow()
}

async fn run_controllers(
    ctx: &Arc<Context>,
    callbacks: &Arc<Callbacks>,
    args: &Args,
    scopes: &[Option<String>],
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let watch = twilio_operator::controller::Watch {
        scopes: scopes.to_vec(),
        selector: args.selector.clone().filter(|s| !s.trim().is_empty()),
    };
    twilio_operator::controller::run(
        ctx.clone(),
        callbacks.clone(),
        &watch,
        args.default_account_configmap.clone(),
        stop,
    )
    .await;
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "twilio-operator".into())
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Whether every label key `selector` names is under twilio.operator.dev/, the prefix only the
/// operator and cluster admins may change once an object exists.
fn shard_keys_are_guarded(selector: &str) -> bool {
    // Values of `key in (a,b)` are no keys.
    let mut depth = 0;
    let keys: String = selector
        .chars()
        .filter(|c| {
            depth += i32::from(*c == '(') - i32::from(*c == ')');
            depth == 0 && *c != ')'
        })
        .collect();
    keys.split(',')
        .map(|term| term.trim().trim_start_matches('!'))
        .map(|term| term.split(['=', '!', ' ']).next().unwrap_or_default())
        .all(|key| key.starts_with("twilio.operator.dev/"))
}

#[cfg(test)]
mod tests {
    use super::shard_keys_are_guarded;

    #[test]
    fn shard_selectors_are_guarded_only_under_the_operators_prefix() {
        assert!(shard_keys_are_guarded("twilio.operator.dev/shard=a"));
        assert!(shard_keys_are_guarded(
            "twilio.operator.dev/shard in (a,b),!twilio.operator.dev/paused"
        ));
        assert!(shard_keys_are_guarded("twilio.operator.dev/shard!=b"));
        assert!(!shard_keys_are_guarded("team=a"));
        assert!(!shard_keys_are_guarded(
            "twilio.operator.dev/shard=a,team notin (x)"
        ));
    }
}
