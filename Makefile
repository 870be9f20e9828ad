# Each target sets up what it needs (.venv, the CPU torch wheel first, then the package) and is idempotent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: setup test demo bench lint clean browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is installed first and pinned, so pip never resolves a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Debian's Chromium for the browser test (apt-get when /usr/bin/chromium is missing; fails if it cannot).
browser:
	scripts/ensure_chromium.sh

test: $(STAMP) browser
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q tests

demo: $(STAMP)
	$(BIN)/sadetr demo --out runs/demo

# The real QVHighlights val annotations (beside the checkout in development) time the evaluation.
VAL_GT := $(wildcard ../shared/data/qvhighlights/highlight_val_release.jsonl)

bench: $(STAMP)
	$(BIN)/sadetr bench --out runs/bench $(if $(VAL_GT),--gt $(VAL_GT))

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
