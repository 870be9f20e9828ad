# Each target sets up what it needs (.venv, the CPU torch wheel first, then the package) and is idempotent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: setup test demo bench lint mutation clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is installed first and pinned, so pip never resolves a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q tests

demo: $(STAMP)
	$(BIN)/sadetr demo --out runs/demo

# The real QVHighlights val annotations (beside the checkout in development) time the evaluation.
VAL_GT := $(wildcard ../shared/data/qvhighlights/highlight_val_release.jsonl)

bench: $(STAMP)
	$(BIN)/sadetr bench --out runs/bench $(if $(VAL_GT),--gt $(VAL_GT))

# Mutation score of the core math (tools/mutation.py; CPU-heavy, not part of CI): every mutation once
# with ../shared/data (when present) and once as a checkout without it.
MUTATION_JOBS ?= 2
mutation: $(STAMP)
	$(BIN)/python tools/mutation.py --jobs $(MUTATION_JOBS) --min-score 95
	$(BIN)/python tools/mutation.py --jobs $(MUTATION_JOBS) --no-shared-data --min-score 95

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
