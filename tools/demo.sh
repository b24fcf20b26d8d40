#!/usr/bin/env bash
# `make demo`: regcred at work on the local control plane (never on another cluster). Starts a local registry
# with TLS and htpasswd authentication, installs the chart, runs the operator as the chart's ServiceAccount (there
# is no kubelet here, so the Deployment has no Pods: the operator runs as a local process), applies profiles,
# creates namespaces and a Pod, and prints what regcred did. `make demo-down` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
demo=$root/.local/demo
logs=$root/.local/logs
export KUBECONFIG=$root/.local/kubeconfig # only ever the local control plane
kubectl=$root/.local/bin/kubectl
helm=$root/.local/bin/helm
regcred=${CARGO_TARGET_DIR:-$root/target}/debug/regcred
venv=${REGCRED_VENV:-$HOME/.cache/regcred/venv}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stop_pid() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; rm -f "$1"; }

if ! command -v docker-registry >/dev/null; then
  say "installing Debian's docker-registry (the local registry)"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_=sudo
  $sudo_ apt-get install -y -qq docker-registry >/dev/null \
    || { echo "demo: could not install docker-registry: run 'sudo apt-get install docker-registry'" >&2; exit 1; }
fi
mkdir -p "$demo" "$logs"
stop_pid "$demo/regcred.pid"
stop_pid "$demo/registry.pid"

say "a local registry with TLS and a password"
openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=regcred demo registry" \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$demo/registry.key" -out "$demo/registry.crt" 2>/dev/null
password=$(openssl rand -hex 12)
"$venv/bin/python" -c 'import bcrypt,sys; print("demo:" + bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt()).decode())' \
  "$password" > "$demo/htpasswd"
registry_port=$(free_port)
cat > "$demo/registry.yml" <<CONFIG
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $demo/registry-data}}
http:
  addr: 127.0.0.1:$registry_port
  tls: {certificate: $demo/registry.crt, key: $demo/registry.key}
auth:
  htpasswd: {realm: regcred-demo, path: $demo/htpasswd}
CONFIG
docker-registry serve "$demo/registry.yml" > "$logs/registry.log" 2>&1 &
echo $! > "$demo/registry.pid"
registry=127.0.0.1:$registry_port
for _ in $(seq 50); do curl -s -o /dev/null --cacert "$demo/registry.crt" "https://$registry/v2/" && break; sleep 0.1; done
echo "registry at https://$registry (user demo); without credentials /v2/ answers" \
  "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$demo/registry.crt" "https://$registry/v2/")"

say "regcred installed with Helm into regcred-system"
webhook_port=$(free_port)
metrics_port=$(free_port)
"$kubectl" create namespace regcred-system --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
crds=true
# The CRD applied by the tests (not by Helm) cannot be adopted by the release: keep it, updated from crds/.
if [ "$("$kubectl" get crd registryprofiles.regcred.dev -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by}' 2>/dev/null)" = "" ] \
  && "$kubectl" get crd registryprofiles.regcred.dev >/dev/null 2>&1; then
  "$kubectl" apply --server-side --force-conflicts -f crds/ >/dev/null
  crds=false
fi
# replicaCount=0: no kubelet runs Pods here; the operator runs below as a local process with the chart's identity.
"$helm" upgrade --install regcred charts/regcred --namespace regcred-system --set crds.install=$crds \
  --set replicaCount=0 --set "webhook.url=https://127.0.0.1:$webhook_port/mutate" --set logging.format=plain
