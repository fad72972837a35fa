# Rebound: every command a person or CI runs. `make run` and `make test` install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)
TANSU := .local/bin/tansu
PYTEST_ARGS ?=
# Tests mostly wait on the broker and PostgreSQL, so more workers than cores pay off; each
# worker starts its own PostgreSQL cluster and broker.
TEST_WORKERS ?= 4

.PHONY: run test lint format bench drill demo dlq import deps venv postgres tansu chromium smtp-sink schemas clean

run: deps ## Start PostgreSQL, Tansu, the mail catcher and the three services (Ctrl-C stops)
	$(PY) deploy/local/devstack.py run

test: deps chromium ## The whole suite against real PostgreSQL, broker, SMTP server and browser
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: venv ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services rebound tests deploy

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: deps smtp-sink ## Every hot path beside its naive peer, in the same run (see BENCHMARKS.md)
	$(PY) -m tests.bench $(BENCH_ARGS)

drill: deps ## Two of each service under kill -9 and a PostgreSQL outage; counts lost and duplicate mail
	$(PY) deploy/local/drill.py $(DRILL_ARGS)

demo: venv ## Post a signed Shopify checkout to the running `make run`
	$(PY) deploy/local/demo.py

dlq: venv ## List the dead letters of TOPIC (make dlq TOPIC=shop.events); replay: python -m rebound dlq replay TOPIC
	$(PY) -m rebound dlq list $(TOPIC)

import: venv ## Import a shop's order history: make import FILE=orders.csv SHOP=shop-1 (docs/import.md)
	$(PY) -m rebound import orders $(FILE) --shop $(SHOP)

schemas: venv ## Regenerate the published JSON Schemas from shared/events.py
	$(PY) -m shared.schemas

deps: venv postgres tansu

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -c 'import pathlib, site; pathlib.Path(site.getsitepackages()[0], "rebound.pth").write_text("$(CURDIR)\n")'
	rm -f $(VENV)/.installed-* && touch $@

postgres: ## The PostgreSQL server binaries (installed from the system's packages if absent)
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (echo "installing postgresql" && apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)

tansu: $(TANSU)

chromium: ## Headless Chromium for the dashboard's browser test (from the system's packages if absent)
	@command -v chromium >/dev/null || \
	  (echo "installing chromium" && apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null)

smtp-sink: ## Postfix's smtp-sink for the mail bench (installed from the system's packages if absent)
	@command -v smtp-sink >/dev/null || ls /usr/sbin/smtp-sink >/dev/null 2>&1 || \
	  (echo "installing postfix (for smtp-sink)" && apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix >/dev/null) || \
	  echo "smtp-sink could not be installed: the mail bench falls back to the aiosmtpd catcher"

$(TANSU): | venv
	$(PY) deploy/local/devstack.py tansu

clean: ## Remove the local database, broker binary, caught mail and logs
	rm -rf .local
