#!/usr/bin/env bash
# Adds a worker node to the running local cluster (tools/cluster-up.sh): kube-scheduler on the host, and in a
# network namespace of its own (the node's "machine") containerd with runc, the CNI bridge, kube-proxy and the
# kubelet. Needs root. `tools/node-down.sh` (called by cluster-down) stops exactly this and undoes what it changed.
#
# Networks (slot N of the cluster, tools/lib.sh): the host and the node are joined by a veth pair, 10.250.N.1 on
# the host (where the apiserver and test registries listen) and 10.250.N.2 in the node. Pods get addresses of
# 10.244.N.0/24 on the node's bridge; Services live in 10.96.N.0/24, routed by kube-proxy's rules inside the node.
# The host routes those two ranges to the node, so the apiserver reaches webhooks through their Services. The node
# has no default route and nothing is masqueraded out of it: traffic never leaves this machine.
#
# Writes $REGCRED_LOCAL/node/node.env (what tests need: the node's name and addresses, the registry trust folder).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
node="$local_dir/node"
die() { echo "node-up: $*" >&2; exit 1; }
log() { echo "node-up: $*"; }

[ "$(id -u)" -eq 0 ] || die "the node needs root (containers, network namespaces, cgroups): run 'sudo make node-up'"
slot=$(slot_of) || die "no local cluster in $local_dir: run 'make cluster-up' first"
[ -f "$state/pids" ] || die "no local cluster in $local_dir: run 'make cluster-up' first"
if [ -f "$node/pids" ]; then
  alive=0
  while read -r _ pid; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done <"$node/pids"
  if [ "$alive" -gt 0 ]; then log "the node is already running ($alive processes, see $node/pids)"; exit 0; fi
  log "cleaning up a node that is no longer running"
  "$root/tools/node-down.sh"
fi

# --- what this VM must allow, said plainly --------------------------------------------------------------------
"$root/tools/controlplane/build.sh"
pause_tar=$("$root/tools/node/build.sh" --archive)
pause_image=$("$root/tools/node/build.sh" --name)
[ -d /sys/fs/cgroup/memory ] && [ -d /sys/fs/cgroup/pids ] ||
  die "cgroup v1 hierarchies (memory, pids, ...) are not mounted under /sys/fs/cgroup; this node's settings are for cgroup v1 (see TESTING-STACK.md)"
[ -d /proc/sys/net/bridge ] ||
  die "bridge netfilter (br_netfilter) is not available: Services between Pods would not route. Load it with 'modprobe br_netfilter'"
runc --version >/dev/null 2>&1 || die "runc does not run: apt-get install runc"

netns="regcred-node-$slot"
node_name="regcred-node-$slot"
cgroup="regcred-node-$slot"
hip=$(host_ip "$slot")
nip=$(node_ip "$slot")
pods=$(pod_cidr "$slot")
services=$(service_cidr "$slot")
api_port=$(sed -n 's#.*server: https://127.0.0.1:\([0-9]*\).*#\1#p' "$kubeconfig")
[ -n "$api_port" ] || die "cannot read the apiserver's port from $kubeconfig"
pki="$state/pki"
start_time=$(date +%s.%N)
rm -rf "$node"
mkdir -p "$node"/{pki,cni/net.d,cni/ipam,certs.d,kubelet,pod-logs,containerd/root,containerd/state,runc} "$logs"
: >"$node/pids"
: >"$node/created"

# --- host side effects, recorded so node-down undoes exactly these -------------------------------------------
# The kubelet sets these kernel settings on the host; they are saved once, before any regcred node ran.
# Folders the kubelet creates at fixed paths are recorded the same way, and removed when the last node stops.
slots=${REGCRED_SLOTS_DIR:-/tmp/regcred-slots}
mkdir -p "$slots"
if ! ip netns list 2>/dev/null | grep -q '^regcred-node-' || [ ! -f "$slots/sysctls.saved" ]; then
  for k in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
    echo "$k=$(sysctl -n "$k")"
  done >"$slots/sysctls.saved"
  for d in /var/lib/kubelet /var/log/containers /var/log/pods; do [ -e "$d" ] || echo "$d"; done >"$slots/paths.created"
fi

