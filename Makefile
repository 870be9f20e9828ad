# Each target sets up what it needs (.venv, the CPU torch wheel first, then the package) and is idempotent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
# The exact versions CI installs; pyproject.toml keeps ranges for users. `make lock` rewrites it.
LOCK := requirements/ci-constraints.txt

.PHONY: setup test check demo bench lint mutation clean browser lock

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade -c $(LOCK) pip

# torch is installed first and pinned, so pip never resolves a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

# After a dependency change: install the new ranges, then record the resolved versions.
lock: $(BIN)/python
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev]"
	{ head -2 $(LOCK); $(BIN)/pip freeze --all --exclude-editable | grep -v '^sadetr' | sed 's/+cpu$$//'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

setup: $(STAMP)

# Debian's Chromium for the browser test (apt-get when /usr/bin/chromium is missing; fails if it cannot).
browser:
	scripts/ensure_chromium.sh

# The whole suite (CI's command): linters, every test and every docstring example.
test: $(STAMP) browser lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q --doctest-modules tests src/sadetr

# The fast lane for every edit (about two minutes on 2 cores): linters, the hand-computed math
# (tests marked `check`, tests/conftest.py) and the docstring examples; no training, no browser.
check: $(STAMP) lint
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -n 2 -q -m check --doctest-modules tests src/sadetr; status=$$?; \
	echo "make check: tests took $$(( $$(date +%s) - start )) s"; exit $$status

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

# ruff, mypy, and the floors of docs/CONTRACTS.md (.importlinter)
lint: $(STAMP)
	$(BIN)/ruff check src tests tools
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
