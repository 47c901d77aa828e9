# Two entry points: `make run` (the product on real Kafka + PostgreSQL, loaded with the
# Humberside sample) and `make test` (the whole suite). Both call `make install` first.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-faults lint typecheck down status bench clean

install: $(STAMP)

$(STAMP): pyproject.toml web/package-lock.json
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	bash infra/system-deps.sh
	cd web && npm ci --no-audit --no-fund --silent
	touch $(STAMP)

run: install
	LPT_DEMO=1 $(BIN)/lpt up --import-sample

down: install
	$(BIN)/lpt down

status: install
	$(BIN)/lpt status

test: install
	bash infra/system-deps.sh --test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	bash infra/run-tests.sh

# Only the fault tests (also part of `make test`): they start a Kafka broker and a PostgreSQL
# cluster of their own under .lpt/faults (ports 29192/29193, 25532) and restart them.
test-faults: install
	bash infra/run-tests.sh -m faults

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/ingest_rates.py

clean:
	-$(BIN)/lpt down
	rm -rf .lpt
