#!/usr/bin/env bash
# Fails on every scalar that YAML 1.1 readers (kubectl, Helm) and YAML 1.2 readers (serde_yaml, the tests) take
# differently, in every YAML file users apply or Helm reads. `make check-generated` runs it.
#
# The checker (main.go: why Go, and what it compares) is built once per content of go.mod/go.sum/main.go and cached
# outside the clone, like the control plane: ${REGCRED_CACHE_DIR:-$XDG_CACHE_HOME/regcred}/yamlcheck/<hash>. It
# first proves itself on testdata/: it must name exactly the lines marked `# differs` in differ.yaml, and nothing in
# same.yaml. A check that passes everything would otherwise go unnoticed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { echo "yamlcheck: $*" >&2; exit 1; }

# The readers must be kubectl's own: the same module versions as the kubectl tools/controlplane builds (a replace
# directive there wins over its require).
version() { awk -v m="$1" '$1 == m && $2 == "=>" { r = $4 } $1 == m && $2 != "=>" { q = $2 } END { print (r != "" ? r : q) }' "$2"; }
for module in sigs.k8s.io/yaml go.yaml.in/yaml/v2 k8s.io/apimachinery; do
  mine=$(version "$module" "$here/go.mod")
  kubectl=$(version "$module" "$root/tools/controlplane/go.mod")
  [ -n "$mine" ] && [ "$mine" = "$kubectl" ] ||
    die "tools/yamlcheck/go.mod has $module ${mine:-(none)}, kubectl (tools/controlplane/go.mod) ${kubectl:-(none)}: make them equal (then go mod tidy)"
done

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH (the control plane needs one too; see tools/controlplane/build.sh)"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
cache_root=${REGCRED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/regcred}
key=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)
bin="$cache_root/yamlcheck/$key/yamlcheck"
if [ ! -x "$bin" ]; then
  mkdir -p "$(dirname "$bin")"
  (cd "$here" && go build -trimpath -o "$bin.tmp" .) || die "go build failed; check that the Go module proxy is reachable"
  mv "$bin.tmp" "$bin"
fi

# The checker's own test: the lines it names in differ.yaml are exactly the marked ones (with a count: a line can
# hold two), and same.yaml passes.
fixtures="$here/testdata"
expected=$(grep -n '^[^#].*# differs' "$fixtures/differ.yaml" |
  awk -F: '{ n = 1 } /twice/ { n = 2 } { for (i = 0; i < n; i++) print $1 }')
actual=$(cd "$fixtures" && { "$bin" differ.yaml || true; } | cut -d: -f2)
[ "$expected" = "$actual" ] || {
  diff <(echo "$expected") <(echo "$actual") >&2 || true
  die "the checker does not name exactly the lines marked '# differs' in tools/yamlcheck/testdata/differ.yaml (< expected, > named)"
}
(cd "$fixtures" && "$bin" same.yaml) || die "the checker reports a scalar of tools/yamlcheck/testdata/same.yaml, which every reader takes the same way"

# What users apply with kubectl (crds/, deploy/, examples/) and what Helm reads as YAML (the chart's values,
# Chart.yaml and the files its templates parse with fromYaml). The templates are Go templates, not YAML: what they
# render with the defaults is deploy/regcred.yaml.
cd "$root"
"$bin" crds/*.yaml deploy/*.yaml deploy/prometheus/*.yaml examples/*.yaml charts/regcred/values.yaml charts/regcred/Chart.yaml charts/regcred/files/*.yaml ||
  die "the scalars above are read differently by kubectl and Helm (YAML 1.1) than by YAML 1.2 readers: quote them (a generated file: fix its generator)"
