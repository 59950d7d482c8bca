# One entry point for the checks CI runs. `make check` = format check, lint, types, layer rules.
PY ?= .venv/bin/python
SRC = fluxo fluxo_core nodered_semantics service_runtime services translators engines tests bench

.PHONY: check lint format types layers test

check: lint types layers

lint:
	$(PY) -m ruff format --check $(SRC)
	$(PY) -m ruff check $(SRC)

format:
	$(PY) -m ruff format $(SRC)
	$(PY) -m ruff check --fix $(SRC)

types:
	$(PY) -m mypy

layers:
	.venv/bin/lint-imports

test:
	$(PY) -m pytest
