#!/usr/bin/env bash
# Stops what `make demo` started: its registry (by its recorded pid) and its cluster with the node
# (REGCRED_LOCAL=.local/demo). Nothing else: a test run or a cluster started by hand keeps running.
set -uo pipefail
cd "$(dirname "$0")/.."
export REGCRED_LOCAL=$PWD/.local/demo
p=.local/demo/files/registry.pid
if [ -f "$p" ]; then
  kill "$(cat "$p")" 2>/dev/null && echo "demo-down: stopped the demo's registry"
  rm -f "$p"
fi
tools/cluster-down.sh
rm -rf .local/demo
