# The two commands of the quick start (run, test) plus the few verbs people expect.
# Everything bootstraps itself: uv is installed under .volguard/ if it is not on PATH.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.volguard/tools/bin/uv)
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python

.PHONY: run test test-slow lint fmt bench down status streams env clean help tools

help:  ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(CURDIR)/.volguard/tools
	$(CURDIR)/.volguard/tools/bin/pip install --quiet uv==$(UV_VERSION)

env: $(UV)  ## create or refresh .venv from uv.lock
	$(UV) sync --frozen --all-packages

run: env  ## the whole stack: simulated market, paper broker, dashboard
	$(VENV)/bin/volguard up

down:  ## stop what `make run` started
	$(VENV)/bin/volguard down

status:  ## each process: pid, health, ready
	$(VENV)/bin/volguard status

streams:  ## stream lengths, lag, pending, DLQ
	$(VENV)/bin/volguard streams

lint: env  ## ruff, import contracts, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy libs/*/src services/*/src

fmt: env  ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

tools:  ## test-only tools: the docker compose validator for the deploy contract tests
	bash deploy/install-compose.sh

test: lint tools  ## lint, then the whole suite (bounded forms) against real Redis and Postgres
	$(VENV)/bin/pytest

# The long forms (full days, multi-day backtests, many chaos trials): tests marked `soak`, which the
# pytest addopts leave out of `make test`. When nothing is marked soak (pytest's exit 5 on collection),
# that is said out loud and passes, without a pytest run whose last line would say no test ran.
test-slow: env tools  ## the long forms: every test marked `soak`
	@if $(VENV)/bin/pytest -m soak --collect-only -q >/dev/null 2>&1; then \
		$(VENV)/bin/pytest -m soak; \
	else \
		code=$$?; \
		if [ $$code -ne 5 ]; then $(VENV)/bin/pytest -m soak --collect-only -q; exit $$code; fi; \
		echo "make test-slow: no test is marked soak yet; nothing to run"; \
	fi

bench: env  ## side-by-side benchmarks against their anchors
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:  ## remove the environment and local state
	rm -rf $(VENV) .volguard
