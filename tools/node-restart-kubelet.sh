#!/usr/bin/env bash
# Restarts the local node's kubelet (tools/node-up.sh), as an administrator restarts kubelets after changing their
# configuration: the kubelet reads its image credential providers only when it starts. With a provider in the
# node's config folder (placed by the chart's installer DaemonSet), it starts with --image-credential-provider-config
# and --image-credential-provider-bin-dir; with none, without them. Pods keep running across the restart.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
node="$local_dir/node"
die() { echo "node-restart-kubelet: $*" >&2; exit 1; }
[ -x "$node/kubelet.sh" ] || die "no node in $local_dir: run 'make node-up' first"
slot=$(slot_of) || die "no local cluster in $local_dir"
node_name="regcred-node-$slot"
pid=$(awk '$1 == "kubelet" {print $2}' "$node/pids")
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && die "the kubelet ($pid) did not stop"
fi
"$node/kubelet.sh" >>"$logs/kubelet.log" 2>&1 &
sed -i '/^kubelet /d' "$node/pids"
echo "kubelet $!" >>"$node/pids"
kubectl=("$bin/kubectl" --kubeconfig "$kubeconfig")
# Ready again once the new kubelet has posted its status (its heartbeat is every 5 s).
since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
pids_file="$node/pids"
fail_with_logs() { die "$1; the kubelet's last errors: $(grep -E '^[EF]' "$logs/kubelet.log" | tail -n 3)"; }
heartbeat() {
  local at
  at=$("${kubectl[@]}" get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
  [ "$("${kubectl[@]}" get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
    [[ "$at" > "$since" ]]
}
wait_for "the restarted kubelet to report the node Ready" 60 heartbeat
providers=$(ls -A "$node/credential-providers/config")
echo "node-restart-kubelet: kubelet restarted on $node_name (credential provider configs: ${providers:-none})"
