#!/usr/bin/env bash
# Provides the pinned binaries of a local cluster, for the tests and the sandbox: kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd, kwok (a simulated node), helm and promtool.
#
# Prints the directory holding the binaries as its last line of stdout; progress goes to stderr.
# - If KUBEBUILDER_ASSETS is set and holds the binaries, that directory is used as it is.
# - Otherwise the binaries are built once from the Go module proxy and cached under
#   ${XDG_CACHE_HOME:-~/.cache}/twilio-operator/control-plane/<versions>/, so re-runs are instant.
# Safe to re-run: each binary is built into a scratch dir and moved into the cache only when complete.
set -euo pipefail

K8S_VERSION=v1.36.2
K8S_MINOR=36
STAGING_VERSION=v0.36.2
ETCD_VERSION=v3.6.14
HELM_VERSION=v3.21.4
KWOK_VERSION=v0.8.0
# Prometheus 3.16.0 (its Go module versions are v0.3XX.Y).
PROMETHEUS_VERSION=v0.316.0

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

want=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok helm promtool)

have_all() {
  local dir=$1 b
  for b in "${want[@]}"; do [ -x "$dir/$b" ] || return 1; done
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  have_all "$KUBEBUILDER_ASSETS" || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks one of: ${want[*]}"
  log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

command -v go >/dev/null || die "go is not on PATH; install Go >= 1.26.7 to build the cluster binaries"

cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/twilio-operator/control-plane
out=$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-kwok-$KWOK_VERSION-prom-$PROMETHEUS_VERSION
mkdir -p "$out"

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Moves a finished binary into the cache atomically, so an interrupted build never leaves a half file.
install_bin() { mv -f "$1" "$out/$(basename "$1").tmp" && mv -f "$out/$(basename "$1").tmp" "$out/$(basename "$1")"; }

build_kube() {
  [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/kube-scheduler" ] && return 0
  log "building kube-apiserver, kube-controller-manager and kube-scheduler $K8S_VERSION from the Go module proxy (10-20 min cold)"
  local work=$scratch/kube modfile m ldflags p
  mkdir -p "$work" && cd "$work"
  go mod init local/k8sbuild >/dev/null 2>&1
  modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  [ -f "$modfile" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION from $(go env GOPROXY)"
  # The same go line as upstream keeps the same language and runtime defaults.
  go mod edit -go="$(sed -n 's/^go //p' "$modfile")"
  # k8s.io/kubernetes replaces its staging modules with ./staging paths; point them at the published tags.
  for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$modfile"); do
    go mod edit -replace="$m=$m@$STAGING_VERSION"
  done
  log "resolving modules"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" >&2 \
    || die "go get failed; check 'go env GOPROXY GOSUMDB' and that $STAGING_VERSION staging modules exist"
  # Without these the binaries report v0.0.0 and helm's kubeVersion checks fail.
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR -X $p.gitTreeState=clean"
  done
  log "compiling (this is the slow part)"
  mkdir -p bin
  go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags="$ldflags" -o bin/ \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler >&2 \
    || die "go build of the Kubernetes binaries failed"
  install_bin bin/kube-apiserver
  install_bin bin/kube-controller-manager
  install_bin bin/kube-scheduler
  log "kube-apiserver, kube-controller-manager and kube-scheduler ready"
}

build_etcd() {
  [ -x "$out/etcd" ] && return 0
  log "building etcd $ETCD_VERSION"
  local work=$scratch/etcd
  mkdir -p "$work" && cd "$work"
  go mod init local/etcdbuild >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 || die "go get etcd failed"
  go build -trimpath -ldflags=-s -o etcd go.etcd.io/etcd/server/v3 >&2 || die "go build of etcd failed"
  install_bin etcd
  log "etcd ready"
}

build_helm() {
  [ -x "$out/helm" ] && return 0
  log "building helm $HELM_VERSION"
  local h=helm.sh/helm/v3 work=$scratch/helm
  mkdir -p "$work"
  GOBIN="$work" go install -trimpath -ldflags="-s -w -X $h/internal/version.version=$HELM_VERSION \
    -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$K8S_MINOR \
    -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$K8S_MINOR" \
    "$h/cmd/helm@$HELM_VERSION" >&2 || die "go install of helm failed"
  install_bin "$work/helm"
  log "helm ready"
}

# Tools that install cleanly with `go install module/cmd@version`.
go_install() {
  local name=$1 pkg=$2
  [ -x "$out/$name" ] && return 0
  log "building $name from $pkg"
  local work=$scratch/$name
  mkdir -p "$work"
  GOBIN="$work" go install -trimpath -ldflags="-s -w" "$pkg" >&2 || die "go install of $name failed"
  install_bin "$work/$name"
  log "$name ready"
}

if have_all "$out"; then
  log "cached in $out"
else
  start=$(date +%s)
  build_etcd
  build_helm
  go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  go_install promtool "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
  build_kube
  log "built in $(( $(date +%s) - start ))s"
fi
echo "$out"
