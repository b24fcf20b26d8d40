#!/usr/bin/env bash
# Builds (or reuses) Prometheus and promtool from source, pinned, and prints the folder holding the two binaries:
# ${REGCRED_CACHE_DIR:-$XDG_CACHE_HOME/regcred}/prometheus/<version>-<hash>/. `make alerts` runs promtool (rule
# checks and unit tests); tests/observability.rs runs Prometheus against the local cluster.
#
# Why from source: Debian's `prometheus` package is built without Kubernetes service discovery (removed for its
# dependencies, see its NEWS.Debian), and discovering regcred through the apiserver is what the end-to-end test
# proves. The module comes through the Go module proxy, like the control plane's; only the Kubernetes discovery is
# compiled in (build tags remove_all_sd,enable_kubernetes_sd; file, HTTP and static discovery always are). No web
# UI assets: the HTTP API is all the tests use. A cold build takes a few minutes on 2 cores.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
die() { echo "prometheus: $*" >&2; exit 1; }

# Prometheus 3.x is published to the module proxy as v0.3xx.y.
MODULE=github.com/prometheus/prometheus
VERSION=v0.316.0
TAGS=remove_all_sd,enable_kubernetes_sd

key=$(cat "$0" | sha256sum | cut -c1-16)
out="$cache_root/prometheus/$VERSION-$key"
if [ ! -x "$out/promtool" ] || [ ! -x "$out/prometheus" ]; then
  command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH (the control plane needs one too; see tools/controlplane/build.sh)"
  export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOWORK=off
  echo "prometheus: building $MODULE@$VERSION (prometheus, promtool) into $out; a cold build takes a few minutes" >&2
  dir=$(go mod download -json "$MODULE@$VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || die "go mod download $MODULE@$VERSION failed; check that the Go module proxy is reachable"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  start=$(date +%s)
  (cd "$dir" && go build -trimpath -tags "$TAGS" -ldflags "-s -w" -o "$out.tmp/" ./cmd/prometheus ./cmd/promtool) ||
    die "go build of $MODULE@$VERSION failed"
  "$out.tmp/promtool" --version >/dev/null || die "the built promtool does not run"
  rm -rf "$out" && mv "$out.tmp" "$out"
  echo "prometheus: built in $(( $(date +%s) - start ))s" >&2
fi
echo "$out"
