# The two commands of the README, plus helpers. Every target reuses .venv when it is up to date.
#   make quickstart   set up, then run the embedded demonstration sweep (digits, CPU, < 5 min)
#   make test         set up, lint (ruff, mypy), then run the whole test suite (starts a local Slurm when it can)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test test-fast bench lint clean-cache

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "robustdiag needs Python >= 3.11, found " + sys.version.split()[0]'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

quickstart: setup
	ROBUSTDIAG_PROGRESS=$${ROBUSTDIAG_PROGRESS:-1} $(VENV)/bin/robustdiag -m experiment=quickstart

test: setup lint
	ROBUSTDIAG_START_SLURM=$${ROBUSTDIAG_START_SLURM:-1} $(VENV)/bin/python -m pytest -q

test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not slow and not slurm"

bench: setup
	for b in benchmarks/bench_*.py; do $(VENV)/bin/python $$b || exit 1; done

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

clean-cache:
	rm -rf .cache
