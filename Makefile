# Entry points of the bank-branch CRM. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
LOCAL_PACKAGES := libs/protos libs/platform libs/testing gateway services/customer services/interaction \
	services/opportunity services/service-ticket services/notification services/reporting
PYPROJECTS := $(foreach p,$(LOCAL_PACKAGES),$(p)/pyproject.toml)
PROTO_FILES := $(shell find protos -name '*.proto')
PYTEST_ARGS ?=

-include deploy/deploy.mk

.PHONY: help
help: ## Show this list
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# pip's notes about the machine's optional local index folders are noise; its exit status is kept (pipefail).
QUIET_PIP := { grep -v "is ignored: it is neither" || true; }

$(STAMP): constraints.txt requirements-dev.in $(PYPROJECTS) $(PROTO_FILES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q -c constraints.txt -r requirements-dev.in 2>&1 | $(QUIET_PIP)
	@$(PY) tools/gen_protos.py
	@$(PIP) install -q -c constraints.txt $(foreach p,$(LOCAL_PACKAGES),-e $(p)) 2>&1 | $(QUIET_PIP)
	@$(PY) -c "import crm_gateway, crm_customer, crm_reporting, crm_testing, nats, sqlalchemy"
	@command -v promtool >/dev/null || $(MAKE) --no-print-directory system-packages
	@touch $(STAMP)

.PHONY: system-packages
system-packages: ## Install the Debian tools the checks and benchmarks use (promtool, wrk; needs root)
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus wrk >/dev/null; \
	else echo "not root: install Debian's prometheus (promtool) and wrk packages"; fi

.PHONY: install
install: $(STAMP) ## Create .venv and install every package from the pinned constraints (idempotent)

.PHONY: protos
protos: $(STAMP) ## Regenerate Python code and type stubs from protos/
	$(PY) tools/gen_protos.py

.PHONY: protos-check
protos-check: $(STAMP) ## Fail when generated protobuf code is stale
	$(PY) tools/gen_protos.py --check

.PHONY: catalogue
catalogue: $(STAMP) ## Regenerate docs/events.md and docs/events.schema.json from protos/
	$(PY) tools/gen_event_catalogue.py

.PHONY: constraints
constraints: ## Re-resolve the pins (after changing a dependency) into constraints.txt
	rm -rf .venv-pins && $(PYTHON) -m venv .venv-pins
	.venv-pins/bin/pip install -q -r requirements-dev.in $(foreach p,$(filter-out libs/protos libs/platform libs/testing,$(LOCAL_PACKAGES)),$(p)) libs/platform libs/testing 2>/dev/null || true
	.venv-pins/bin/pip freeze --exclude-editable | grep -viE '^(crm-|-e )' > constraints.txt
	rm -rf .venv-pins

.PHONY: run
run: $(STAMP) ## Run the whole system on this machine (embedded NATS, SQLite under var/); Ctrl-C stops
	$(PY) -m crm_testing.stack

.PHONY: demo
demo: $(STAMP) ## `make run` plus the demo branches and users (password: $$CRM_DEMO_PASSWORD or Demo-Passw0rd!)
	CRM_DEMO=1 $(PY) -m crm_testing.stack

.PHONY: test
test: $(STAMP) ## Install, then run every test (PostgreSQL and NATS on 127.0.0.1 when present)
	$(PY) tools/gen_protos.py --check
	$(PY) tools/gen_event_catalogue.py --check
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: $(STAMP) ## Tests without the slow and chaos ones
	$(PY) -m pytest -m "not slow and not chaos" $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff (check and format check), mypy on libs/, package-boundary rule
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy libs/platform/src libs/testing/src
	$(PY) tools/check_boundaries.py

.PHONY: format
format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: bench
bench: $(STAMP) ## Run the benchmarks and write their figures into bench/RESULTS.md
	@command -v wrk >/dev/null || $(MAKE) --no-print-directory system-packages
	$(PY) -m bench.run

.PHONY: clean
clean: ## Remove local state (var/) and caches; keeps .venv
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
