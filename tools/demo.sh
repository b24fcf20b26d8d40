# `make demo`: regcred at work on a local cluster of its own (state in .local/demo; never another cluster): a
# control plane and a node, a local registry with TLS and htpasswd authentication holding a private image and
# regcred's own image (built from the Dockerfile), regcred installed with Helm as the chart's Deployment, profiles,
# namespaces, and two Pods of the private image: one in a selected namespace that pulls and runs with regcred's
# Secret, one in an unselected namespace that the registry refuses. `make demo-down` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
export REGCRED_LOCAL=$PWD/.local/demo
# shellcheck source=lib.sh
source tools/lib.sh
demo=$local_dir/files
export KUBECONFIG=$kubeconfig # only ever the demo's own cluster
kubectl=$bin/kubectl
helm=$bin/helm
venv=${REGCRED_VENV:-$HOME/.cache/regcred/venv}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The Pod `app` of the private image in namespace $1.
app_pod() {
  cat <<POD | "$kubectl" -n "$1" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata:
  name: app
spec:
  containers:
    - name: app
      image: $registry/team/app:1.0
POD
}
stop_pid() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; rm -f "$1"; }

need_packages docker-registry:docker-registry skopeo:skopeo || exit 1
say "a local cluster with a node (state in $local_dir)"
tools/cluster-up.sh
tools/node-up.sh
. "$local_dir/node/node.env"
say "regcred's image, built from the Dockerfile with buildah"
archive=$(tools/image/build.sh)
echo "$archive"
mkdir -p "$demo" "$logs"
stop_pid "$demo/registry.pid"

say "a local registry with TLS and a password, where the node reaches it ($HOST_IP)"
# A CA (registry.crt: what everything trusts) and the server certificate it signs. Not one self-signed
# certificate: openssl marks that one CA:TRUE, and rustls (regcred's registry checks) refuses a CA as a server's.
openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=regcred demo registry CA" \
  -keyout "$demo/ca.key" -out "$demo/registry.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=regcred demo registry" -keyout "$demo/server.key" -out "$demo/server.csr" 2>/dev/null
openssl x509 -req -in "$demo/server.csr" -CA "$demo/registry.crt" -CAkey "$demo/ca.key" -CAcreateserial -days 7 \
  -extfile <(printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$HOST_IP") \
  -out "$demo/server.crt" 2>/dev/null
password=$(openssl rand -hex 12)
"$venv/bin/python" -c 'import bcrypt,sys; print("demo:" + bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt()).decode())' \
  "$password" > "$demo/htpasswd"
registry_port=$(free_port)
cat > "$demo/registry.yml" <<CONFIG
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $demo/registry-data}}
http:
  addr: $HOST_IP:$registry_port
  tls: {certificate: $demo/server.crt, key: $demo/server.key}
auth:
  htpasswd: {realm: regcred-demo, path: $demo/htpasswd}
CONFIG
docker-registry serve "$demo/registry.yml" > "$logs/registry.log" 2>&1 &
echo $! > "$demo/registry.pid"
registry=$HOST_IP:$registry_port
for _ in $(seq 50); do curl -s -o /dev/null --cacert "$demo/registry.crt" "https://$registry/v2/" && break; sleep 0.1; done
echo "registry at https://$registry (user demo); without credentials /v2/ answers" \
  "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$demo/registry.crt" "https://$registry/v2/")"
# The node's containerd trusts the registry's CA.
mkdir -p "$NODE_CERTS_D/$registry" && cp "$demo/registry.crt" "$NODE_CERTS_D/$registry/ca.crt"
# The top-level ca too: after a 404 from the [host], containerd tries `server` and would report its certificate.
printf 'server = "https://%s"\nca = "%s"\n[host."https://%s"]\n  capabilities = ["pull", "resolve"]\n  ca = "%s"\n' \
  "$registry" "$NODE_CERTS_D/$registry/ca.crt" "$registry" "$NODE_CERTS_D/$registry/ca.crt" > "$NODE_CERTS_D/$registry/hosts.toml"
