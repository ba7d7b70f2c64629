# tradevest-django developer commands. Needs only Python 3.10+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help demo run test lint typecheck mutate test-oldest test-newest docs clean

help:
	@echo "make demo          run the example against the embedded fake Tradevest server"
	@echo "make run           serve the example project on http://127.0.0.1:8000/ (fake Tradevest)"
	@echo "make test          lint, type-check and run the whole test suite"
	@echo "make test-oldest   run the test suite on Django 5.2 LTS and Python 3.10 (nox)"
	@echo "make test-newest   mypy and the test suite on Django 6.1 and Python 3.13 (nox)"
	@echo "make docs          build the documentation site (warnings are errors)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# The demo needs the example project's dependencies only, not the test toolchain.
$(VENV)/.installed-demo: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	@touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/python example_project/demo.py $(ARGS)

run: $(VENV)/.installed-demo
	$(BIN)/python example_project/demo.py serve

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The two ends of the support matrix, each in its own nox virtualenv (see noxfile.py).
test-oldest: $(VENV)/.installed-dev
	$(BIN)/nox --session oldest -- $(PYTEST_ARGS)

test-newest: $(VENV)/.installed-dev
	$(BIN)/nox --session newest -- $(PYTEST_ARGS)

docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .nox build dist site *.egg-info .mypy_cache .ruff_cache .pytest_cache

# Benchmark (bench/, docs/benchmarks.md). Not part of `make test`. The peers are installed into
# this venv only: they are never dependencies of the package.
.PHONY: bench bench-smoke

$(VENV)/.installed-bench: $(VENV)/.installed-test Makefile
	$(BIN)/python -m pip install --quiet authlib requests-oauthlib requests-auth httpx-auth
	@touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py $(ARGS)

bench-smoke: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py --smoke $(ARGS)

# Mutation testing of the token path (configuration: [tool.mutmut] in pyproject.toml). Not part
# of `make test`: about 20 minutes on 2 cores. mypy (on PATH) first discards the mutants that break
# the types; the report lands in build/mutation.md (docs/reliability.md, "Mutation score").
mutate: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet "mutmut>=3.8,<4"
	rm -rf mutants
	mkdir -p build
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mutmut run || true
	$(BIN)/python tools/mutation_report.py > build/mutation.md
	@cat build/mutation.md
