//! No secret value reaches a log line, an error message or Debug output. Its own test binary:
//! tracing caches per-callsite interest process-wide, so a capture is only reliable when no
//! other test in the process emits events without it.

mod support;

use secrecy::{ExposeSecret, SecretString};
use std::sync::{Arc, Mutex};
use support::emulator::Emulator;
use twilio_operator::twilio::{Credentials, TwilioClient};

/// A tracing writer that keeps everything written to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_logs_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let emu = Emulator::start(&["--fault-429", "0.3"]);
    let mut config = emu.client_config();
    config.max_retries = 10;
    let client = TwilioClient::new(config).unwrap();
    let main = emu.main_credentials();
    let mut secrets = vec![support::emulator::MAIN_TOKEN.to_owned()];
    let tenant = client.create_account(&main, Some("logs")).await.unwrap();
    secrets.push(tenant.auth_token.as_ref().unwrap().expose_secret().to_owned());
    let key = client.create_key(&main, &tenant.sid, None).await.unwrap();
    secrets.push(key.secret.expose_secret().to_owned());
    let sub = Credentials::with_auth_token(tenant.sid.clone(), tenant.auth_token.clone().unwrap()).unwrap();
    let restricted = client
        .create_restricted_key(
            &sub,
            &tenant.sid,
            None,
            &["/twilio/messaging/messages/create".to_owned()],
        )
        .await
        .unwrap();
    secrets.push(restricted.secret.expose_secret().to_owned());
    let secondary = client.create_secondary_auth_token(&sub).await.unwrap();
    secrets.push(secondary.secondary_auth_token.expose_secret().to_owned());
    let failure = client
        .fetch_account(
            &Credentials::with_auth_token(tenant.sid.clone(), SecretString::from("wrong-token-value"))
                .unwrap(),
            &tenant.sid,
        )
        .await;
    secrets.push("wrong-token-value".to_owned());

    let debug = format!(
        "{tenant:?} {key:?} {restricted:?} {secondary:?} {failure:?} {main:?} {sub:?} {}",
        failure.as_ref().unwrap_err()
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("Twilio call"),
        "the capture saw the client's logs: {logs}"
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
        assert!(
            !debug.contains(secret.as_str()),
            "a secret reached Debug or Display output"
        );
    }
}