# --- the node's network namespace ----------------------------------------------------------------------------
ip netns add "$netns" || die "ip netns add $netns failed (is iproute2 installed, are you root?)"
echo "netns $netns" >>"$node/created"
ip link add "rcn$slot-h" type veth peer name "rcn$slot-n" netns "$netns"
ip addr add "$hip/30" dev "rcn$slot-h"
ip link set "rcn$slot-h" up
in_node() { nsenter --net="/run/netns/$netns" "$@"; }
in_node ip addr add "$nip/30" dev "rcn$slot-n"
in_node ip link set "rcn$slot-n" up
in_node ip link set lo up
# The node forwards between its Pods, its Services and the host; nothing else.
in_node sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.ipv4.conf.all.rp_filter=0
ip route add "$pods" via "$nip" dev "rcn$slot-h"
ip route add "$services" via "$nip" dev "rcn$slot-h"
# Host-network clients on the node (the kubelet's credential provider) reach Services as on a real node, whose
# default route covers the service range: a route lets the packet be built, and kube-proxy's rules rewrite it.
in_node ip route add "$services" dev "rcn$slot-n"

# --- cgroups: every process of the node lives under /regcred-node-N in each hierarchy ------------------------
hierarchies=()
for h in /sys/fs/cgroup/*; do
  [ -f "$h/cgroup.procs" ] && [ "$(basename "$h")" != unified ] && hierarchies+=("$h")
done
for h in "${hierarchies[@]}"; do
  mkdir -p "$h/$cgroup/node"
  if [ -f "$h/cpuset.cpus" ]; then
    for f in cpuset.cpus cpuset.mems; do cat "$h/$f" >"$h/$cgroup/$f"; cat "$h/$f" >"$h/$cgroup/node/$f"; done
  fi
done
echo "cgroup $cgroup" >>"$node/created"
# start NAME [in-node] ARGS...: runs in the node's cgroup (and network namespace), logs to $logs/NAME.log.
start() {
  local name=$1 where=$2; shift 2
  local enter=()
  [ "$where" = in-node ] && enter=(nsenter --net="/run/netns/$netns")
  # shellcheck disable=SC2016
  "${enter[@]}" bash -c 'for h in $HIERARCHIES; do echo $$ >"$h/'"$cgroup"'/node/cgroup.procs"; done; exec "$@"' \
    "$name" "$@" >"$logs/$name.log" 2>&1 &
  echo "$name $!" >>"$node/pids"
}
export HIERARCHIES="${hierarchies[*]}"
fail_with_logs() {
  echo "node-up: $1" >&2
  for f in containerd kubelet kube-proxy kube-scheduler; do
    [ -f "$logs/$f.log" ] && { echo "--- last lines of $logs/$f.log" >&2; grep -v '^I' "$logs/$f.log" | tail -n 12 >&2; }
  done
  "$root/tools/node-down.sh" >/dev/null 2>&1 || true
  exit 1
}
pids_file="$node/pids"

# --- identities ------------------------------------------------------------------------------------------------
sign() { # name, subject, extensions
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$node/pki/$1.key" -out "$node/pki/$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$node/pki/$1.ext"
  openssl x509 -req -in "$node/pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3650 \
    -extfile "$node/pki/$1.ext" -out "$node/pki/$1.crt" 2>/dev/null || die "openssl could not sign $1"
}
sign kubelet "/O=system:nodes/CN=system:node:$node_name" "extendedKeyUsage=clientAuth"
sign kubelet-serving "/CN=$node_name" "subjectAltName=IP:$nip,DNS:$node_name
extendedKeyUsage=serverAuth"
sign kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
sign kube-scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
kubeconfig_for() { # name, server
  cat >"$node/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$2", certificate-authority: "$pki/ca.crt"}}]
users: [{name: $1, user: {client-certificate: "$node/pki/$1.crt", client-key: "$node/pki/$1.key"}}]
contexts: [{name: $1, context: {cluster: local, user: $1}}]
current-context: $1
KC
}
# The node reaches the apiserver over the link, as a node reaches a control plane; the scheduler is on the host.
kubeconfig_for kubelet "https://$hip:$api_port"
kubeconfig_for kube-proxy "https://$hip:$api_port"
kubeconfig_for kube-scheduler "https://127.0.0.1:$api_port"

# --- kube-scheduler ------------------------------------------------------------------------------------------
sched_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start kube-scheduler host "$bin/kube-scheduler" --kubeconfig="$node/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$node/kube-scheduler.kubeconfig" --authorization-kubeconfig="$node/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$sched_port" --leader-elect=false

# --- containerd ----------------------------------------------------------------------------------------------
cat >"$node/containerd.toml" <<TOML
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
# Plugins that would write outside the node's folders, or that this node does not use.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$node/containerd.sock"
[ttrpc]
  address = "$node/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # runc cannot write oom_score_adj without CAP_SYS_RESOURCE, which this VM withholds.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$node/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    # One folder per registry host (HOST:PORT/hosts.toml): the tests and the demo put their registries' CAs here.
    config_path = "$node/certs.d"
TOML
cat >"$node/cni/net.d/10-pods.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "regcred-pods",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true, "ipMasq": false,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pods"}]], "dataDir": "$node/cni/ipam"}
    }
  ]
}
CNI
start containerd in-node containerd --config "$node/containerd.toml"
ctr=(ctr --address "$node/containerd.sock" -n k8s.io)
wait_for "containerd" 30 "${ctr[@]}" version
"${ctr[@]}" images import --no-unpack=false "$pause_tar" >/dev/null || fail_with_logs "ctr could not import the pause image $pause_tar"

# --- kubelet -------------------------------------------------------------------------------------------------
: >"$node/resolv.conf" # Pods get no resolver: nothing outside this machine is reachable anyway.
cat >"$node/kubelet.yaml" <<KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This VM: cgroup v1 without systemd, no swap accounting.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$cgroup
failSwapOn: false
containerRuntimeEndpoint: unix://$node/containerd.sock
address: $nip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $node/pki/kubelet-serving.crt
tlsPrivateKeyFile: $node/pki/kubelet-serving.key
# Only holders of a certificate from the cluster CA (the apiserver) may use the kubelet's API.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: AlwaysAllow}
resolvConf: $node/resolv.conf
podLogsDir: $node/pod-logs
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
maxPods: 110
nodeStatusUpdateFrequency: 5s
KUBELET
# The kubelet's image credential providers (KEP-2133, KEP-4412) live in folders of the node, where the chart's
# installer DaemonSet places regcred's (credentialProvider.nodeInstaller.{binDir,configDir}). The kubelet reads them
# only when it starts, and refuses to start on an empty config folder ("no configuration files found in directory"),
# so it is started with the two flags only when a provider is in place: tools/node-restart-kubelet.sh restarts it
# after the installer ran, as an administrator restarts kubelets after changing their configuration.
mkdir -p "$node/credential-providers/bin" "$node/credential-providers/config"
cat >"$node/kubelet.sh" <<KUBELET_SH
#!/usr/bin/env bash
# Written by tools/node-up.sh: starts the node's kubelet in its cgroup and network namespace.
for h in $HIERARCHIES; do echo \$\$ >"\$h/$cgroup/node/cgroup.procs"; done
providers=()
if [ -n "\$(ls -A "$node/credential-providers/config")" ]; then
  providers=(--image-credential-provider-config="$node/credential-providers/config"
    --image-credential-provider-bin-dir="$node/credential-providers/bin")
fi
exec nsenter --net="/run/netns/$netns" "$bin/kubelet" --config="$node/kubelet.yaml" --kubeconfig="$node/kubelet.kubeconfig" \
  --root-dir="$node/kubelet" --hostname-override="$node_name" --node-ip="$nip" --v=1 "\${providers[@]}"
KUBELET_SH
chmod +x "$node/kubelet.sh"
"$node/kubelet.sh" >"$logs/kubelet.log" 2>&1 &
echo "kubelet $!" >>"$node/pids"

# --- kube-proxy ----------------------------------------------------------------------------------------------
cat >"$node/kube-proxy.yaml" <<PROXY
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $node/kube-proxy.kubeconfig}
hostnameOverride: $node_name
mode: iptables
clusterCIDR: $pods
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Inside a network namespace the conntrack table's size is the host's to set.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
PROXY
start kube-proxy in-node "$bin/kube-proxy" --config="$node/kube-proxy.yaml"

kubectl=("$bin/kubectl" --kubeconfig "$kubeconfig")
node_ready() { [ "$("${kubectl[@]}" get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_for "the node to be Ready" 90 node_ready
# The node-lifecycle controller lifts the not-ready taint once the node is Ready.
untainted() { [ -z "$("${kubectl[@]}" get node "$node_name" -o jsonpath='{.spec.taints}')" ]; }
wait_for "the not-ready taint to be lifted" 60 untainted
# kube-proxy has written the kubernetes Service's rules once the Service's chain exists.
proxied() { in_node iptables -t nat -S KUBE-SERVICES | grep -q "$(kubernetes_service_ip "$slot")/32"; }
wait_for "kube-proxy's rules for the kubernetes Service" 60 proxied

cat >"$node/node.env" <<ENV
NODE_NAME=$node_name
NODE_NETNS=$netns
NODE_IP=$nip
HOST_IP=$hip
POD_CIDR=$pods
SERVICE_CIDR=$services
NODE_CERTS_D=$node/certs.d
CONTAINERD_ADDRESS=$node/containerd.sock
CREDENTIAL_PROVIDER_BIN_DIR=$node/credential-providers/bin
CREDENTIAL_PROVIDER_CONFIG_DIR=$node/credential-providers/config
ENV
elapsed=$(python3 -c "import time; print(f'{time.time() - $start_time:.1f}')")
log "node $node_name Ready in ${elapsed}s (kubelet, containerd, kube-proxy in netns $netns; pods $pods, services $services)"
