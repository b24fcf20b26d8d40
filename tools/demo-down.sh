#!/usr/bin/env bash
# Stops what `make demo` started (the operator and the registry, by their recorded pids). With --all (`make
# demo-down`) it also stops the local control plane. `make test` calls it without --all: the demo's operator would
# otherwise handle the tests' profiles.
set -uo pipefail
cd "$(dirname "$0")/.."
for p in .local/demo/regcred.pid .local/demo/registry.pid; do
  if [ -f "$p" ]; then
    kill "$(cat "$p")" 2>/dev/null && echo "demo-down: stopped the demo's $(basename "$p" .pid)"
    rm -f "$p"
  fi
done
if [ "${1:-}" = "--all" ]; then
  rm -rf .local/demo
  tools/cluster-down.sh
fi
