#!/usr/bin/env bash
# Brings up a local sandbox: a Kubernetes cluster with a simulated node, the Twilio emulator and
# twilio-operator (release build), with a demo subaccount, API key and Deployment, and keeps it in
# the foreground until Ctrl-C, which removes everything.
#
#   ./hack/sandbox.sh                 # the emulator stands in for Twilio
#   ./hack/sandbox.sh --real-twilio   # real Twilio, with TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN
#   ./hack/sandbox.sh --check         # run the demo through a rotation and exit 0 or 1
#
# The first run builds the cluster's binaries from the Go module proxy (cached afterwards) and
# the operator with cargo; later runs start in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

SANDBOX_BIN_DIR=$(bash hack/control-plane.sh | tail -n 1)
export SANDBOX_BIN_DIR
echo "[sandbox] building twilio-operator and twilio-sandbox (release)" >&2
cargo build --release --locked --quiet -p twilio-operator --bin twilio-operator -p twilio-sandbox --bin twilio-sandbox
target=${CARGO_TARGET_DIR:-target}
exec "$target/release/twilio-sandbox" "$@"
