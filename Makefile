# The two README commands: `make run` and `make test`. Both set up what they need first.
SHELL := /bin/bash
BIN := .venv/bin
CONFIG ?= bench.toml

.PHONY: setup run test lint bench clean

setup:
	@scripts/setup.sh

# The default suite on the local provider, then the report; ends with the report's path.
run: setup
	$(BIN)/sandbox-bench run --config $(CONFIG)
	$(BIN)/sandbox-bench report latest

test:
	@scripts/setup.sh --system-test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# Most tests wait on sandboxes, emulators and subprocesses: three workers, one file each
	# (a module's fixtures are made once); the timing tests then run alone.
	$(BIN)/pytest -n 3 --dist loadfile -m "not live and not serial"
	$(BIN)/pytest -m "serial and not live"

# Our own speed goals (pytest-benchmark); figures are quoted in the README.
bench: setup
	$(BIN)/pytest benchmarks --benchmark-only -o addopts="" -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache .benchmarks test-artifacts
