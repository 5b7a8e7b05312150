# The two commands of the README: `make demo` and `make test`. Each creates .venv if missing.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# what make installs: every extra (pgps[all]), the test tools and the documentation tools; the stamp names them,
# so that a .venv installed with other extras is brought up to date
EXTRAS := all,test,docs
comma := ,
STAMP := $(VENV)/.pgps-installed-$(subst $(comma),-,$(EXTRAS))
CORES ?= 2
# OpenMP threads sleep when they wait instead of spinning, unless you chose otherwise: with libgomp's default
# spin-wait a 2-thread training step is several times slower whenever anything else shares the cores (every target;
# benchmarks/omp_wait.py measures it)
export OMP_WAIT_POLICY ?= passive

.PHONY: demo test test-all test-slurm lint venv clean gpu-check gpu-check-py312 study docs

venv: $(STAMP)

# Reinstall when the dependencies change. The lock, envs/constraints.txt, pins every package exactly (pyproject's
# extras state ranges). pip's notes about the machine's local index ("Location ... is ignored") are filtered;
# errors still fail the build (pipefail).
$(STAMP): pyproject.toml envs/constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pgps and its locked dependencies into $(VENV) (first time: a few minutes)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -c envs/constraints.txt -e ".[$(EXTRAS)]" 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $(STAMP)

# --rerun-incomplete: after a kill, the jobs it cut short run again (the trainers resume from their checkpoints)
demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete --configfile config.yaml

# make test: everything but the end-to-end runs marked slow, in 2 processes (one test file each, so that
# a file's fixtures are built once); make test-all adds them (another ~10 min on 2 cores)
PYTEST := $(BIN)/python -m pytest -n $(CORES) --dist loadfile
test: $(STAMP)
	$(PYTEST) -m "not slow and not slurm"

test-all: $(STAMP)
	$(PYTEST) -m "not slurm"

# The workflow on a real SLURM controller: a single-node cluster on this machine (workflow/scripts/slurm_local.sh;
# as root, it installs slurm-wlm and munge with apt when missing; skipped with one line where it cannot run). One
# process: the tests share the cluster and its 2 CPUs.
test-slurm: $(STAMP)
	$(BIN)/python -m pytest -p no:xdist tests/test_slurm.py

# The synthetic study of the article's four claims (docs/pages/explanation/study.md; its time: docs/pages/timings.md).
# The target goes first: --configfile takes every word after it (tests/test_makefile.py runs each recipe as written).
study: $(STAMP)
	$(BIN)/snakemake study --cores $(CORES) --rerun-incomplete --configfile config.yaml

# On a CUDA machine: every PGPS trainer through every stage of a realistic plan (docs/pages/how-to/nnunet.md: GPU acceptance run).
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

# gpu_check's CPU mode as a bare GPU machine runs it: Python 3.12 (no distutils), the source tree on PYTHONPATH, and
# an environment of its own that holds torch, numpy, the wheels of benchmarks/gpu_wheels.txt and the packages of the
# machine's image that they require (benchmarks/gpu_check_requirements.py), nothing else; setuptools, whose shim would
# supply distutils, is removed. Not part of make test: torch's CUDA wheels make it ~5.5 GB (about a minute from PyPI).
PYTHON312 ?= python3.12
GPU_VENV := .venv-gpu-check
GPU_PIP := $(GPU_VENV)/bin/python -m pip install -q
HIDE_PIP_NOTES := { grep -v -e "is ignored: it is neither" -e "dependency resolver does not" -e "which is not installed" || true; }
gpu-check-py312:
	@test -x $(GPU_VENV)/bin/python || PYENV_VERSION=$${PYENV_VERSION:-3.12.1} $(PYTHON312) -m venv $(GPU_VENV)
	@$(GPU_VENV)/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 12), f"$(GPU_VENV) is Python {sys.version}"'
	$(GPU_PIP) torch==2.14.1 torchvision==0.29.1 numpy packaging 2>&1 | $(HIDE_PIP_NOTES)
	$(GPU_PIP) --no-deps -r benchmarks/gpu_wheels.txt 2>&1 | $(HIDE_PIP_NOTES)
	$(GPU_VENV)/bin/python benchmarks/gpu_check_requirements.py > $(GPU_VENV)/image-requirements.txt
	$(GPU_PIP) torch==2.14.1 torchvision==0.29.1 -r $(GPU_VENV)/image-requirements.txt 2>&1 | $(HIDE_PIP_NOTES)
	$(GPU_VENV)/bin/python -m pip uninstall -y -q setuptools 2>&1 | { grep -v "not installed" || true; }
	@! $(GPU_VENV)/bin/python -c 'import distutils' 2>/dev/null || { echo "distutils is importable in $(GPU_VENV)"; exit 1; }
	PYTHONPATH=. $(GPU_VENV)/bin/python benchmarks/gpu_check.py --device cpu --tiny --workdir $(GPU_VENV)/work

# The documentation site into results/site (docs/mkdocs.yml; strict: a broken link fails); the generated pages
# (CLI, configuration, timings) are rewritten first.
docs: $(STAMP)
	$(BIN)/python docs/gen_pages.py
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -f docs/mkdocs.yml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint --configfile config.yaml

clean:
	rm -rf results .snakemake
