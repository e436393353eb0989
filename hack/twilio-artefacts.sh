#!/usr/bin/env bash
# Fetches the Twilio artefacts the contract checks hold the emulator and client to:
# - Twilio's OpenAPI files, from the npm package @twilio-alpha/mcp (which ships them);
# - Twilio's official Python SDK (PyPI `twilio`), in a private virtualenv.
# Both are cached under ${XDG_CACHE_HOME:-~/.cache}/twilio-operator/twilio/, keyed by version.
# Prints TWILIO_OAI_DIR=<dir> and TWILIO_SDK_PYTHON=<python> as its last two lines of stdout;
# progress goes to stderr. Safe to re-run.
set -euo pipefail

MCP_VERSION=0.7.0
SDK_VERSION=9.13.0
SPECS=(twilio_api_v2010.json twilio_iam_v1.json twilio_accounts_v1.json twilio_voice_v1.json)

log() { printf '[twilio-artefacts] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/twilio-operator/twilio
oai=$cache/oai-mcp-$MCP_VERSION
venv=$cache/python-twilio-$SDK_VERSION
mkdir -p "$cache"

have_specs() { local f; for f in "${SPECS[@]}"; do [ -s "$oai/$f" ] || return 1; done; }

if ! have_specs; then
  command -v npm >/dev/null || die "npm is not on PATH; install Node.js to fetch Twilio's OpenAPI files"
  log "fetching Twilio's OpenAPI files from npm (@twilio-alpha/mcp@$MCP_VERSION)"
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  (cd "$scratch" && npm pack --silent "@twilio-alpha/mcp@$MCP_VERSION" >/dev/null) || die "npm pack @twilio-alpha/mcp@$MCP_VERSION failed"
  tar -xzf "$scratch"/twilio-alpha-mcp-*.tgz -C "$scratch" || die "could not unpack the npm package"
  mkdir -p "$scratch/oai"
  for f in "${SPECS[@]}"; do
    cp "$scratch/package/twilio-oai/spec/json/$f" "$scratch/oai/$f" || die "the npm package lacks twilio-oai/spec/json/$f"
  done
  rm -rf "$oai" && mv "$scratch/oai" "$oai"
fi

if ! "$venv/bin/python" -c "import twilio, sys; sys.exit(twilio.__version__ != '$SDK_VERSION')" 2>/dev/null; then
  log "installing Twilio's Python SDK $SDK_VERSION from PyPI"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed; install python3-venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "twilio==$SDK_VERSION" >&2 || die "pip install twilio==$SDK_VERSION failed"
fi

echo "TWILIO_OAI_DIR=$oai"
echo "TWILIO_SDK_PYTHON=$venv/bin/python"
