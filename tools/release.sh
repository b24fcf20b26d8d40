#!/usr/bin/env bash
# Publishes a release of regcred to an OCI registry (`make release REGISTRY=... VERSION=...`):
#   image  $REGISTRY/regcred:$VERSION               regcred's image, built from the Dockerfile (tools/image/build.sh)
#   chart  oci://$REGISTRY/charts/regcred:$VERSION  the chart, version and appVersion $VERSION, whose default image is
#                                                   the one above: `helm install` with no --set pulls it
# With REGISTRY=ghcr.io/regcred this is what .github/workflows/release.yml publishes (its image for two
# architectures, built there; the chart with `--only chart`). On stdout, one line per pushed artifact,
# `image=REF@DIGEST` and `chart=oci://REF@DIGEST` (the workflow signs and attests these); progress on stderr.
#
#   tools/release.sh [--only image|chart] REGISTRY VERSION
#
# Environment:
#   REGISTRY_USER, REGISTRY_PASSWORD  log in for this run only; otherwise your own logins are used (skopeo/podman/
#                                     docker login for the image, `helm registry login` for the chart)
#   REGISTRY_CA          a CA bundle (PEM) that signs the registry's certificate (a registry with a private CA)
#   REGISTRY_PLAIN_HTTP  1: the registry speaks plain HTTP (a local registry only: nothing is encrypted)
#   IMAGE_ARCHIVE        push this OCI archive (what `make image` prints) instead of building the image
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
die() { echo "release: $*" >&2; exit 1; }
usage="usage: make release REGISTRY=<registry>/<namespace> VERSION=<semver>   (e.g. REGISTRY=ghcr.io/you VERSION=0.1.0)"

parts="image chart"
if [ "${1:-}" = "--only" ]; then
  case "${2:-}" in image | chart) parts=$2 ;; *) die "--only takes image or chart, not '${2:-}'" ;; esac
  shift 2
fi
registry=${1:-}
version=${2:-}
[ -n "$registry" ] || die "REGISTRY is missing: where to push: a registry's host, and a path in it if need be. $usage"
[ -n "$version" ] || die "VERSION is missing: the release's version, SemVer without a leading v. $usage"
[ $# -le 2 ] || die "too many arguments: ${*:3}. $usage"
registry=${registry%/}
case "$registry" in
  *://*) die "REGISTRY is a host and a path, without a scheme: '${registry#*://}', not '$registry'" ;;
esac
[ "$registry" = "$(tr '[:upper:]' '[:lower:]' <<<"$registry")" ] ||
  die "REGISTRY must be lower case (OCI repository names are): '$registry'"
case "$version" in
  v[0-9]*) die "VERSION is SemVer without the leading v: '${version#v}', not '$version' (a tag v1.2.3 releases 1.2.3)" ;;
  *+*) die "VERSION cannot carry build metadata ('+${version#*+}'): an OCI tag cannot hold '+'" ;;
esac
semver='^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$'
[[ "$version" =~ $semver ]] || die "VERSION must be SemVer (1.2.3, 1.2.3-rc.1): '$version'"
[ -z "${REGISTRY_USER:-}" ] || [ -n "${REGISTRY_PASSWORD:-}" ] || die "REGISTRY_USER is set but REGISTRY_PASSWORD is not"
[ -z "${REGISTRY_CA:-}" ] || [ -s "$REGISTRY_CA" ] || die "REGISTRY_CA: no CA bundle at '$REGISTRY_CA'"