mkdir -p "$demo/certs" && cp "$demo/registry.crt" "$demo/certs/ca.crt"
skopeo copy --quiet --dest-creds "demo:$password" --dest-cert-dir "$demo/certs" "oci-archive:$archive" "docker://$registry/regcred/regcred:demo"
skopeo copy --quiet --dest-creds "demo:$password" --dest-cert-dir "$demo/certs" \
  "docker-archive:$(tools/node/build.sh --archive)" "docker://$registry/team/app:1.0"
echo "pushed regcred/regcred:demo and the private image team/app:1.0"

say "regcred installed with Helm into regcred-system (two replicas, pulled with imagePullSecrets)"
"$kubectl" create namespace regcred-system --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
"$kubectl" -n regcred-system create secret docker-registry regcred-image --docker-server="$registry" \
  --docker-username=demo --docker-password="$password" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
"$helm" upgrade --install regcred charts/regcred --namespace regcred-system \
  --set image.repository="$registry/regcred/regcred" --set image.tag=demo --set 'imagePullSecrets[0].name=regcred-image' \
  --set logging.format=plain --wait --timeout 180s
"$kubectl" -n regcred-system get pods -o wide

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
  tls:
    caBundle: |
$(sed 's/^/      /' "$demo/registry.crt")
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
app_pod demo-fresh
# The same Pod where no profile selects the namespace: no Secret, so the registry refuses the kubelet.
app_pod demo-other
"$kubectl" wait --for=condition=Ready registryprofile/local-registry --timeout=60s >/dev/null
"$kubectl" -n demo-fresh wait --for=condition=Ready pod/app --timeout=90s >/dev/null || true
for _ in $(seq 300); do
  reason=$("$kubectl" -n demo-other get pod app -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}')
  case "$reason" in ErrImagePull | ImagePullBackOff) break ;; esac
  sleep 0.2
done

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

say "two Pods of the private image $registry/team/app:1.0: with regcred's Secret (demo-fresh) and without (demo-other)"
"$kubectl" get pods -n demo-fresh -o wide
"$kubectl" get pods -n demo-other -o wide
for ns in demo-fresh demo-other; do
  say "the kubelet's events for $ns/app"
  "$kubectl" -n "$ns" get events --field-selector involvedObject.name=app,source=kubelet \
    -o custom-columns=REASON:.reason,MESSAGE:.message --sort-by=.firstTimestamp
done

say "image checks at admission: a Deployment naming a tag that does not exist (kubectl prints regcred's warning)"
cat <<DEPLOY | "$kubectl" -n demo-team-a apply -f -
apiVersion: apps/v1
kind: Deployment
metadata: {name: typo}
spec:
  replicas: 0
  selector: {matchLabels: {app: typo}}
  template:
    metadata: {labels: {app: typo}}
    spec: {containers: [{name: app, image: "$registry/team/app:1.0-typo"}]}
DEPLOY
say "pull failures the kubelet reported from the profile's registry, in its status (demo-other/app had no Secret)"
for _ in $(seq 100); do
  [ -n "$("$kubectl" get registryprofile local-registry -o jsonpath='{.status.pullFailures}')" ] && break
  sleep 0.2
done
"$kubectl" get registryprofile local-registry \
  -o jsonpath='{range .status.pullFailures[*]}{.namespace}/{.pod}  {.image}  {.reason}{"\n"}{end}'

cat <<DONE

Everything keeps running: try it yourself with
  export KUBECONFIG=$KUBECONFIG
  $kubectl label namespace demo-other pull-from=local      # the Secret appears
  $kubectl -n demo-team-a delete secret regcred-local-registry   # and is restored
  $kubectl describe registryprofile dockerhub                    # why it is not Ready
Stop it all with: make demo-down
DONE
