# Shared by the tools/ scripts: where things live, and how they report. Source it; it sets no shell options.
#
# REGCRED_LOCAL is the state folder of one local cluster (default .local; `make demo` uses .local/demo), so a demo
# and a test run can be up at the same time. Binaries stay in .local/bin; heavy builds are cached outside the
# clone under REGCRED_CACHE_DIR (default ~/.cache/regcred).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
local_dir=${REGCRED_LOCAL:-$root/.local}
case "$local_dir" in /*) ;; *) local_dir="$root/$local_dir" ;; esac
bin="$root/.local/bin"
cache_root=${REGCRED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/regcred}
state="$local_dir/cluster"
logs="$local_dir/logs"
kubeconfig="$local_dir/kubeconfig"

# The local buildah storage (images are built and kept here, never in the system's /var/lib/containers).
buildah_args=(--root "$cache_root/buildah/storage" --runroot "$cache_root/buildah/run" --storage-driver overlay)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Installs the Debian packages whose command (first word of each pair "command:package") is missing.
need_packages() {
  local missing=() pair
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null 2>&1 || [ -e "${pair%%:*}" ] || missing+=("${pair#*:}"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}" >&2
  as_root apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
    { as_root apt-get update -qq && as_root apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
    { echo "could not install ${missing[*]}: run 'apt-get update && apt-get install ${missing[*]}' as root" >&2; return 1; }
}

# The slot of a cluster: its number among the local clusters that run at once (0-9). It numbers the node's
# networks so two clusters never share an address: services 10.96.N.0/24, pods 10.244.N.0/24, and the link
# between the host and the node 10.250.N.0/30 (.1 the host, .2 the node).
slot_of() { cat "$state/slot" 2>/dev/null; }
service_cidr() { echo "10.96.$1.0/24"; }
kubernetes_service_ip() { echo "10.96.$1.1"; }
pod_cidr() { echo "10.244.$1.0/24"; }
host_ip() { echo "10.250.$1.1"; }
node_ip() { echo "10.250.$1.2"; }

# wait_for DESCRIPTION SECONDS COMMAND...: runs COMMAND until it succeeds. Fails (through the caller's
# fail_with_logs) when a process recorded in the file $pids_file exits meanwhile, or after SECONDS.
wait_for() {
  local what=$1 deadline=$(( $(date +%s) + $2 )) name pid; shift 2
  until "$@" >/dev/null 2>&1; do
    while read -r name pid; do
      kill -0 "$pid" 2>/dev/null || fail_with_logs "$name exited while waiting for $what (log: $logs/$name.log)"
    done <"$pids_file"
    [ "$(date +%s)" -lt "$deadline" ] || fail_with_logs "timed out after $2 s waiting for $what"
    sleep 0.2
  done
}
