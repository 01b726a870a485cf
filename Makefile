# Backstop: the two commands a newcomer needs (see README.md).
#   make scenario   - set up, then run the end-to-end crash scenario on an embedded local chain
#   make test       - set up, then run the whole test suite on Anvil and the Ganache subset on Ganache
# Both run scripts/toolchain/bootstrap.sh first, which is idempotent.
# Every chain brownie launches here listens on a free port of its own (BACKSTOP_CHAIN_PORT=<port> pins one), and
# brownie's data folder and the solc adapter are this checkout's (.venv/brownie-home, .venv/solcx): see README.md.
SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/.venv/bin:$(PATH)
export BACKSTOP_CHAIN_PORT ?= free
PYTEST_ARGS ?=

.PHONY: setup test test-serial test-anvil test-ganache slither scenario gas bench

setup:
	@bash scripts/toolchain/bootstrap.sh

# the Anvil suite in two shards, the Ganache subset and slither, two jobs at a time (scripts/run_tests.py);
# TEST_ARGS=--record rewrites tests/durations.json, the per-file times the shards are balanced on
test: setup
	python scripts/run_tests.py $(TEST_ARGS) -- $(PYTEST_ARGS)

# one job at a time, as before: the whole Anvil suite in one process, then the Ganache subset, then slither
test-serial: setup
	@$(MAKE) --no-print-directory test-anvil
	@$(MAKE) --no-print-directory test-ganache
	@$(MAKE) --no-print-directory slither

test-anvil:
	brownie test $(PYTEST_ARGS)

test-ganache:
	brownie test -m ganache --network ganache-cli $(PYTEST_ARGS)

# static analysis: fails on a High/Medium slither finding not in slither-triage.toml (scripts/slither_check.py)
slither: setup
	python scripts/slither_check.py

scenario: setup
	backstop scenario $(SCENARIO_ARGS)

gas: setup
	brownie run scripts/gas_report.py

bench: setup
	python -m benchmarks.run_all
