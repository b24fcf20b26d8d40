#!/usr/bin/env bash
# Builds regcred's image from the project's Dockerfile with buildah (no Docker engine needed), on local stand-ins
# for the base images (tools/image/bases.sh). Cached outside the clone: an OCI archive per content of the build
# context and the Dockerfile, $REGCRED_CACHE_DIR/images/regcred-<key>.tar, and buildah's layers (the dependency
# layer is reused while Cargo.toml and Cargo.lock stay the same). Prints the archive's path on stdout.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"
die() { echo "image build: $*" >&2; exit 1; }
cd "$root"
key=$( { cat Dockerfile .dockerignore Cargo.toml Cargo.lock "$0"; find src -type f | sort | xargs cat; } | sha256sum | cut -c1-16)
out="$cache_root/images/regcred-$key.tar"
if [ ! -s "$out" ]; then
  bases=$("$root/tools/image/bases.sh") || die "could not make the base images"
  build_arg=()
  for kv in $bases; do build_arg+=(--build-arg "$kv"); done
  start=$(date +%s)
  echo "image build: building regcred's image from the Dockerfile (a cold build compiles every dependency: 15-25 min on 2 cores)" >&2
  mkdir -p "$cache_root/images"
  # The RUN steps need a container runtime that works with this host's cgroups: runc. crun (which buildah prefers,
  # and which Debian installs with it when runc is missing) refuses cgroup v1 with a cgroup2 mount beside it:
  # "cgroups in hybrid mode not supported".
  need_packages runc:runc >&2 || die "runc is missing"
  # --force-rm: a failed build leaves no working container (nor its mount) behind.
  buildah "${buildah_args[@]}" build --runtime runc --layers --force-rm --pull=never --network=host "${build_arg[@]}" \
    -t "localhost/regcred:$key" -f Dockerfile . >"$cache_root/images/build.log" 2>&1 ||
    { tail -n 30 "$cache_root/images/build.log" >&2; die "buildah build failed (full log: $cache_root/images/build.log)"; }
  rm -f "$out.tmp"
  buildah "${buildah_args[@]}" push -q "localhost/regcred:$key" "oci-archive:$out.tmp:localhost/regcred:$key" >/dev/null
  mv "$out.tmp" "$out"
  # Older archives of this cache are of no further use.
  find "$cache_root/images" -name 'regcred-*.tar' ! -name "regcred-$key.tar" -delete
  echo "image build: built in $(( $(date +%s) - start ))s ($(du -h "$out" | cut -f1) archive)" >&2
fi
echo "$out"
