#!/usr/bin/env bash
# Builds (or reuses) what the local node needs besides the control-plane binary: the Debian packages of the
# container runtime, and the sandbox ("pause") image made from tools/node/pause.c. The image is cached outside
# the clone, keyed by the source's hash, as a docker-archive that containerd imports:
#   $REGCRED_CACHE_DIR/node/<hash>/pause.tar
# --name prints the image's name (nothing is built); --archive builds if needed and prints the archive's path.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"
die() { echo "node build: $*" >&2; exit 1; }

need_packages containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
  iptables:iptables conntrack:conntrack ip:iproute2 nsenter:util-linux buildah:buildah skopeo:skopeo gcc:gcc \
  /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev || die "the node's packages are missing (see above)"

key=$(cat "$root/tools/node/pause.c" "$root/tools/node/build.sh" | sha256sum | cut -c1-16)
out="$cache_root/node/$key"
name="localhost/regcred/pause:$key"
if [ "${1:-}" = "--name" ]; then echo "$name"; exit 0; fi
if [ ! -s "$out/pause.tar" ]; then
  start=$(date +%s)
  mkdir -p "$out.tmp"
  gcc -static -O2 -o "$out.tmp/pause" "$root/tools/node/pause.c" || die "gcc -static failed (apt-get install gcc libc6-dev)"
  ctr=$(buildah "${buildah_args[@]}" from scratch)
  trap 'buildah "${buildah_args[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
  buildah "${buildah_args[@]}" copy "$ctr" "$out.tmp/pause" /pause >/dev/null
  buildah "${buildah_args[@]}" config --entrypoint '["/pause"]' --user 65535:65535 --os linux --arch amd64 "$ctr"
  buildah "${buildah_args[@]}" commit -q "$ctr" "$name" >/dev/null
  rm -f "$out.tmp/pause.tar"
  buildah "${buildah_args[@]}" push -q "$name" "docker-archive:$out.tmp/pause.tar:$name" >/dev/null
  mkdir -p "$out" && mv "$out.tmp/pause" "$out.tmp/pause.tar" "$out/" && rm -rf "$out.tmp"
  echo "node build: pause image $name built in $(( $(date +%s) - start ))s" >&2
fi
if [ "${1:-}" = "--archive" ]; then echo "$out/pause.tar"; fi
