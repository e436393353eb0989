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

/// The README's `cargo run -p twilio-emulator -- --listen …` starts the emulator on its own, and
/// it answers with the credentials it prints. Credentials exported for real Twilio are not taken
/// for its own: it generates and prints fresh ones, so the sandbox and the tests never act with
/// (or show) a real token.
#[test]
fn the_readme_emulator_command_starts_it_alone_and_ignores_exported_credentials() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let port = support::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut child = tethered(std::path::Path::new(&cargo))
        .args([
            "run",
            "--quiet",
            "-p",
            "twilio-emulator",
            "--",
            "--listen",
            &listen,
        ])
        .current_dir(support::repo_root())
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
    // The banner's lines, as many as come within a few seconds of the first (cargo may build it
    // first; the token line only when generated).
    let mut banner = rx.recv_timeout(Duration::from_secs(300)).unwrap_or_default();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        banner.push_str(&line);
    }
    let printed = |name: &str| {
        banner
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    let (sid, token) = (printed("TWILIO_ACCOUNT_SID"), printed("TWILIO_AUTH_TOKEN"));
    let answered = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("http://{listen}");
        let client = twilio_operator::twilio::TwilioClient::new(twilio_operator::twilio::ClientConfig::new(
            twilio_operator::twilio::BaseUrls::single(&url),
        ))
        .expect("a client");
        let creds = twilio_operator::twilio::Credentials::with_auth_token(&sid, token.clone().into());
        client
            .fetch_account(&creds.expect("printed credentials"), &sid)
            .await
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered.is_ok(), "{answered:?}: {banner}");
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

/// The interactive sandbox as a person uses it: it prints what to type, the printed kubeconfig
/// reaches the cluster and shows the demo Ready, and Ctrl-C removes everything.
#[test]
fn the_interactive_sandbox_prints_working_commands_and_cleans_up_on_ctrl_c() {
    let sandbox = workspace_binary("twilio-sandbox", "twilio-sandbox");
    let mut child = tethered(&sandbox)
        .arg("--bin-dir")
        .arg(control_plane_binaries())
        .arg("--operator")
        .arg(env!("CARGO_BIN_EXE_twilio-operator"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start twilio-sandbox");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seen.iter().any(|l: &String| l.contains("Press Ctrl-C")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the sandbox never came up:\n{}", seen.join("\n")),
        }
    }
    let kubeconfig = seen
        .iter()
        .find_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
        .expect("the kubeconfig to export")
        .to_owned();
    // What the printed instructions say to type.
    let listed = std::process::Command::new("kubectl")
        .args(["get", "twilio", "-A"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("run kubectl");
    let listed = String::from_utf8_lossy(&listed.stdout);
    for object in [
        "twilioaccount.twilio.operator.dev/default",
        "twilioapikey.twilio.operator.dev/checkout",
        "twiliosubaccount.twilio.operator.dev/demo",
    ] {
        let row = listed
            .lines()
            .find(|l| l.contains(object))
            .unwrap_or_else(|| panic!("no {object} in:\n{listed}"));
        assert!(row.contains("True"), "{object} is not Ready:\n{listed}");
    }
    // The budget lines as printed, the spend posted to the printed emulator URL.
    let kubectl = |args: &str| {
        let out = std::process::Command::new("bash")
            .args(["-c", args])
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let printed = |prefix: &str| {
        seen.iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{}", seen.join("\n")))
            .to_owned()
    };
    let sid = kubectl(printed("sid=").trim_start_matches("sid=$(").trim_end_matches(')'));
    let emulator = printed("Twilio emulator:");
    let url = emulator.split_whitespace().nth(2).expect("the emulator URL");
    assert!(printed("curl ").contains("add_usage"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let posted = reqwest::Client::new()
            .post(format!("{url}/_emulator/accounts/{sid}"))
            .json(&serde_json::json!({"add_usage": 12}))
            .send()
            .await
            .expect("post spend");
        assert!(posted.status().is_success());
    });
    kubectl(&printed("kubectl -n demo annotate twsub"));
    let shown = printed("kubectl -n demo get twsub");
    let shown = shown.split('#').next().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let table = kubectl(shown);
        if table.contains("Warning") {
            break;
        }
        assert!(
            Instant::now() < until,
            "the budget never showed Warning:\n{table}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The attacker's lines as printed: widen the dialing permissions with the subaccount's
    // token, make the operator look, and find the repair announced.
    let script = [printed("sid="), printed("token="), printed("curl -s -u")].join("\n");
    let answer = kubectl(&script);
    assert!(answer.contains("update_count"), "{answer}");
    let look = seen
        .iter()
        .map(|l| l.trim())
        .rfind(|l| l.starts_with("kubectl -n demo annotate twsub"))
        .expect("a look line for the voice demo");
    kubectl(look.split('#').next().unwrap());
    let events = printed("kubectl -n demo get events");
    let events = events.split('#').next().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = kubectl(events);
        if listed.contains("CU") {
            break;
        }
        assert!(
            Instant::now() < until,
            "the widened permissions were never put back:\n{listed}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // SAFETY: signalling our own child, as Ctrl-C in its terminal would.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let stop = Instant::now() + Duration::from_secs(90);
    while child.try_wait().expect("poll").is_none() {
        assert!(Instant::now() < stop, "Ctrl-C did not stop the sandbox");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.wait().unwrap().success());
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
        seen.push(line);
    }
    assert!(
        seen.iter().any(|l| l.contains("stopped; removed")),
        "{}",
        seen.join("\n")
    );
    let dir = std::path::Path::new(&kubeconfig).parent().unwrap();
    assert!(!dir.exists(), "{} was left behind", dir.display());
}
