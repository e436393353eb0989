//! The sandbox a newcomer starts first (`hack/sandbox.sh`), run in its non-interactive mode: from
//! nothing to a Ready subaccount and key, a Deployment whose pods run with the key, one rotation
//! that rolls those pods exactly once, and a clean exit that removes everything.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{control_plane_binaries, tethered, workspace_binary};

#[test]
fn the_sandbox_check_goes_from_nothing_to_a_rotation_that_rolls_the_pods_once() {
    let sandbox = workspace_binary("twilio-sandbox", "twilio-sandbox");
    let started = Instant::now();
    let mut child = tethered(&sandbox)
        .arg("--check")
        .arg("--bin-dir")
        .arg(control_plane_binaries())
        .arg("--operator")
        .arg(env!("CARGO_BIN_EXE_twilio-operator"))
        // The sandbox must not pick up Twilio credentials a user exported.
        .env("TWILIO_ACCOUNT_SID", "ACffffffffffffffffffffffffffffffff")
        .env("TWILIO_AUTH_TOKEN", "exported-but-not-for-the-emulator")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start twilio-sandbox");
    let deadline = started + Duration::from_secs(240);
    while child.try_wait().expect("poll the sandbox").is_none() {
        assert!(
            Instant::now() < deadline,
            "the sandbox check ran for over 4 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("sandbox output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "the check failed:\n{stdout}\n{stderr}");
    for step in [
        "ready: subaccount AC",
        "2 pods Running",
        "rotated: key SK",
        "revoked after its grace period, Deployment rolled once",
        "check passed",
        "stopped; removed",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
    let dir = stdout
        .lines()
        .find_map(|l| l.split("stopped; removed ").nth(1))
        .expect("the scratch directory is named");
    assert!(
        !std::path::Path::new(dir.trim()).exists(),
        "{dir} was left behind"
    );
}

/// Credentials exported for real Twilio are not taken for the emulator's own: it generates and
/// prints fresh ones, so the sandbox and the tests never act with (or show) a real token.
#[test]
fn the_emulator_ignores_exported_twilio_credentials() {
    let emulator = workspace_binary("twilio-emulator", "twilio-emulator");
    let mut child = tethered(&emulator)
        .args(["--listen", "127.0.0.1:0"])
        .env("TWILIO_ACCOUNT_SID", "ACffffffffffffffffffffffffffffffff")
        .env("TWILIO_AUTH_TOKEN", "exported-real-token")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start twilio-emulator");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..3 {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut stdout, &mut line).unwrap_or(0) == 0 || tx.send(line).is_err()
            {
                break;
            }
        }
    });
    // The banner's lines, as many as come within a few seconds (the token line only when generated).
    let mut banner = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        banner.push_str(&line);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(banner.contains("TWILIO_ACCOUNT_SID=AC"), "{banner}");
    assert!(
        banner.contains("TWILIO_AUTH_TOKEN="),
        "a generated token is printed: {banner}"
    );
    assert!(
        !banner.contains("ACffffffffffffffffffffffffffffffff") && !banner.contains("exported-real-token"),
        "{banner}"
    );
}
