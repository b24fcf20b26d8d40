#!/usr/bin/env bash
# Restarts one process of the local control plane (etcd, kube-apiserver or kube-controller-manager) with the
# arguments tools/cluster-up.sh gave it, as a crash and a supervisor's restart would: `--kill` sends SIGKILL
# (default SIGTERM), `--down SECONDS` keeps it stopped that long first. Waits until the apiserver is ready again.
# Used by `make soak`; the log of the new process is appended to .local/logs/<name>.log.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

die() { echo "cluster-restart: $*" >&2; exit 1; }
usage="usage: tools/cluster-restart.sh [--kill] [--down SECONDS] etcd|kube-apiserver|kube-controller-manager"
signal=TERM down=0 name=
while [ $# -gt 0 ]; do
  case $1 in
    --kill) signal=KILL ;;
    --down) down=${2:?$usage}; shift ;;
    etcd | kube-apiserver | kube-controller-manager) name=$1 ;;
    *) die "$usage" ;;
  esac
  shift
done
[ -n "$name" ] || die "$usage"
[ -f "$state/pids" ] || die "no local cluster is running (make cluster-up)"
[ -f "$state/$name.args" ] || die "$state/$name.args is missing: the cluster was started by an older cluster-up; run make cluster-down && make cluster-up"
pid=$(awk -v n="$name" '$1 == n {print $2}' "$state/pids" | tail -n1)
[ -n "$pid" ] || die "$name is not recorded in $state/pids"

kill "-$signal" "$pid" 2>/dev/null || true
deadline=$(( $(date +%s) + 30 ))
while kill -0 "$pid" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || { kill -KILL "$pid" 2>/dev/null || true; }
  sleep 0.05
done
sleep "$down"

mapfile -d '' args <"$state/$name.args"
"$bin/$name" "${args[@]}" >>"$logs/$name.log" 2>&1 &
new=$!
# Replace the recorded pid, keeping the start order that cluster-down stops in reverse.
awk -v n="$name" -v p="$new" '$1 == n {$2 = p} {print}' "$state/pids" >"$state/pids.new" && mv "$state/pids.new" "$state/pids"

deadline=$(( $(date +%s) + 90 ))
until "$bin/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1; do
  kill -0 "$new" 2>/dev/null || die "$name exited after the restart (log: $logs/$name.log)"
  [ "$(date +%s)" -lt "$deadline" ] || die "the apiserver was not ready 90 s after restarting $name"
  sleep 0.1
done
echo "cluster-restart: $name restarted (pid $new)"
