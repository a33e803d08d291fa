# The two commands: `make demo` and `make test`. Both create .venv and install into it.
# `make check` is the fast inner loop: lint, types and the unit tests not marked slow.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The demo needs patchbay and the extras of what it runs (DuckDB for the aggregation, openpyxl
# for its XLSX report, ADBC for SQLite reads); the test tools (mypy, pandas, ...) and every
# driver (`dev` pulls `all`) take most of the install time, so they have a stamp of their own.
DEMO_EXTRAS := aggregation,xlsx,sqlite,salesforce
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test check lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[$(DEMO_EXTRAS)]'
	touch $(STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(DEV_STAMP)

# Real third-party Salesforce clients (jsforce, the Salesforce CLI) for the contract tests.
NODE_CLIENTS := tests/contract/node
NODE_STAMP := $(NODE_CLIENTS)/node_modules/.installed

$(NODE_STAMP): $(NODE_CLIENTS)/package-lock.json
	cd $(NODE_CLIENTS) && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

demo: $(STAMP)
	$(BIN)/patchbay demo

test: $(DEV_STAMP) $(NODE_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

check: lint
	$(BIN)/pytest -q -m "not slow" tests/unit

bench: $(DEV_STAMP)
	$(BIN)/python bench/migration.py
	$(BIN)/python bench/partitioned.py
	$(BIN)/python bench/broadcast.py
	$(BIN)/python bench/aggregation.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/match.py
	$(BIN)/python bench/correlation.py

clean:
	rm -rf $(VENV) .patchbay demo-output
