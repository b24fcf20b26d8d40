# regcred developer entry points. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
export PATH := $(CURDIR)/.local/bin:$(PATH)
# Tests find the local cluster here unless KUBECONFIG says otherwise.
LOCAL_KUBECONFIG := $(CURDIR)/.local/kubeconfig
# Integration tests share one apiserver; each runs in its own namespaces.
TEST_THREADS ?= 4

.PHONY: help build crds deploy demo demo-down soak check-generated lint unit controlplane tools cluster-up cluster-down integration test bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## Build the regcred binary (debug)
	$(CARGO) build --bin regcred

# The CRD is generated from the Rust types into crds/ (for kubectl users) and into the chart (for its template).
CRD_FILES := crds/regcred.dev_registryprofiles.yaml charts/regcred/files/crd.yaml
crds: ## Regenerate crds/ and the chart's copy from the Rust types
	$(CARGO) run --quiet --bin regcred -- crd > crds/regcred.dev_registryprofiles.yaml
	cp crds/regcred.dev_registryprofiles.yaml charts/regcred/files/crd.yaml

deploy: controlplane ## Render deploy/regcred.yaml from the chart
	tools/render-deploy.sh > deploy/regcred.yaml

check-generated: controlplane ## Fail if generated files (crds/, the chart's CRD, deploy/) are not what the sources generate
	@for f in $(CRD_FILES); do $(CARGO) run --quiet --bin regcred -- crd | diff -u $$f - \
	  || { echo "$$f is stale: run 'make crds' and commit the result" >&2; exit 1; }; done
	@tools/render-deploy.sh | diff -u deploy/regcred.yaml - \
	  || { echo "deploy/ is stale: run 'make deploy' and commit the result" >&2; exit 1; }

lint: ## cargo fmt --check and clippy with warnings denied
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

unit: ## Unit tests (no cluster needed)
	$(CARGO) test --lib --bins

controlplane: ## Build (or reuse) the local control-plane binaries and helm
	tools/controlplane/build.sh

cluster-up: ## Start the local Kubernetes control plane (.local/kubeconfig)
	tools/cluster-up.sh

tools: ## Install the Python tools the tests start (moto), pinned, outside the clone
	tools/python-tools.sh

cluster-down: ## Stop the local control plane and remove its state
	tools/cluster-down.sh

integration: ## Integration tests against the running local cluster
	KUBECONFIG=$${KUBECONFIG:-$(LOCAL_KUBECONFIG)} $(CARGO) test --test '*' -- --test-threads=$(TEST_THREADS)

bench: ## Benchmarks on a fresh local cluster (scale: 10,000 namespaces, 20 profiles); prints tables, writes .local/bench/*.json
	$(CARGO) build --release --bin regcred --benches
	$(MAKE) cluster-up
	status=0; export KUBECONFIG=$(LOCAL_KUBECONFIG); for b in controller admission webhook preflight scale; do $(CARGO) bench --bench $$b || status=$$?; done; $(MAKE) cluster-down; exit $$status

demo: ## regcred at work on the local control plane, with a local registry (builds and installs what it needs)
	$(CARGO) build --bin regcred
	$(MAKE) tools
	$(MAKE) cluster-up
	tools/demo.sh

demo-down: ## Stop the demo and the local control plane
	tools/demo-down.sh --all

soak: ## Faults on a fresh local cluster (SIGKILLs mid-sync, apiserver restart, leader and webhook kills, token outage), then bounded fuzzing (FUZZ_SECONDS each, default 60); about 15 minutes
	$(CARGO) build --release --bin regcred --benches
	$(MAKE) tools
	$(MAKE) cluster-up
	status=0; export KUBECONFIG=$(LOCAL_KUBECONFIG); $(CARGO) bench --bench soak || status=$$?; $(MAKE) cluster-down; \
	  FUZZ_SECONDS=$${FUZZ_SECONDS:-60} $(CARGO) bench --bench fuzz || status=$$?; exit $$status

test: ## Everything: lint, generated files, unit tests, then integration tests on a fresh local cluster
	$(MAKE) lint
	$(MAKE) check-generated
	$(MAKE) unit
	$(CARGO) build --bin regcred --tests
	$(MAKE) tools
	tools/demo-down.sh
	$(MAKE) cluster-up
	status=0; KUBECONFIG=$(LOCAL_KUBECONFIG) $(MAKE) integration || status=$$?; $(MAKE) cluster-down; exit $$status
