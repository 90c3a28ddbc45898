# The two commands a newcomer runs: `make run` and `make test`.
# Both bootstrap .venv from nothing; the stamp file re-installs when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= homeserver.yaml
# The real Synapse the federation interoperability tests run beside Roost.
SYNAPSE_VERSION := 1.163.2
SYNAPSE_STAMP := .venv-synapse/.installed
# matrix-js-sdk and its Rust crypto for the real-client tests (tests/clients), pinned in
# tests/js/package-lock.json; without npm those tests skip themselves.
JS_STAMP := tests/js/node_modules/.installed
TESTS ?= tests

.PHONY: run test lint bench stress clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(SYNAPSE_STAMP): Makefile
	test -x .venv-synapse/bin/python || $(PYTHON) -m venv .venv-synapse
	.venv-synapse/bin/pip install --quiet "matrix-synapse[postgres]==$(SYNAPSE_VERSION)"
	touch $(SYNAPSE_STAMP)

$(JS_STAMP): tests/js/package-lock.json
	if command -v npm >/dev/null; then \
		cd tests/js && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the matrix-js-sdk tests (tests/clients) will be skipped"; fi

run: $(STAMP)
	$(BIN)/roost run -c $(CONFIG)

test: $(STAMP) $(SYNAPSE_STAMP) $(JS_STAMP)
	$(BIN)/python -m twisted.trial -j2 $(TESTS)

# Speed and memory workloads (minutes; needs PostgreSQL on 127.0.0.1:5432). Figures: docs/benchmarks.md
bench: $(STAMP)
	$(BIN)/python bench/send_messages.py
	$(BIN)/python bench/sync_fanout.py
	$(BIN)/python bench/ws_fanout.py
	$(BIN)/python bench/memory.py

# The /sync concurrency stress test on random seeds, longer than CI's fixed ones:
# make stress STRESS_ROUNDS=10 STRESS_OPS=60 (STRESS_SEED=123 repeats a failing seed).
STRESS_SEED ?= random
STRESS_ROUNDS ?= 5
STRESS_OPS ?= 50
stress: $(STAMP)
	ROOST_STRESS_SEED=$(STRESS_SEED) ROOST_STRESS_ROUNDS=$(STRESS_ROUNDS) \
	ROOST_STRESS_OPS=$(STRESS_OPS) $(BIN)/python -m twisted.trial tests.client_api.test_sync_stress

lint: $(STAMP)
	$(BIN)/ruff check roost tests bench twisted

clean-venv:
	rm -rf $(VENV)
