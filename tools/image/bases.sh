#!/usr/bin/env bash
# Local stand-ins for the Dockerfile's two public base images, which cannot be pulled on a machine without
# internet. Each is made from Debian's packages with mmdebstrap and kept in the local buildah storage, keyed by
# this script and the Rust toolchain, so it is made once per machine:
#   localhost/regcred-base/rust:<version>-slim-bookworm   for  docker.io/library/rust:1.95-slim-bookworm
#     Debian bookworm (minbase) with gcc and libc6-dev, plus this machine's Rust toolchain (rustc, cargo, std)
#     in /usr/local like the official image (RUSTUP_HOME, CARGO_HOME, PATH), trusting this machine's CA bundle.
#   localhost/regcred-base/cc-debian12:nonroot            for  gcr.io/distroless/cc-debian12:nonroot
#     only the files of base-files, netbase, tzdata, libc6, libgcc-s1 and ca-certificates (no shell, no package
#     manager), this machine's CA bundle, and the nonroot user 65532, like distroless.
# Prints the two build arguments that select them (BUILD_IMAGE=... RUNTIME_IMAGE=...).
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"
die() { echo "image bases: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "mmdebstrap and buildah need root here: run as root"
need_packages mmdebstrap:mmdebstrap buildah:buildah >&2 || die "missing packages"
sysroot=$(rustc --print sysroot) || die "no Rust toolchain (rustup) on PATH"
version=$(rustc --version | awk '{print $2}')
key=$(cat "$0" <(echo "$version") | sha256sum | cut -c1-12)
build_image="localhost/regcred-base/rust:$version-slim-bookworm-$key"
runtime_image="localhost/regcred-base/cc-debian12:nonroot-$key"
bah() { buildah "${buildah_args[@]}" "$@"; }
have() { bah inspect --type image "$1" >/dev/null 2>&1; }
mirror=$(sed -n 's/^URIs: *//p; s/^deb \(http[^ ]*\) bookworm .*/\1/p' /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
work="$cache_root/image-bases.tmp"

commit_rootfs() { # rootfs, image, config args...
  local rootfs=$1 image=$2 ctr; shift 2
  ctr=$(bah from scratch)
  bah copy "$ctr" "$rootfs/" / >/dev/null
  bah config --os linux --arch amd64 "$@" "$ctr"
  bah commit -q "$ctr" "$image" >/dev/null
  bah rm "$ctr" >/dev/null
}

if ! have "$runtime_image"; then
  start=$(date +%s)
  rm -rf "$work" && mkdir -p "$work"
  mmdebstrap --quiet --variant=extract --include=base-files,netbase,tzdata,libc6,libgcc-s1,ca-certificates \
    bookworm "$work/rootfs" "$mirror" >&2 || die "mmdebstrap of the runtime base failed (is $mirror reachable?)"
  # Done here rather than in --customize-hook: mmdebstrap runs no hooks for --variant=extract, and the image then
  # had no CA bundle (regcred's registry clients refused to start: "No CA certificates were loaded").
  rootfs=$work/rootfs
  mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/home/nonroot" "$rootfs/tmp"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt" ||
    die "the host has no /etc/ssl/certs/ca-certificates.crt (apt-get install ca-certificates)"
  printf "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n" > "$rootfs/etc/passwd"
  printf "root:x:0:\nnonroot:x:65532:\n" > "$rootfs/etc/group"
  chown 65532:65532 "$rootfs/home/nonroot" && chmod 1777 "$rootfs/tmp"
  rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/info" "$rootfs/var/cache/apt" "$rootfs/var/lib/apt/lists"
  commit_rootfs "$work/rootfs" "$runtime_image" --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  rm -rf "$work"
  echo "image bases: $runtime_image made in $(( $(date +%s) - start ))s" >&2
fi

if ! have "$build_image"; then
  start=$(date +%s)
  rm -rf "$work" && mkdir -p "$work"
  # This machine's CA bundle, so cargo trusts what this machine trusts on its way to crates.io.
  mmdebstrap --quiet --variant=minbase --include=gcc,libc6-dev,ca-certificates \
    --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"' \
    --customize-hook='rm -rf "$1/usr/share/doc" "$1/usr/share/man" "$1/var/cache/apt/archives"/*.deb "$1/var/lib/apt/lists"/*' \
    bookworm "$work/rootfs" "$mirror" >&2 || die "mmdebstrap of the build base failed (is $mirror reachable?)"
  tc="$work/rootfs/usr/local/rustup/toolchains/$version-x86_64-unknown-linux-gnu"
  mkdir -p "$tc/bin" "$work/rootfs/usr/local/cargo/bin"
  cp -a "$sysroot/bin/rustc" "$sysroot/bin/cargo" "$tc/bin/"
  cp -a "$sysroot/lib" "$tc/"
  [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$tc/"
  ln -s "../../rustup/toolchains/$version-x86_64-unknown-linux-gnu/bin/rustc" "$work/rootfs/usr/local/cargo/bin/rustc"
  ln -s "../../rustup/toolchains/$version-x86_64-unknown-linux-gnu/bin/cargo" "$work/rootfs/usr/local/cargo/bin/cargo"
  commit_rootfs "$work/rootfs" "$build_image" --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env RUST_VERSION="$version"
  rm -rf "$work"
  echo "image bases: $build_image made in $(( $(date +%s) - start ))s" >&2
fi
echo "BUILD_IMAGE=$build_image RUNTIME_IMAGE=$runtime_image"
