# Targets are named as kubebuilder projects name them. Every target that runs Python first makes
# sure the project's virtual environment exists and is up to date, so each works on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FILES ?= examples/

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install modelyard with its test and lint tools.

.PHONY: render
render: $(STAMP) ## Main job: print what the operator makes of FILES (default examples/), offline.
	$(BIN)/modelyard render -f $(FILES)

.PHONY: run
run: $(STAMP) ## Run the operator against the cluster of your current kubeconfig context.
	$(BIN)/modelyard run $(if $(NAMESPACE),--namespace $(NAMESPACE)) $(if $(CONFIG),--config $(CONFIG))

.PHONY: crds
crds: $(STAMP) ## Regenerate crds/ from the API models.
	$(BIN)/python -m modelyard crds --output crds

.PHONY: lint
lint: $(STAMP) ## ruff, mypy on the package, import-linter contracts for the layers.
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: test
test: lint ## Lint, then run every test.
	$(BIN)/python -m pytest

.PHONY: fmt
fmt: $(STAMP) ## Format and autofix.
	$(BIN)/ruff format operator tests
	$(BIN)/ruff check --fix operator tests
