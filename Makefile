# The developer entry points. `make demo` and `make test` are the README's quick start.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MEMBERS := core sdk $(wildcard plugins/*)
# Re-run the install only when a member's packaging or a pin changes (keeps `make setup` quick).
STAMP := $(VENV)/.installed
STAMP_INPUTS := requirements/constraints.txt requirements/dev.txt requirements/bench.txt $(foreach m,$(MEMBERS),$(m)/pyproject.toml)
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck pytest test-browser bench clean

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

pytest: setup test-browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian's chromium for the HTML report's browser test (tests/test_report_chromium.py), installed
# when missing and this user can (root or passwordless sudo, with apt-get). Never fails: without
# a browser that test is skipped and says why.
test-browser:
	@for name in chromium chromium-browser google-chrome; do \
		command -v $$name >/dev/null 2>&1 && exit 0; \
	done; \
	skip="the report's browser test will be skipped"; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "make: chromium is missing and there is no apt-get; $$skip"; exit 0; \
	elif [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "make: chromium is missing and installing it needs root; $$skip"; exit 0; fi; \
	echo "make: installing Debian's chromium for the report's browser test"; \
	install="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium"; \
	$$install || { $$sudo apt-get update && $$install; } \
		|| echo "make: chromium could not be installed; $$skip"

test: lint typecheck pytest

bench: setup
	@for script in bench/bench_*.py; do $(BIN)/python "$$script" || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
