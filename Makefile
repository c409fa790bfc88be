# The developer entry points. `make demo` and `make test` are the README's quick start.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MEMBERS := core sdk $(wildcard plugins/*)
# Re-run the install only when a member's packaging or a pin changes (keeps `make setup` quick).
STAMP := $(VENV)/.installed
STAMP_INPUTS := requirements/constraints.txt requirements/dev.txt $(foreach m,$(MEMBERS),$(m)/pyproject.toml)
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck pytest bench clean

setup: $(STAMP)

$(STAMP): $(STAMP_INPUTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip -c requirements/constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt \
		-r requirements/dev.txt $(foreach m,$(MEMBERS),-e ./$(m))
	$(BIN)/python tools/check_workspace.py
	@touch $(STAMP)

demo: setup
	@bash examples/demo.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy core/src sdk/src
	$(BIN)/mypy $(foreach p,$(wildcard plugins/*),$(p)/src)

pytest: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: setup
	@for script in bench/bench_*.py; do $(BIN)/python "$$script" || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
