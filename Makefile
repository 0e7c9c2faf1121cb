# cir-companion: the README's two commands are `make reproduce` and `make test`.
#
#   make venv       create .venv (if missing) and install pinned dependencies + cirlib (editable)
#   make reproduce  run every notebook with papermill on the tiny profile -> figures/, data/results/
#   make test       run the whole pytest suite
#   make bench      run the performance scripts in benchmarks/
#   make workshop   write the exercise versions of the notebooks (solutions emptied) to workshop/
#   make lint       ruff check + ruff format --check
#
# `venv` is idempotent: it leaves a stamp keyed on the hash of pyproject.toml inside .venv, so a
# rerun with unchanged pins does nothing, and editing the pins reinstalls.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_FLAGS := $(if $(CI),--progress-bar off,)
# torch and torchvision are installed first, on their own, with the pins read from pyproject.toml
# (one source of truth), so that the resolver never picks another torch build for them.
TORCH_PINS := $(shell grep -oE '"torch(vision)?==[^"]+"' pyproject.toml | tr -d '"')
PYPROJECT_HASH := $(shell sha256sum pyproject.toml | cut -c1-16)
STAMP := $(VENV)/.cirlib-installed-$(PYPROJECT_HASH)

PYTEST_ARGS ?=
REPRODUCE_ARGS ?=

.PHONY: help venv reproduce test bench lint workshop

help:
	@echo "make reproduce   run all notebooks (tiny profile) -> figures/ and data/results/"
	@echo "make test        run the test suite (PYTEST_ARGS=... to pass options)"
	@echo "make bench       run benchmarks/*.py"
	@echo "make workshop    write the exercise versions of the notebooks to workshop/"
	@echo "make lint        ruff check and ruff format --check"
	@echo "make venv        create .venv and install the pinned dependencies (the other targets run it first)"

venv: $(STAMP)

$(STAMP):
	@test -n "$(TORCH_PINS)" || { echo "Makefile: no torch pins found in pyproject.toml" >&2; exit 1; }
	@if [ ! -x "$(PY)" ]; then \
		$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
			|| { echo "Makefile: $(PYTHON) is $$($(PYTHON) --version 2>&1); cirlib needs Python >= 3.11 (make venv PYTHON=python3.11)" >&2; exit 1; }; \
		echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); \
	fi
	$(PIP) install $(PIP_FLAGS) --upgrade pip
	$(PIP) install $(PIP_FLAGS) $(TORCH_PINS)
	$(PIP) install $(PIP_FLAGS) -e '.[dev]'
	@rm -f $(VENV)/.cirlib-installed-*
	@touch $@
	@echo "$(VENV) is ready (stamp $(notdir $@))"

reproduce: venv
	$(PY) -m cirlib.reproduce $(REPRODUCE_ARGS)

test: venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: venv
	@shopt -s nullglob; scripts=(benchmarks/*.py); \
	if [ $${#scripts[@]} -eq 0 ]; then echo "no benchmarks in benchmarks/"; exit 0; fi; \
	for script in "$${scripts[@]}"; do echo "== $$script"; $(PY) "$$script"; done

workshop: venv
	$(PY) -m cirlib.workshop

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
