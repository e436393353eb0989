#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: builds (or reuses) the Kubernetes control
# plane binaries, lints, then runs the whole cargo test suite against them (the harness fetches
# Twilio's OpenAPI files and Python SDK through hack/twilio-artefacts.sh). No test is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

# Build the control plane first so its progress is visible; the test harness reuses the cache.
KUBEBUILDER_ASSETS=$(bash hack/control-plane.sh | tail -n 1)
export KUBEBUILDER_ASSETS

# Format and lints first: an unformatted file or a warning is a failure, so main stays clean.
cargo fmt --all --check
cargo clippy --workspace --locked --all-targets -- -D warnings
cargo test --workspace --locked --all-targets
