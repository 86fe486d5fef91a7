# coba-rl developer commands. Everything runs inside .venv, built on first use.
#   make demo   build .venv, install, run the main job
#   make test   build .venv, install with test extras, run lint, types and the full suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.DEFAULT_GOAL := help
.PHONY: help demo test lint typecheck pytest bench clean

help:
	@echo "make demo   - install and run the main job (paper-setting DP/heap/greedy comparison)"
	@echo "make test   - install test extras; run ruff, mypy --strict and pytest (with doctests)"
	@echo "make bench  - the full benchmark (more repetitions)"
	@echo "make clean  - remove .venv and build artefacts"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[test,dev]'
	@touch $@

demo: $(VENV)/.installed-base
	$(BIN)/coba-rl bench --quick

bench: $(VENV)/.installed-base
	$(BIN)/coba-rl bench

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy src

pytest: $(VENV)/.installed-test
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
