//! The twilio-operator process: wires the Kubernetes client, checks that the CRDs are installed
//! and runs until SIGTERM or Ctrl-C.

use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use tracing::info;

/// Kubernetes operator for Twilio subaccounts and API keys.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
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
    info!("CRDs present; running until SIGTERM");
    shutdown_signal().await;
    info!("shutting down");
    Ok(())
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
