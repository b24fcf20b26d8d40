#!/usr/bin/env bash
# Starts a real, local Kubernetes control plane on loopback: etcd, kube-apiserver (TLS, RBAC, ServiceAccount
# tokens, the default admission plugins and NodeRestriction, as production clusters run) and kube-controller-manager (namespace, garbage-collector, serviceaccount,
# token and ClusterRole aggregation controllers, among others). Writes an admin kubeconfig to .local/kubeconfig and returns with the processes running in
# the background; their logs are in .local/logs/. `tools/cluster-down.sh` stops exactly these processes.
#
# REGCRED_LOCAL chooses the state folder (default .local), so several local clusters can run side by side (`make
# demo` uses .local/demo). Each claims a slot that numbers its networks (tools/lib.sh). `make node-up` adds a node.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

die() { echo "cluster-up: $*" >&2; exit 1; }
log() { echo "cluster-up: $*"; }

# A cluster that is already running is left alone.
if [ -f "$state/pids" ]; then
  alive=0
  while read -r name pid; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done <"$state/pids"
  if [ "$alive" -gt 0 ]; then
    log "a local cluster is already running ($alive processes, see $state/pids); nothing to do."
    log "use it with: export KUBECONFIG=$kubeconfig   (stop it with: make cluster-down)"
    exit 0
  fi
  log "removing the state of a cluster that is no longer running"
  rm -rf "$state"
fi

"$root/tools/controlplane/build.sh"

start_time=$(date +%s.%N)
mkdir -p "$state/pki" "$logs"

# --- slot ---------------------------------------------------------------------------------------------------
# The first slot no running cluster holds. A claim is a file naming the state folder that holds it.
slots=${REGCRED_SLOTS_DIR:-/tmp/regcred-slots}
mkdir -p "$slots"
cluster_alive() { # state folder
  [ -f "$1/pids" ] || return 1
  local name pid
  while read -r name pid; do kill -0 "$pid" 2>/dev/null && return 0; done <"$1/pids"
  return 1
}
slot=""
for n in 0 1 2 3 4 5 6 7 8 9; do
  owner=$(cat "$slots/$n" 2>/dev/null || true)
  if [ -z "$owner" ] || [ "$owner" = "$state" ] || ! cluster_alive "$owner"; then slot=$n; break; fi
done
[ -n "$slot" ] || die "ten local clusters are running already (claims in $slots); stop one with make cluster-down"
echo "$state" >"$slots/$slot"
echo "$slot" >"$state/slot"
rm -f "$logs"/audit*.log
pki="$state/pki"

# --- ports --------------------------------------------------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
pick_port() { # $1: variable that may override, $2: what for
  local p=${!1:-}
  if [ -n "$p" ]; then
    port_free "$p" || die "port $p ($2, from $1) is already in use on 127.0.0.1. Stop whatever listens there (ss -ltnp 'sport = :$p') or choose another port with $1=PORT."
    echo "$p"
  else
    free_port
  fi
}
etcd_port=$(pick_port REGCRED_ETCD_PORT "etcd clients")
etcd_peer_port=$(pick_port REGCRED_ETCD_PEER_PORT "etcd peers")
api_port=$(pick_port REGCRED_APISERVER_PORT "kube-apiserver")
kcm_port=$(pick_port REGCRED_KCM_PORT "kube-controller-manager")

# --- PKI ----------------------------------------------------------------------------------------------------
ossl() { openssl "$@" >/dev/null 2>&1 || die "openssl $1 failed: is openssl installed (apt-get install openssl)?"; }
ossl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=regcred-local-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt"
sign() { # name, subject, extensions
  ossl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr"
  printf '%s\n' "$3" >"$pki/$1.ext"
  ossl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3650 \
    -extfile "$pki/$1.ext" -out "$pki/$1.crt"
}
sign apiserver "/CN=kube-apiserver" \
  "subjectAltName=IP:127.0.0.1,IP:$(kubernetes_service_ip "$slot"),IP:$(host_ip "$slot"),DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth"
sign admin "/O=system:masters/CN=regcred-admin" "extendedKeyUsage=clientAuth"
sign kcm "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
# The apiserver's identity towards kubelets (logs, exec); kubelets verify it against the cluster CA.
sign apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
# The apiserver's identity towards admission webhooks, from a CA of its own: a webhook that requires a client
# certificate from this CA (regcred's --webhook-client-ca-file) accepts the apiserver and nothing else, not even
# a client holding another certificate of the cluster CA.
ossl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=regcred-local-webhook-client-ca" \
  -keyout "$pki/webhook-client-ca.key" -out "$pki/webhook-client-ca.crt"
ossl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver-webhook-client" \
  -keyout "$pki/apiserver-webhook.key" -out "$pki/apiserver-webhook.csr"
printf '%s\n' "extendedKeyUsage=clientAuth" >"$pki/apiserver-webhook.ext"
ossl x509 -req -in "$pki/apiserver-webhook.csr" -CA "$pki/webhook-client-ca.crt" -CAkey "$pki/webhook-client-ca.key" \
  -CAcreateserial -days 3650 -extfile "$pki/apiserver-webhook.ext" -out "$pki/apiserver-webhook.crt"
ossl genrsa -out "$pki/sa.key" 2048
ossl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

