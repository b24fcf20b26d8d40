#!/usr/bin/env bash
# Stops the processes that tools/cluster-up.sh started (by their recorded pids, nothing else), the node if one was
# added (tools/node-down.sh), releases the cluster's slot and removes its state. Logs stay in $REGCRED_LOCAL/logs/.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
# The node first (it needs the apiserver to delete its Node object); a node that did not come down cleanly still
# lets the control plane stop, and fails this script at the end.
node_status=0
if [ -d "$local_dir/node" ]; then "$root/tools/node-down.sh" || node_status=$?; fi
release_slot() {
  local slot slots=${REGCRED_SLOTS_DIR:-/tmp/regcred-slots}
  slot=$(slot_of) || return 0
  [ "$(cat "$slots/$slot" 2>/dev/null)" = "$state" ] && rm -f "$slots/$slot"
  return 0
}
if [ ! -f "$state/pids" ]; then
  echo "cluster-down: no local cluster is recorded in $state; nothing to stop."
  release_slot
  rm -rf "$state" "$kubeconfig"
  exit "$node_status"
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
release_slot
rm -rf "$state" "$kubeconfig"
echo "cluster-down: stopped the local cluster in $local_dir"
exit "$node_status"
