# coba-rl developer commands. Everything runs inside .venv, built on first use.
#   make demo   build .venv, install, run the main job
#   make test   build .venv, install with test extras, run lint, types and the full suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.DEFAULT_GOAL := help
.PHONY: help demo test test-all lint typecheck pytest docs bench bench-docs stress clean

help:
	@echo "make demo   - install; simulate uniform/Knapsack-RL/CoBA-RL, then the quick benchmark"
	@echo "make test   - install test extras; run ruff, mypy --strict and pyright (no plugins),"
	@echo "              pytest (with doctests) and the docs build"
	@echo "make docs   - build the documentation site (mkdocs build --strict) into site/"
	@echo "make test-all - make test, then the whole suite again in .venv-all with the"
	@echo "               [trl,verl,experiment] extras (real TRL and verl on CPU, and a smoke"
	@echo "               run of coba-rl experiment: the integration tests run there)"
	@echo "make bench  - the full benchmark (more repetitions)"
	@echo "make bench-docs - the full benchmark, then refresh docs/performance.md and its plot"
	@echo "make stress - the long reliability runs: fuzzing (hypothesis profile 'long'), 5000-step"
	@echo "              stress runs, repeated kill -9 during saves (see docs/reliability.md)"
	@echo "make clean  - remove .venv and build artefacts"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[test,dev,docs,plot]'
	@touch $@

$(VENV)/.installed-plot: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[plot]'
	@touch $@

demo: $(VENV)/.installed-base $(VENV)/.installed-plot
	$(BIN)/coba-rl simulate --out results/sim
	$(BIN)/coba-rl bench --quick --out results/bench
	@echo ""
	@echo "Simulation (synthetic): table results/sim/results.md, plots results/sim/sim_*.png"
	@echo "Benchmark:              table results/bench/results.md"

bench: $(VENV)/.installed-base $(VENV)/.installed-plot
	$(BIN)/coba-rl bench

bench-docs: $(VENV)/.installed-base $(VENV)/.installed-plot
	$(BIN)/coba-rl bench --update-docs docs/performance.md

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

# mypy --strict (no plugins) on the package and on tests/typing, the README and docs
# usage; pyright (strict) on tests/typing, as a user's editor would see it.
typecheck: $(VENV)/.installed-test
	$(BIN)/mypy src tests/typing
	$(BIN)/pyright --project . --pythonpath $(BIN)/python

pytest: $(VENV)/.installed-test
	$(BIN)/pytest

docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: lint typecheck pytest docs

# The framework extras live in their own venv so that .venv keeps the core's numpy/scipy.
# torch is pinned in pyproject (==2.13.0) to the CPU build; HF_HUB_OFFLINE: nothing is
# downloaded from a model hub (the tests build their tiny models and tokenizers).
VENV_ALL := .venv-all
BIN_ALL  := $(VENV_ALL)/bin

$(BIN_ALL)/python:
	$(PYTHON) -m venv $(VENV_ALL)
	$(BIN_ALL)/python -m pip install --quiet --upgrade pip

$(VENV_ALL)/.installed-all: pyproject.toml | $(BIN_ALL)/python
	$(BIN_ALL)/python -m pip install --quiet -e '.[test,dev,trl,verl,experiment]'
	@touch $@

# The suite in .venv-all includes tests/test_experiment.py, whose smoke test runs
# `coba-rl experiment --smoke` (the whole GRPO loop on a tiny transformer, about a minute).
test-all: test $(VENV_ALL)/.installed-all
	HF_HUB_OFFLINE=1 $(BIN_ALL)/pytest

clean:
	rm -rf $(VENV) $(VENV_ALL) build dist site .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The long versions of the reliability tests (CI runs the short ones inside `make test`).
RELIABILITY := tests/test_fuzz.py tests/test_stress.py tests/test_persistence_faults.py \
	tests/test_determinism.py tests/test_memory.py
stress: $(VENV)/.installed-test
	HYPOTHESIS_PROFILE=long STRESS_STEPS=5000 STRESS_SEEDS=3 CRASH_ROUNDS=5 \
		$(BIN)/pytest -p no:cacheprovider -q $(RELIABILITY) --hypothesis-show-statistics
