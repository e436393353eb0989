//! Durations are read exactly as Go's `time.ParseDuration` reads them, which is what the
//! apiserver's CEL `duration()` uses at admission: the same table of strings goes through Go
//! (built and run here, from the Go toolchain the test machine has) and through the operator's
//! parser, and every answer must agree. A string admission accepts but the operator refuses
//! would leave retiring keys alive past their revoke time.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use twilio_operator::api::duration;

const CASES: &[&str] = &[
    "720h",
    "90m",
    "1h30m",
    "0s",
    "0",
    "45s",
    "250ms",
    "10us",
    "10µs",
    "10μs",
    "1ns",
    // Go accepts units in any order and repeated; the schema pattern admits these too.
    "30m1h",
    "1h1h",
    "1.5h30m",
    "1.5ns",
    "0.5ns",
    "1.5us",
    "2h45m30.5s",
    "1.0000000001s",
    "0.1ns",
    "1.h",
    ".5h",
    "+1h",
    "01h",
    "1.50h",
    // The largest value and just past it.
    "2562047h47m16.854775807s",
    "2562047h47m16.854775808s",
    "2562048h",
    "9223372036854775807ns",
    "9223372036854775808ns",
    // Refused by both.
    "",
    "1",
    "h",
    "1H",
    "1d",
    "1 h",
    "1h-30m",
    "PT1H",
    "1 hour",
    "1e3s",
    "-",
    ".h",
    "1..5h",
    // Negative: Go reads it, the operator refuses it (durations here are never negative).
    "-1h",
    "-0s",
];

/// What Go says of each case: nanoseconds, or None for an error.
fn go_answers() -> Vec<Option<i64>> {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("main.go");
    std::fs::write(
        &program,
        r#"package main

import (
	"bufio"
	"fmt"
	"os"
	"time"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if d, err := time.ParseDuration(in.Text()); err != nil {
			fmt.Println("error")
		} else {
			fmt.Println(int64(d))
		}
	}
}
"#,
    )
    .unwrap();
    let mut child = Command::new("go")
        .arg("run")
        .arg(&program)
        .current_dir(dir.path())
        .env("GO111MODULE", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run go (the test command needs the Go toolchain it builds the control plane with)");
    let input: String = CASES.iter().map(|c| format!("{c}\n")).collect();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "go run failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<Option<i64>> = text.lines().map(|l| l.parse().ok()).collect();
    assert_eq!(answers.len(), CASES.len(), "one answer per case:\n{text}");
    answers
}

#[test]
fn the_operator_reads_durations_as_go_does() {
    let mut disagreements = Vec::new();
    for (case, go) in CASES.iter().zip(go_answers()) {
        let ours = duration::parse(case);
        let agrees = match (go, &ours) {
            (Some(ns), Ok(d)) => ns >= 0 && u128::from(ns.unsigned_abs()) == d.as_nanos(),
            (Some(ns), Err(duration::DurationError::Negative(_))) => ns < 0,
            (None, Err(duration::DurationError::Malformed(_))) => true,
            _ => false,
        };
        if !agrees {
            disagreements.push(format!("{case:?}: Go {go:?}, operator {ours:?}"));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert_eq!(duration::parse("30m1h"), Ok(Duration::from_secs(5400)));
}
