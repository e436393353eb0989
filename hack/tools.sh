#!/usr/bin/env bash
# Provides the Go test tools in hack/tools, for the tests: kstatus (what Flux and kpt read of an
# object's health, through sigs.k8s.io/cli-utils) and argolua (Argo CD's Lua runtime, gopher-lua,
# running a resource customization script).
#
# Prints the directory holding the binaries as its last line of stdout; progress goes to stderr.
# They are built from the Go module proxy once per version of hack/tools and cached under
# ${XDG_CACHE_HOME:-~/.cache}/twilio-operator/tools/<digest>/.
set -euo pipefail
cd "$(dirname "$0")/tools"

log() { printf '[tools] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "error: go is not on PATH; install Go >= 1.24"; exit 1; }

digest=$(cat go.mod go.sum $(find . -name '*.go' | sort) | sha256sum | cut -c1-16)
out=${XDG_CACHE_HOME:-$HOME/.cache}/twilio-operator/tools/$digest
if [ ! -x "$out/kstatus" ] || [ ! -x "$out/argolua" ]; then
  log "building kstatus and argolua from the Go module proxy"
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local \
    go build -trimpath -ldflags=-s -o "$scratch/" ./kstatus ./argolua >&2
  mkdir -p "$out"
  # Moved in whole, so an interrupted build never leaves a half binary in the cache.
  for b in kstatus argolua; do mv -f "$scratch/$b" "$out/$b.tmp" && mv -f "$out/$b.tmp" "$out/$b"; done
fi
echo "$out"