host=${registry%%/*}
image="$registry/regcred:$version"
chart_repo="oci://$registry/charts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# skopeo reads a directory of *.crt, helm a file. One auth file (the same format) for both when logging in here.
login_tls=() copy_tls=() helm_tls=()
if [ "${REGISTRY_PLAIN_HTTP:-0}" = 1 ]; then
  login_tls=(--tls-verify=false) copy_tls=(--dest-tls-verify=false) helm_tls=(--plain-http)
elif [ -n "${REGISTRY_CA:-}" ]; then
  mkdir -p "$work/certs" && cp "$REGISTRY_CA" "$work/certs/ca.crt"
  login_tls=(--cert-dir "$work/certs") copy_tls=(--dest-cert-dir "$work/certs") helm_tls=(--ca-file "$REGISTRY_CA")
fi
copy_auth=() helm_auth=()
if [ -n "${REGISTRY_USER:-}" ]; then
  copy_auth=(--dest-authfile "$work/auth.json") helm_auth=(--registry-config "$work/auth.json")
fi

if [[ " $parts " = *" image "* ]]; then
  need_packages skopeo:skopeo >&2 || die "skopeo is missing"
  archive=${IMAGE_ARCHIVE:-$("$root/tools/image/build.sh")} || die "the image build failed"
  [ -s "$archive" ] || die "no image archive at '$archive'"
  if [ -n "${REGISTRY_USER:-}" ]; then
    skopeo login --authfile "$work/auth.json" "${login_tls[@]}" --username "$REGISTRY_USER" --password-stdin \
      "$host" <<<"$REGISTRY_PASSWORD" >/dev/null || die "skopeo login $host as $REGISTRY_USER failed"
  fi
  echo "release: pushing the image $image" >&2
  skopeo copy --quiet "${copy_tls[@]}" "${copy_auth[@]}" --digestfile "$work/image.digest" \
    "oci-archive:$archive" "docker://$image" || die "pushing $image failed (see above)"
  echo "image=$registry/regcred@$(cat "$work/image.digest")"
fi

if [[ " $parts " = *" chart "* ]]; then
  helm=$root/.local/bin/helm
  [ -x "$helm" ] || helm=$(command -v helm) ||
    die "helm is missing: install Helm 3.8 or later, or run 'make controlplane' (the project's pinned helm)"
  if [ -n "${REGISTRY_USER:-}" ]; then
    "$helm" registry login "${helm_auth[@]}" "${helm_tls[@]}" --username "$REGISTRY_USER" --password-stdin \
      "$host" <<<"$REGISTRY_PASSWORD" >/dev/null 2>&1 || die "helm registry login $host as $REGISTRY_USER failed"
  fi
  # The chart as it is in the repository, but for its default image: the one this release pushes.
  cp -r "$root/charts/regcred" "$work/regcred"
  awk -v repo="$registry/regcred" '
    /^[^ #]/ { in_image = ($0 ~ /^image:/) }
    in_image && /^  repository:/ && !done { print "  repository: " repo; done = 1; next }
    { print }
  ' "$root/charts/regcred/values.yaml" >"$work/regcred/values.yaml"
  "$helm" package "$work/regcred" --version "$version" --app-version "$version" --destination "$work" >/dev/null ||
    die "helm package failed"
  package="$work/regcred-$version.tgz"
  # shellcheck source=controlplane/versions.env
  source "$root/tools/controlplane/versions.env"
  # The packaged chart's Deployment, with no value set, runs the image this release pushes.
  rendered=$("$helm" template regcred "$package" --kube-version "$KUBERNETES_VERSION" | sed -n 's/^ *image: *"\([^"]\{1,\}\)"$/\1/p' | sort -u)
  [ "$rendered" = "$image" ] || die "the packaged chart runs '$rendered', not $image: has values.yaml's image: block changed shape?"
  echo "release: pushing the chart $chart_repo/regcred:$version" >&2
  out=$("$helm" push "$package" "$chart_repo" "${helm_auth[@]}" "${helm_tls[@]}" 2>&1) ||
    die "helm push to $chart_repo failed: $out"
  digest=$(sed -n 's/^Digest: *//p' <<<"$out")
  [ -n "$digest" ] || die "helm push printed no digest: $out"
  echo "chart=$chart_repo/regcred@$digest"
fi
