//! The twilio-operator process: wires the clients and runs the controllers until SIGTERM or
//! Ctrl-C, letting in-flight reconciles finish.

use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use twilio_operator::context::Context;
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
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    twilio_operator::api::duration::parse(text).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // Exactly one rustls provider in the process: kube and reqwest both use the default.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| "a rustls crypto provider was already installed")?;
    init_tracing(&args.log_format);

    let client = Client::try_default().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in twilio_operator::crds::all() {
        let name = crd.metadata.name.unwrap_or_default();
        crds.get(&name)
            .await
            .map_err(|e| format!("CRD {name} is not installed ({e}); apply crds/ first: kubectl apply -f crds/"))?;
    }

    let urls = args.twilio_base_url.as_deref().map_or_else(BaseUrls::from_env, BaseUrls::single);
    let mut config = ClientConfig::new(urls);
    config.max_concurrency = args.twilio_max_concurrency;
    config.requests_per_second = args.twilio_requests_per_second;
    let twilio = TwilioClient::new(config)?;
    let default_credentials = match Credentials::from_env() {
        Ok(creds) => Some(creds),
        Err(e) => {
            warn!(error = %e, "no usable Twilio credentials in the environment; objects must name a Secret in spec.credentialsRef");
            None
        }
    };
    let reporter = Reporter { controller: "twilio-operator".into(), instance: std::env::var("POD_NAME").ok() };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(client, twilio, default_credentials, recorder, args.resync_interval));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scopes: Vec<Option<String>> = if args.namespaces.is_empty() { vec![None] } else { args.namespaces.iter().cloned().map(Some).collect() };
    info!(namespaces = ?args.namespaces, "starting controllers");
    let controllers = futures::future::join_all(scopes.into_iter().map(|scope| twilio_operator::controller::run(ctx.clone(), scope, stopped.clone())));
    let signal = async move {
        shutdown_signal().await;
        info!("shutting down: finishing in-flight reconciles");
        let _ = stop.send(true);
    };
    tokio::join!(controllers, signal);
    info!("stopped");
    Ok(())
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