token=$("$kubectl" -n regcred-system create token regcred --duration 24h)
server=$("$kubectl" config view --raw -o jsonpath='{.clusters[0].cluster.server}')
ca=$("$kubectl" config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
cat > "$demo/regcred.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: regcred, user: {token: "$token"}}]
contexts: [{name: regcred, context: {cluster: local, user: regcred, namespace: regcred-system}}]
current-context: regcred
KUBECONFIG
KUBECONFIG=$demo/regcred.kubeconfig REGCRED_NAMESPACE=regcred-system \
  REGCRED_WEBHOOK_ADDR=127.0.0.1:$webhook_port REGCRED_WEBHOOK_DNS_NAMES=127.0.0.1 \
  REGCRED_WEBHOOK_CONFIGURATION=regcred REGCRED_WEBHOOK_SECRET=regcred-webhook-tls \
  REGCRED_LEADER_ELECTION_LEASE=regcred REGCRED_METRICS_ADDR=127.0.0.1:$metrics_port \
  AWS_EC2_METADATA_DISABLED=true \
  "$regcred" run > "$logs/regcred.log" 2>&1 &
echo $! > "$demo/regcred.pid"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$metrics_port/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$metrics_port/readyz" >/dev/null \
  || { echo "demo: regcred did not become ready; see $logs/regcred.log" >&2; tail -20 "$logs/regcred.log" >&2; exit 1; }
echo "regcred running as system:serviceaccount:regcred-system:regcred (log: $logs/regcred.log)"

say "profiles: the local registry, plus two examples"
"$kubectl" -n regcred-system create secret generic local-registry-creds \
  --from-literal=username=demo --from-literal=password="$password" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
cat <<PROFILE | "$kubectl" apply -f -
apiVersion: regcred.dev/v1alpha1
kind: RegistryProfile
metadata:
  name: local-registry
spec:
  server: "$registry"
  credentials:
    secretRef:
      name: local-registry-creds
  namespaces:
    selector:
      matchLabels:
        pull-from: local
PROFILE
"$kubectl" apply -f examples/dockerhub.yaml -f examples/mcr-anonymous.yaml

say "namespaces: two selected, one not"
for ns in demo-team-a demo-team-b; do
  "$kubectl" create namespace "$ns" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
  "$kubectl" label namespace "$ns" pull-from=local --overwrite >/dev/null
done
"$kubectl" create namespace demo-other --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
# A namespace created just now, and a Pod in it at once: the webhook makes sure the Secret exists first.
"$kubectl" delete namespace demo-fresh --ignore-not-found --wait >/dev/null
"$kubectl" create namespace demo-fresh >/dev/null && "$kubectl" label namespace demo-fresh pull-from=local >/dev/null
for _ in $(seq 50); do "$kubectl" -n demo-fresh get serviceaccount default >/dev/null 2>&1 && break; sleep 0.1; done
cat <<POD | "$kubectl" -n demo-fresh apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata:
  name: app
spec:
  containers:
    - name: app
      image: $registry/team/app:1.0
POD
"$kubectl" wait --for=condition=Ready registryprofile/local-registry --timeout=60s >/dev/null

say "Secrets regcred manages, per namespace"
"$kubectl" get secrets -A -l app.kubernetes.io/managed-by=regcred
say "the Pod's imagePullSecrets, added at admission (demo-fresh/app)"
"$kubectl" -n demo-fresh get pod app -o jsonpath='{range .spec.imagePullSecrets[*]}{.name}{"\n"}{end}'
say "kubectl get registryprofiles"
"$kubectl" get registryprofiles
say "the distributed credentials work against the registry"
auth=$("$kubectl" -n demo-team-a get secret regcred-local-registry -o jsonpath='{.data.\.dockerconfigjson}' | base64 -d \
  | python3 -c "import json,sys; print(json.load(sys.stdin)['auths']['$registry']['auth'])")
echo "GET https://$registry/v2/ with the Secret's credentials from demo-team-a:" \
  "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$demo/registry.crt" -H "Authorization: Basic $auth" "https://$registry/v2/")"

cat <<DONE

Everything keeps running: try it yourself with
  export KUBECONFIG=$KUBECONFIG
  $kubectl label namespace demo-other pull-from=local      # the Secret appears
  $kubectl -n demo-team-a delete secret regcred-local-registry   # and is restored
  $kubectl describe registryprofile dockerhub                    # why it is not Ready
Stop it all with: make demo-down
DONE