write_kubeconfig() { # file, user cert name
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: regcred-local
  cluster:
    server: https://127.0.0.1:${api_port}
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$pki/$2.crt")
    client-key-data: $(base64 -w0 "$pki/$2.key")
contexts:
- name: regcred-local
  context: {cluster: regcred-local, user: $2}
current-context: regcred-local
KC
  chmod 600 "$1"
}
write_kubeconfig "$state/kcm.kubeconfig" kcm
write_kubeconfig "$state/admin.kubeconfig" admin

# Audit log of mutating requests made by ServiceAccounts: benchmarks count an operator's writes exactly from it
# (.local/logs/audit.log); and of the kubelet's requests for the credentials of a pull (ServiceAccount tokens for
# its credential providers, pull Secrets), which the node benchmark counts per pull. Nothing else is logged.
cat >"$state/audit-policy.yaml" <<'AUDIT'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: Metadata
    userGroups: ["system:nodes"]
    resources: [{group: "", resources: ["serviceaccounts/token", "secrets"]}]
  - level: None
AUDIT

# The apiserver presents its webhook client certificate to every admission webhook (`*`): webhooks that do not ask
# for one are unaffected.
cat >"$state/webhook-client.kubeconfig" <<KC
apiVersion: v1
kind: Config
users:
- name: '*'
  user:
    client-certificate: $pki/apiserver-webhook.crt
    client-key: $pki/apiserver-webhook.key
KC
cat >"$state/admission.yaml" <<ADM
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $state/webhook-client.kubeconfig
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $state/webhook-client.kubeconfig
ADM

# --- processes ----------------------------------------------------------------------------------------------
: >"$state/pids"
start() { # name, args...
  local name=$1; shift
  # The arguments are kept so that tools/cluster-restart.sh can start the same process again.
  printf '%s\0' "$@" >"$state/$name.args"
  "$bin/$name" "$@" >"$logs/$name.log" 2>&1 &
  echo "$name $!" >>"$state/pids"
}
fail_with_logs() {
  echo "cluster-up: $1" >&2
  for f in "$logs"/*.log; do echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; done
  if grep -qs "address already in use" "$logs"/*.log; then
    echo "cluster-up: a port was taken while starting; run 'make cluster-down' and retry." >&2
  fi
  "$root/tools/cluster-down.sh" >/dev/null 2>&1 || true
  exit 1
}
pids_file="$state/pids"

start etcd --name regcred-local --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:${etcd_port}" --advertise-client-urls "http://127.0.0.1:${etcd_port}" \
  --listen-peer-urls "http://127.0.0.1:${etcd_peer_port}" --initial-advertise-peer-urls "http://127.0.0.1:${etcd_peer_port}" \
  --initial-cluster "regcred-local=http://127.0.0.1:${etcd_peer_port}" \
  --unsafe-no-fsync --quota-backend-bytes=8589934592 --log-level=warn
wait_for "etcd" 30 curl -sf "http://127.0.0.1:${etcd_port}/health"

start kube-apiserver \
  --etcd-servers="http://127.0.0.1:${etcd_port}" \
  --bind-address=0.0.0.0 --advertise-address="$(host_ip "$slot")" --secure-port="${api_port}" \
  --cert-dir="$state/apiserver-certs" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --api-audiences=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range="$(service_cidr "$slot")" --endpoint-reconciler-type=lease \
  --kubelet-client-certificate="$pki/apiserver-kubelet.crt" --kubelet-client-key="$pki/apiserver-kubelet.key" \
  --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --allow-privileged=true --profiling=false --admission-control-config-file="$state/admission.yaml" \
  --enable-admission-plugins=NodeRestriction \
  --max-requests-inflight=1000 --max-mutating-requests-inflight=500 \
  --audit-policy-file="$state/audit-policy.yaml" --audit-log-path="$logs/audit.log" \
  --audit-log-maxsize=200 --audit-log-maxbackup=1 --audit-log-mode=blocking
wait_for "kube-apiserver /readyz" 90 curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
  "https://127.0.0.1:${api_port}/readyz"

start kube-controller-manager \
  --kubeconfig="$state/kcm.kubeconfig" \
  --authentication-kubeconfig="$state/kcm.kubeconfig" --authorization-kubeconfig="$state/kcm.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="${kcm_port}" \
  --controllers=namespace-controller,clusterrole-aggregation-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,endpointslice-controller,node-lifecycle-controller,disruption-controller,pod-garbage-collector-controller \
  --node-monitor-grace-period=20s \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --use-service-account-credentials=true --leader-elect=false \
  --concurrent-namespace-syncs=10 --concurrent-gc-syncs=20 \
  --kube-api-qps=200 --kube-api-burst=400

cp "$state/admin.kubeconfig" "$kubeconfig"
kubectl=("$bin/kubectl" --kubeconfig "$kubeconfig")

# The cluster is usable when a new namespace gets its `default` ServiceAccount (serviceaccount controller).
probe="regcred-probe-$RANDOM$RANDOM"
wait_for "namespace creation" 30 "${kubectl[@]}" create namespace "$probe"
wait_for "the default ServiceAccount (kube-controller-manager)" 60 "${kubectl[@]}" -n "$probe" get serviceaccount default
"${kubectl[@]}" delete namespace "$probe" --wait=false >/dev/null

elapsed=$(python3 -c "import time; print(f'{time.time() - $start_time:.1f}')")
log "local cluster ready in ${elapsed}s: Kubernetes $("${kubectl[@]}" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') at https://127.0.0.1:${api_port}"
log "use it with: export KUBECONFIG=$kubeconfig"
