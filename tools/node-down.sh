#!/usr/bin/env bash
# Stops the node that tools/node-up.sh added and undoes what it and the kubelet changed on the host: its
# processes and every container (by the node's cgroups), the mounts under the node's folder, the network
# namespace (with the bridge, the veth pair and kube-proxy's rules in it), the cgroups, the host's kernel settings
# the kubelet changed (restored once no regcred node runs), and folders the kubelet created at fixed paths.
set -uo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
node="$local_dir/node"
log() { echo "node-down: $*"; }
if [ ! -d "$node" ]; then log "no node recorded in $node; nothing to stop."; exit 0; fi
[ "$(id -u)" -eq 0 ] || { echo "node-down: the node was started as root; stop it as root ('sudo make cluster-down')" >&2; exit 1; }
kubectl=("$bin/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s)
node_name=$(sed -n 's/^NODE_NAME=//p' "$node/node.env" 2>/dev/null)
cgroup=$(sed -n 's/^cgroup //p' "$node/created")
netns=$(sed -n 's/^netns //p' "$node/created")

stop_pids() { # signal, pids...
  local sig=$1; shift
  for pid in "$@"; do kill "-$sig" "$pid" 2>/dev/null; done
}
wait_gone() { # seconds, pids...
  local deadline=$(( $(date +%s) + $1 )); shift
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  done
}

# 1. The kubelet, kube-proxy and the scheduler first, so nothing restarts the containers stopped next.
if [ -f "$node/pids" ]; then
  mapfile -t control < <(grep -v '^containerd ' "$node/pids" | awk '{print $2}')
  stop_pids TERM "${control[@]}"; wait_gone 3 "${control[@]}"; stop_pids KILL "${control[@]}"
fi
# 2. Every container through containerd (their shims exit and remove their sockets), then containerd.
if [ -S "$node/containerd.sock" ]; then
  ctr=(timeout 10 ctr --address "$node/containerd.sock" -n k8s.io)
  for task in $("${ctr[@]}" tasks list -q 2>/dev/null); do "${ctr[@]}" tasks kill -s KILL "$task" >/dev/null 2>&1; done
  for task in $("${ctr[@]}" tasks list -q 2>/dev/null); do "${ctr[@]}" tasks delete -f "$task" >/dev/null 2>&1; done
  for c in $("${ctr[@]}" containers list -q 2>/dev/null); do "${ctr[@]}" containers delete "$c" >/dev/null 2>&1; done
fi
if [ -f "$node/pids" ]; then
  mapfile -t runtime < <(grep '^containerd ' "$node/pids" | awk '{print $2}')
  stop_pids TERM "${runtime[@]}"; wait_gone 5 "${runtime[@]}"; stop_pids KILL "${runtime[@]}"
fi
# 3. Whatever is left in the node's cgroups (a stuck shim or container), by force.
if [ -n "$cgroup" ]; then
  for _ in $(seq 50); do
    left=$(find "/sys/fs/cgroup/pids/$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
    [ -z "$left" ] && break
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null
    sleep 0.1
  done
fi
# 4. Mounts under the node's folder (the kubelet's root, Pod volumes, container root filesystems, Pod network
# namespaces), deepest first.
for _ in 1 2 3; do
  mapfile -t mounts < <(awk -v p="$node/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  [ ${#mounts[@]} -eq 0 ] && break
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done
# 5. The network namespace: its bridge, veth pair (the host's end and its routes go with it) and iptables rules.
[ -n "$netns" ] && ip netns delete "$netns" 2>/dev/null
# 6. The cgroups, deepest first, in every hierarchy.
if [ -n "$cgroup" ]; then
  for h in /sys/fs/cgroup/*; do
    [ -d "$h/$cgroup" ] && find "$h/$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null
  done
fi
# 7. Kernel settings the kubelet changed, once no other regcred node runs.
saved="${REGCRED_SLOTS_DIR:-/tmp/regcred-slots}/sysctls.saved"
if [ -f "$saved" ] && ! ip netns list 2>/dev/null | grep -q '^regcred-node-'; then
  while IFS= read -r kv; do sysctl -qw "$kv" 2>/dev/null; done <"$saved"
  rm -f "$saved"
fi
# 8. What the kubelet left at fixed paths: its device-plugin socket, the links to this node's container logs, and
# the folders themselves if they were not there before and hold nothing else now.
find /var/log/containers -maxdepth 1 -type l -lname "$node/*" -delete 2>/dev/null
if ! ip netns list 2>/dev/null | grep -q '^regcred-node-'; then
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  while read -r d; do
    case "$d" in /*) find "$d" -depth -type d -empty -delete 2>/dev/null; find "$d" -maxdepth 0 -empty -delete 2>/dev/null ;; esac
  done < <(grep -s '^/' "${REGCRED_SLOTS_DIR:-/tmp/regcred-slots}/paths.created")
  rm -f "${REGCRED_SLOTS_DIR:-/tmp/regcred-slots}/paths.created"
fi
# 9. The Node object, if the control plane still runs.
[ -n "$node_name" ] && "${kubectl[@]}" delete node "$node_name" --ignore-not-found >/dev/null 2>&1
# What must be gone now; anything left is said, and fails the caller (make test).
left=$(awk -v p="$node/" 'index($5, p) == 1' /proc/self/mountinfo | wc -l)
if [ "$left" -gt 0 ]; then
  echo "node-down: $left mounts under $node could not be removed; $node is kept (see /proc/self/mountinfo)" >&2
  exit 1
fi
if [ -n "$netns" ] && ip netns list 2>/dev/null | grep -q "^$netns\b"; then
  echo "node-down: the network namespace $netns is still there (ip netns pids $netns)" >&2
  exit 1
fi
for h in /sys/fs/cgroup/*; do
  if [ -n "$cgroup" ] && [ -d "$h/$cgroup" ]; then
    echo "node-down: the cgroup $h/$cgroup is still there (processes: $(find "$h/$cgroup" -name cgroup.procs -exec cat {} + | tr '\n' ' '))" >&2
    exit 1
  fi
done
rm -rf "$node"
log "stopped the node${node_name:+ $node_name} and undid its changes to the host"
