# evault — the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_DIR ?= .evault-local

.PHONY: run test test-slow lint typecheck unit bench bench-codec bench-crypto bench-vault clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Start the local vault (n=5, m=3, k=4) in a git-ignored directory of the checkout.
run: $(STAMP)
	$(BIN)/evault up --dir $(RUN_DIR)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The browser tests drive Debian's chromium (never a downloaded browser build).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi

unit: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest -m "not slow"

test: lint typecheck unit

test-slow: $(STAMP)
	$(BIN)/pytest -m slow -s

bench: $(STAMP)
	$(BIN)/evault bench codec
	$(BIN)/evault bench crypto
	$(BIN)/evault bench vault

bench-codec: $(STAMP)
	$(BIN)/evault bench codec

bench-crypto: $(STAMP)
	$(BIN)/evault bench crypto

# Figures 3 and 4 of the paper on a real local vault (results in bench-results/, git-ignored).
bench-vault: $(STAMP)
	$(BIN)/evault bench vault

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
