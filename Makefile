# The two commands of the README: `make demo` and `make test`. Each creates .venv if missing.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pgps-installed
CORES ?= 2

.PHONY: demo test lint venv clean gpu-check

venv: $(STAMP)

# Reinstall when the dependencies change. pip's notes about the machine's local index
# ("Location ... is ignored") are filtered; errors still fail the build (pipefail).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pgps and its pinned dependencies into $(VENV) (first time: a few minutes)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[test]" 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

# On a CUDA machine: every PGPS trainer through every stage of a realistic plan (README: GPU acceptance run).
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint --configfile config.yaml

clean:
	rm -rf results .snakemake
