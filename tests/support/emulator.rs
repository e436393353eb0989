//! The Twilio emulator as tests use it: the `twilio-emulator` binary started the way a user
//! starts it, checking every request and response against Twilio's OpenAPI files, which the
//! project's own script fetches from npm (with the official Python SDK from PyPI).
//!
//! Contract: [`Emulator::start`] gives a fresh emulator with a known main account; dropping it
//! kills the process. [`Emulator::assert_contract_clean`] fails the test when anything that
//! crossed the wire departed from Twilio's spec.

use super::{setup_script, tethered, workspace_binary};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use twilio_operator::twilio::{BaseUrls, ClientConfig, Credentials, TwilioClient};

pub const MAIN_SID: &str = "AC00000000000000000000000000000001";
pub const MAIN_TOKEN: &str = "emulator-main-auth-token-0000001";

/// Twilio's OpenAPI directory and the Python with Twilio's SDK installed.
pub struct Artefacts {
    pub oai_dir: PathBuf,
    pub sdk_python: PathBuf,
}

pub fn artefacts() -> &'static Artefacts {
    static ARTEFACTS: OnceLock<Artefacts> = OnceLock::new();
    ARTEFACTS.get_or_init(|| {
        let text = setup_script("twilio-artefacts.sh");
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("hack/twilio-artefacts.sh printed no {key}"))
        };
        Artefacts {
            oai_dir: value("TWILIO_OAI_DIR"),
            sdk_python: value("TWILIO_SDK_PYTHON"),
        }
    })
}

pub struct Emulator {
    pub url: String,
    child: Child,
    http: reqwest::Client,
}

impl Emulator {
    /// Starts an emulator with the main account MAIN_SID/MAIN_TOKEN and `extra` flags.
    pub fn start(extra: &[&str]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut child = tethered(&workspace_binary("twilio-emulator", "twilio-emulator"))
            .args(["--listen", "127.0.0.1:0", "--account-sid", MAIN_SID])
            .arg("--openapi-dir")
            .arg(&artefacts().oai_dir)
            .args(extra)
            .env("EMULATOR_AUTH_TOKEN", MAIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start twilio-emulator");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("read emulator banner");
        // Keep draining, so the emulator never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let url = first
            .trim()
            .strip_prefix("twilio-emulator listening on ")
            .unwrap_or_else(|| panic!("unexpected banner {first:?}"))
            .to_owned();
        Self {
            url,
            child,
            http: reqwest::Client::new(),
        }
    }

    pub fn main_credentials(&self) -> Credentials {
        Credentials::with_auth_token(MAIN_SID, SecretString::from(MAIN_TOKEN)).expect("valid credentials")
    }

    /// Client settings for tests: this emulator, quick backoff so retries finish fast.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(BaseUrls::single(&self.url));
        config.min_backoff = Duration::from_millis(10);
        config.max_backoff = Duration::from_millis(50);
        config.timeout = Duration::from_secs(5);
        config
    }

    pub fn client(&self) -> TwilioClient {
        TwilioClient::new(self.client_config()).expect("client")
    }

    pub async fn state(&self) -> Value {
        self.http
            .get(format!("{}/_emulator/state", self.url))
            .send()
            .await
            .expect("state")
            .json()
            .await
            .expect("state JSON")
    }

    /// The SIDs of every key that exists at the emulator, in every account.
    pub async fn key_sids(&self) -> Vec<String> {
        let state = self.state().await;
        let keys = state["keys"].as_array().expect("keys in state");
        keys.iter()
            .map(|k| k["sid"].as_str().expect("a key SID").to_owned())
            .collect()
    }

