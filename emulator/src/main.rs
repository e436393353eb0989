//! `twilio-emulator --listen 127.0.0.1:PORT`: serves the emulated Twilio APIs until SIGTERM.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use twilio_emulator::{App, contract::Contract, faults::Knobs, world::Rules};

/// A stateful, in-memory emulator of Twilio's Accounts, Keys, IAM Keys, AuthTokens, Balance and
/// Usage APIs, on one port. Its controls are under /_emulator/.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// SID of the main account to bootstrap; generated and printed when absent. Not read from
    /// TWILIO_ACCOUNT_SID: credentials exported for real Twilio must never leak into a test.
    #[arg(long, env = "EMULATOR_ACCOUNT_SID")]
    account_sid: Option<String>,
    /// Auth token of the main account; generated and printed when absent.
    #[arg(long, env = "EMULATOR_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Directory with Twilio's OpenAPI files; every request and response is checked against them.
    #[arg(long, env = "TWILIO_OAI_DIR")]
    openapi_dir: Option<PathBuf>,
    /// Milliseconds added to every request.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// In-flight requests per account before 429/20429.
    #[arg(long)]
    concurrency_limit: Option<usize>,
    /// Probability (0..1) of a 429/20429 response.
    #[arg(long, default_value_t = 0.0)]
    fault_429: f64,
    /// Probability (0..1) of a 500 or 503 response.
    #[arg(long, default_value_t = 0.0)]
    fault_5xx: f64,
    /// Probability (0..1) of a connection reset.
    #[arg(long, default_value_t = 0.0)]
    fault_reset: f64,
    /// Probability (0..1) of a response slowed by --slow-ms.
    #[arg(long, default_value_t = 0.0)]
    fault_slow: f64,
    /// Delay of a slow response, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    slow_ms: u64,
    /// Send Retry-After with this many seconds on 429 responses.
    #[arg(long)]
    retry_after_secs: Option<u64>,
    /// Subaccounts a main account may have (Twilio: 1000).
    #[arg(long, default_value_t = 1000)]
    max_subaccounts: usize,
    /// API keys an account may have.
    #[arg(long, default_value_t = 100)]
    max_keys: usize,
    /// Let a parent's Main key act on its subaccounts (disputed at Twilio; default deny).
    #[arg(long)]
    main_key_subaccount_access: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let contract = args.openapi_dir.as_deref().map(Contract::load).transpose()?;
    let knobs = Knobs {
        latency_ms: args.latency_ms,
        concurrency_limit: args.concurrency_limit,
        fault_429: args.fault_429,
        fault_5xx: args.fault_5xx,
        fault_reset: args.fault_reset,
        fault_slow: args.fault_slow,
        slow_ms: args.slow_ms,
        retry_after_secs: args.retry_after_secs,
    };
    let rules = Rules {
        max_subaccounts: args.max_subaccounts,
        max_keys: args.max_keys,
        main_key_subaccount_access: args.main_key_subaccount_access,
        omit_from_next_list: None,
        fail_next: None,
    };
    let app = Arc::new(App::new(knobs, rules, contract));
    let generated = args.auth_token.is_none();
    let (sid, token) =
        app.world
            .lock()
            .expect("world")
            .bootstrap_main(args.account_sid, args.auth_token, None);

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let mut banner = format!("twilio-emulator listening on http://{addr}\nTWILIO_ACCOUNT_SID={sid}\n");
    if generated {
        // Generated credentials are printed so a person can use them; given ones never are.
        banner.push_str(&format!("TWILIO_AUTH_TOKEN={token}\n"));
    }
    // Whoever started us may stop reading after the first line; that must not stop us.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    axum::serve(listener, twilio_emulator::http::router(app))
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn shutdown() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
