#!/usr/bin/env bash
# Checks the GitHub Actions workflows (.github/workflows/) with actionlint, shellcheck checking their `run:` scripts
# through it; then what no linter knows: the release workflow publishes the image the chart runs by default, with
# the Helm the project pins, from a tag that is the crate's and the chart's version. `make lint` runs it.
#
# actionlint is pinned and built once from the Go module proxy into ${REGCRED_CACHE_DIR:-~/.cache/regcred}/actionlint/
# <version>/ (outside the clone, like the control plane); shellcheck is Debian's, installed when missing.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
ACTIONLINT_VERSION=v1.7.12
die() { echo "actionlint: $*" >&2; exit 1; }

actionlint="$cache_root/actionlint/$ACTIONLINT_VERSION/actionlint"
if [ ! -x "$actionlint" ]; then
  command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH (the control plane needs one too; see tools/controlplane/build.sh)"
  echo "actionlint: installing github.com/rhysd/actionlint $ACTIONLINT_VERSION with go install" >&2
  GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOBIN="$(dirname "$actionlint")" \
    go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" ||
    die "go install github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION failed; is the Go module proxy reachable?"
fi
need_packages shellcheck:shellcheck >&2 || die "shellcheck is missing"

cd "$root"
workflows=(.github/workflows/*.yml)
[ -e "${workflows[0]}" ] || die "no workflow in .github/workflows"
"$actionlint" -shellcheck "$(command -v shellcheck)" "${workflows[@]}" || die "the workflows above need fixing"

# Every action is pinned to a commit, its version named beside it (a tag can be moved; a commit cannot).
unpinned=$(grep -nE '^ *(- )?uses: ' "${workflows[@]}" | grep -vE 'uses: [^ @]+@[0-9a-f]{40} # v[0-9.]+$' || true)
[ -z "$unpinned" ] || die "actions not pinned to a commit (uses: owner/name@<40 hex> # vX.Y.Z): $unpinned"

# The release workflow and the sources it publishes agree.
release=.github/workflows/release.yml
published=$(sed -n 's/^  REGISTRY: *//p' "$release")
[ -n "$published" ] || die "$release sets no REGISTRY (env) to publish to"
default_image=$(awk '/^[^ #]/ { in_image = ($0 ~ /^image:/) } in_image && /^  repository:/ { print $2; exit }' charts/regcred/values.yaml)
[ "$default_image" = "$published/regcred" ] ||
  die "the chart's default image is $default_image (charts/regcred/values.yaml), but $release publishes $published/regcred"
# shellcheck source=controlplane/versions.env
source tools/controlplane/versions.env
helm=$(sed -n 's/^  HELM_VERSION: *//p' "$release")
[ "$helm" = "$HELM_VERSION" ] ||
  die "$release packages the chart with Helm ${helm:-(none)}, the project pins $HELM_VERSION (tools/controlplane/versions.env)"
crate=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
chart=$(sed -n 's/^version: *//p' charts/regcred/Chart.yaml)
app=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/regcred/Chart.yaml)
[ "$crate" = "$chart" ] && [ "$chart" = "$app" ] ||
  die "a release tag names one version: Cargo.toml has $crate, Chart.yaml version $chart and appVersion $app"