    /// Merges `{"knobs": {...}, "rules": {...}}` into the live configuration.
    pub async fn configure(&self, change: Value) {
        let response = self
            .http
            .put(format!("{}/_emulator/config", self.url))
            .json(&change)
            .send()
            .await
            .expect("configure");
        assert!(
            response.status().is_success(),
            "configure {change}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// Changes an account as Twilio itself would (status, usage_total, balance).
    pub async fn change_account(&self, sid: &str, change: Value) {
        let response = self
            .http
            .post(format!("{}/_emulator/accounts/{sid}", self.url))
            .json(&change)
            .send()
            .await
            .expect("change account");
        assert!(
            response.status().is_success(),
            "change {sid}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// Moves the emulator's clock `seconds` ahead; answers `{"now", "period"}`.
    pub async fn advance_clock(&self, seconds: i64) -> Value {
        self.http
            .post(format!("{}/_emulator/clock", self.url))
            .json(&json!({"advance_seconds": seconds}))
            .send()
            .await
            .expect("move the clock")
            .json()
            .await
            .expect("clock JSON")
    }

    /// Creates a key of `kind` (main, standard, restricted) and returns its SID and secret.
    pub async fn bootstrap_key(&self, account_sid: &str, kind: &str) -> (String, String) {
        let body: Value = self
            .http
            .post(format!("{}/_emulator/keys", self.url))
            .json(&json!({"account_sid": account_sid, "kind": kind}))
            .send()
            .await
            .expect("bootstrap key")
            .json()
            .await
            .expect("key JSON");
        (
            body["sid"].as_str().expect("sid").to_owned(),
            body["secret"].as_str().expect("secret").to_owned(),
        )
    }

    /// Requests for `operation` (such as `api.CreateNewKey`) received so far.
    pub async fn calls(&self, operation: &str) -> u64 {
        self.state().await["received"][operation].as_u64().unwrap_or(0)
    }

    /// Waits until the emulator has received at least `at_least` requests for `operation`;
    /// fails the test with `what` (and every count) if that takes longer than the fixture's wait.
    pub async fn wait_calls(&self, operation: &str, at_least: u64, what: &str) {
        let deadline = tokio::time::Instant::now() + super::fixture::WAIT;
        while self.calls(operation).await < at_least {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {}",
                self.state().await["received"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every routed request in arrival order: `at_ms`, `operation` and `user_agent` each.
    pub async fn requests(&self) -> Vec<Value> {
        let log: Value = self
            .http
            .get(format!("{}/_emulator/requests", self.url))
            .send()
            .await
            .expect("requests")
            .json()
            .await
            .expect("requests JSON");
        log["requests"].as_array().cloned().unwrap_or_default()
    }

    pub async fn reset_stats(&self) {
        self.http
            .post(format!("{}/_emulator/reset-stats", self.url))
            .send()
            .await
            .expect("reset stats");
    }

    pub async fn assert_contract_clean(&self) {
        let state = self.state().await;
        let violations = state["violations"].as_array().cloned().unwrap_or_default();
        assert!(
            violations.is_empty(),
            "traffic departed from Twilio's OpenAPI spec:\n{}",
            serde_json::to_string_pretty(&violations).unwrap_or_default()
        );
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A call a usage trigger made: the path and query it reached, its form and its signature.
#[derive(Debug, Clone)]
pub struct Callback {
    pub path_and_query: String,
    pub params: Vec<(String, String)>,
    pub signature: Option<String>,
}

/// A local HTTP endpoint that records every POST it receives, for triggers to call: its base
/// URL and the calls as they come.
pub async fn callback_sink() -> (String, tokio::sync::mpsc::UnboundedReceiver<Callback>) {
    use axum::http::{HeaderMap, Uri};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let record = move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(Callback {
                path_and_query: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                params: serde_urlencoded::from_bytes(&body).unwrap_or_default(),
                signature: headers
                    .get("x-twilio-signature")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            });
            axum::http::StatusCode::NO_CONTENT
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum::Router::new().fallback(axum::routing::post(record));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// Whether Twilio's official Python SDK (`RequestValidator`) accepts `signature` for a call to
/// `url` with `params`, signed with `token`.
pub fn sdk_validates(token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    use std::io::Write;
    let script = "import json, sys\nfrom twilio.request_validator import RequestValidator\nd = json.load(sys.stdin)\nprint(RequestValidator(d['token']).validate(d['url'], dict(d['params']), d['signature']))\n";
    let mut child = std::process::Command::new(&artefacts().sdk_python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the SDK's validator");
    let input = json!({"token": token, "url": url, "params": params, "signature": signature});
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write to the validator");
    let out = child.wait_with_output().expect("validator output");
    assert!(out.status.success(), "the SDK's validator failed");
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}
