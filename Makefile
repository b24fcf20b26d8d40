# regcred developer entry points. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
export PATH := $(CURDIR)/.local/bin:$(PATH)
# Tests find the local cluster here unless KUBECONFIG says otherwise.
LOCAL_KUBECONFIG := $(CURDIR)/.local/kubeconfig
# Integration tests share one apiserver; each runs in its own namespaces.
TEST_THREADS ?= 4
# `make test` runs on clusters of its own (state in .local/test), so a demo (.local/demo) or a cluster started by
# hand (.local) stays untouched.
TEST_LOCAL := $(CURDIR)/.local/test
# Every integration test but the node's (tests/node.rs), which `make e2e` runs on a cluster with a node.
CONTROL_PLANE_TESTS := $(patsubst tests/%.rs,--test %,$(filter-out tests/node.rs,$(wildcard tests/*.rs)))

.PHONY: help build crds deploy api-reference docs docs-build demo demo-down soak check-generated alerts lint unit controlplane tools cluster-up cluster-down node-up node-down image integration e2e test bench release

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## Build the regcred binary (debug)
	$(CARGO) build --bin regcred

# The CRD is generated from the Rust types into crds/ (for kubectl users) and into the chart (for its template).
CRD_FILES := crds/regcred.dev_registryprofiles.yaml charts/regcred/files/crd.yaml
crds: ## Regenerate crds/ and the chart's copy from the Rust types
	$(CARGO) run --quiet --bin regcred -- crd > crds/regcred.dev_registryprofiles.yaml
	cp crds/regcred.dev_registryprofiles.yaml charts/regcred/files/crd.yaml

deploy: controlplane ## Render deploy/regcred.yaml and deploy/prometheus/rules.yaml from the chart
	tools/render-deploy.sh > deploy/regcred.yaml
	tools/prometheus-rules.sh > deploy/prometheus/rules.yaml

# The Python tools' virtualenv (tools/python-tools.sh): MkDocs for the docs site, PyYAML for the API reference.
TOOLS_BIN := $(or $(REGCRED_VENV),$(HOME)/.cache/regcred/venv)/bin
# Material's banner about its end of life: printed on every build, and no news to anyone reading the output.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(TOOLS_BIN)/mkdocs

api-reference: tools ## Regenerate docs/reference/api.md from the CRD (crds/)
	$(TOOLS_BIN)/python tools/api-reference.py > docs/reference/api.md

docs: tools ## Serve the docs site on http://127.0.0.1:8000, rebuilt on every change
	$(MKDOCS) serve

docs-build: tools ## Build the docs site into .local/site with --strict: fails on a broken link or anchor, a page not in the nav, an example no page includes
	@for f in examples/*.yaml; do grep -rqF -- "--8<-- \"$$f\"" docs \
	  || { echo "$$f is included by no page of docs/: add it to its registry's page (--8<-- \"$$f\")" >&2; exit 1; }; done
	$(MKDOCS) build --strict

check-generated: controlplane tools ## Fail if generated files (crds/, the chart's CRD, deploy/, docs/reference/api.md) are not what the sources generate, or if any YAML users apply or Helm reads holds a scalar YAML 1.1 and 1.2 read differently
	@for f in $(CRD_FILES); do $(CARGO) run --quiet --bin regcred -- crd | diff -u $$f - \
	  || { echo "$$f is stale: run 'make crds' and commit the result" >&2; exit 1; }; done
	@tools/render-deploy.sh | diff -u deploy/regcred.yaml - \
	  || { echo "deploy/ is stale: run 'make deploy' and commit the result" >&2; exit 1; }
	@$(TOOLS_BIN)/python tools/api-reference.py | diff -u docs/reference/api.md - \
	  || { echo "docs/reference/api.md is stale: run 'make api-reference' and commit the result" >&2; exit 1; }
	@tools/prometheus-rules.sh | diff -u deploy/prometheus/rules.yaml - \
	  || { echo "deploy/prometheus/rules.yaml is stale: run 'make deploy' and commit the result" >&2; exit 1; }
	@tools/yamlcheck/check.sh

alerts: controlplane ## promtool: check the alert rules (the chart's and deploy/'s) and run their unit tests (deploy/prometheus/rules.test.yaml)
	@prom=$$(tools/prometheus.sh) && $$prom/promtool check rules charts/regcred/files/alerts.yaml deploy/prometheus/rules.yaml \
	  && $$prom/promtool test rules deploy/prometheus/rules.test.yaml

lint: ## cargo fmt --check and clippy with warnings denied; actionlint (pinned, cached) on the GitHub workflows
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	tools/actionlint.sh

unit: ## Unit tests (no cluster needed)
	$(CARGO) test --lib --bins

controlplane: ## Build (or reuse) the local control-plane binaries and helm
	tools/controlplane/build.sh

cluster-up: ## Start the local Kubernetes control plane (.local/kubeconfig)
	tools/cluster-up.sh

tools: ## Install the Python tools the tests start (moto) and build Prometheus (tools/prometheus.sh), pinned, outside the clone
	tools/python-tools.sh
	tools/prometheus.sh >/dev/null

cluster-down: ## Stop the local cluster (and its node) and remove its state
	tools/cluster-down.sh

node-up: ## Add a worker node to the running local cluster (kubelet, containerd, CNI, kube-proxy, kube-scheduler; root)
	tools/node-up.sh

node-down: ## Stop the node and undo its changes to the host
	tools/node-down.sh

image: ## Build regcred's image from the Dockerfile with buildah (cached); prints the OCI archive's path
	@tools/image/build.sh

release: ## Build regcred's image and push it with the chart (OCI) to a registry: make release REGISTRY=host/namespace VERSION=1.2.3 (docs/releases.md)
	@tools/release.sh "$(REGISTRY)" "$(VERSION)"

integration: ## Integration tests against the running local cluster (control plane only)
	KUBECONFIG=$${KUBECONFIG:-$(LOCAL_KUBECONFIG)} $(CARGO) test --no-fail-fast $(CONTROL_PLANE_TESTS) -- --test-threads=$(TEST_THREADS)

e2e: ## End-to-end tests on the running local cluster's node: regcred's Deployment, real image pulls
	REGCRED_IMAGE_ARCHIVE=$$(tools/image/build.sh) && export REGCRED_IMAGE_ARCHIVE && \
	  KUBECONFIG=$${KUBECONFIG:-$(LOCAL_KUBECONFIG)} $(CARGO) test --no-fail-fast --test node -- --test-threads=1

# The scale curve's sizes (namespaces; two profiles select every one): each runs on a fresh cluster of its own.
SCALE_SIZES ?= 1000 10000 50000

bench: ## Benchmarks on a fresh local cluster (admission beside an out-of-process floor webhook; a new namespace at 1,000 and 10,000), the scale curve (SCALE_SIZES namespaces, each on a fresh cluster, beside a raw client), then Pod start on a node; prints tables, writes .local/bench/*.json
	$(CARGO) build --release --bin regcred --benches
	$(MAKE) cluster-up
	status=0; export KUBECONFIG=$(LOCAL_KUBECONFIG); for b in controller admission images webhook preflight identity namespaces credential_provider; do $(CARGO) bench --bench $$b || status=$$?; done; $(MAKE) cluster-down; \
	  for n in $(SCALE_SIZES); do $(MAKE) cluster-up && SCALE_NAMESPACES=$$n SCALE_THROWAWAY_CLUSTER=1 $(CARGO) bench --bench scale || status=$$?; $(MAKE) cluster-down; done; \
	  SCALE_CURVE="$(SCALE_SIZES)" $(CARGO) bench --bench scale || status=$$?; \
	  $(MAKE) tools; REGCRED_IMAGE_ARCHIVE=$$(tools/image/build.sh) && export REGCRED_IMAGE_ARCHIVE && \
	  $(MAKE) cluster-up && tools/node-up.sh && $(CARGO) bench --bench node || status=1; $(MAKE) cluster-down; exit $$status

demo: ## regcred at work on a local cluster of its own with a node and a registry (builds and installs what it needs; root)
	$(MAKE) tools
	tools/demo.sh

demo-down: ## Stop the demo, its cluster and its node
	tools/demo-down.sh

soak: ## Faults on a fresh local cluster (SIGKILLs mid-sync, apiserver restart, leader and webhook kills, token outage), then bounded fuzzing (FUZZ_SECONDS each, default 60); about 15 minutes
	$(CARGO) build --release --bin regcred --benches
	$(MAKE) tools
	$(MAKE) cluster-up
	status=0; export KUBECONFIG=$(LOCAL_KUBECONFIG); $(CARGO) bench --bench soak || status=$$?; $(MAKE) cluster-down; \
	  FUZZ_SECONDS=$${FUZZ_SECONDS:-60} $(CARGO) bench --bench fuzz || status=$$?; exit $$status

test: ## Everything: lint, generated files, the docs site, unit tests, integration tests on a fresh local cluster, then end-to-end tests on a fresh cluster with a node
	$(MAKE) lint
	$(MAKE) check-generated
	$(MAKE) docs-build
	$(MAKE) alerts
	$(MAKE) unit
	$(CARGO) build --bin regcred --tests
	$(MAKE) tools
	tools/image/build.sh >/dev/null
	export REGCRED_LOCAL=$(TEST_LOCAL) KUBECONFIG=$(TEST_LOCAL)/kubeconfig; status=0; \
	  tools/cluster-down.sh >/dev/null; tools/cluster-up.sh || exit 1; \
	  $(MAKE) integration || status=$$?; tools/cluster-down.sh || status=1; \
	  tools/cluster-up.sh && tools/node-up.sh && $(MAKE) e2e || status=1; tools/cluster-down.sh || status=1; exit $$status
