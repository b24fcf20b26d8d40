#!/usr/bin/env bash
# Builds the control-plane multi-call binary and helm, once per content of go.mod/go.sum/main.go/versions.env.
#
# The binaries are cached outside the clone (a fresh CI clone starts with an empty .local/), under
# ${REGCRED_CACHE_DIR:-$XDG_CACHE_HOME/regcred}/controlplane/<hash>, and linked into .local/bin of the
# checkout. A repeat run with unchanged inputs only re-creates the links.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

die() { echo "controlplane build: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 ||
  die "no Go toolchain on PATH. Install Go >= 1.26 (Debian: apt-get install golang-1.26, or https://go.dev/dl) and retry."
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
have=$(go env GOVERSION | sed 's/^go//')
need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$here/go.mod")
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
  die "Go $have is older than the $need that Kubernetes ${KUBERNETES_VERSION} needs. Install Go >= $need and retry."
fi

cache_root=${REGCRED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/regcred}
key=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/versions.env" | sha256sum | cut -c1-16)
out="$cache_root/controlplane/$key"
bin="$root/.local/bin"
mkdir -p "$bin"

if [ ! -x "$out/controlplane" ]; then
  echo "controlplane build: building Kubernetes ${KUBERNETES_VERSION} (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy)"
  echo "controlplane build: a cold build takes 10-25 minutes on 2 cores; later runs reuse $out"
  mkdir -p "$out.tmp"
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=${KUBERNETES_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  # The same stamp for kubectl's own client version.
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=${KUBERNETES_VERSION}"
  start=$(date +%s)
  if ! (cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$out.tmp/controlplane" .) >"$out.tmp/build.log" 2>&1; then
    tail -n 30 "$out.tmp/build.log" >&2
    die "go build failed (full log: $out.tmp/build.log). Check free memory (needs ~4 GiB) and disk, and that the Go module proxy is reachable."
  fi
  echo "controlplane build: built in $(( $(date +%s) - start ))s"
  mv "$out.tmp/controlplane" "$out.tmp/build.log" "$out/" 2>/dev/null || { mkdir -p "$out" && mv "$out.tmp/controlplane" "$out.tmp/build.log" "$out/"; }
  rm -rf "$out.tmp"
fi

if [ ! -x "$out/helm" ]; then
  echo "controlplane build: installing helm ${HELM_VERSION} with go install"
  GOBIN="$out" go install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" ||
    die "go install helm.sh/helm/v3/cmd/helm@${HELM_VERSION} failed; check that the Go module proxy is reachable."
fi

ln -sfn "$out/controlplane" "$bin/controlplane"
for c in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do ln -sfn "$out/controlplane" "$bin/$c"; done
ln -sfn "$out/helm" "$bin/helm"
