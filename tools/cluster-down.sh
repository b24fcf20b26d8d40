#!/usr/bin/env bash
# Stops the processes that tools/cluster-up.sh started (by their recorded pids, nothing else) and removes the
# cluster's state. Logs stay in .local/logs/ for inspection.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.local/cluster"
if [ ! -f "$state/pids" ]; then
  echo "cluster-down: no local cluster is recorded in $state; nothing to stop."
  rm -rf "$state" "$root/.local/kubeconfig"
  exit 0
fi
# Stop in reverse start order so the apiserver does not log etcd errors on its way down.
pids=$(tac "$state/pids" | awk '{print $2}')
for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
deadline=$(( $(date +%s) + 15 ))
for pid in $pids; do
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
    sleep 0.1
  done
done
rm -rf "$state" "$root/.local/kubeconfig"
echo "cluster-down: stopped the local cluster"
