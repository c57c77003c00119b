# `make run` and `make test` work on a fresh machine: they build .venv first.
PY      := .venv/bin/python
RUN_OK  := .venv/.run-installed
DEV_OK  := .venv/.dev-installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test test-fast test-browser check lint bench soak clean engine

$(PY):
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip

$(RUN_OK): requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(DEV_OK): requirements.txt requirements-dev.txt $(RUN_OK)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# Bytecode written ahead: where PYTHONDONTWRITEBYTECODE is set, every process (each
# test's engine, cockpit or CLI subprocess) would otherwise compile the project again.
# Python reads the .pyc files whatever that variable says; up-to-date ones are skipped.
BYTECODE := $(PY) -m compileall -q -j 0 app.py pages cockpit engine store bench tests >/dev/null

## Start the engine and the cockpit on http://127.0.0.1:8501 (Ctrl-C stops both).
run: $(RUN_OK)
	$(BYTECODE)
	$(PY) -m engine up

## Headless engine only, for a marathon.
engine: $(RUN_OK)
	$(BYTECODE)
	$(PY) -m engine run

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "browser tests need Debian's chromium: sudo apt-get install chromium"; exit 1; fi

# Unit and integration tests on two workers (pytest-xdist), a test file per worker at
# a time so a file's shared fixtures are built once.
FAST_TESTS := -m "not browser and not slow" -n 2 --dist loadfile

## Unit and integration tests, then the slow ones (a local Ray cluster), then the browser tests.
test: $(DEV_OK) $(CHROMIUM)
	$(BYTECODE)
	$(PY) -m pytest $(FAST_TESTS)
	$(PY) -m pytest -m "slow and not browser"
	COCKPIT_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -m browser -p no:randomly

## Unit and integration tests only.
test-fast: $(DEV_OK)
	$(BYTECODE)
	$(PY) -m pytest $(FAST_TESTS)

lint: $(DEV_OK)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

## Everything CI runs, plus lint and types.
check: lint test

bench: $(DEV_OK)
	$(BYTECODE)
	$(PY) bench/cycle.py
	$(PY) bench/oms.py
	$(PY) bench/estop.py
	$(PY) bench/model.py
	$(PY) bench/ui.py
	$(PY) bench/start.py
	$(PY) bench/audit.py

## The marathon soak: 60 minutes by default (MINUTES=10 for a shorter one).
soak: $(DEV_OK)
	$(BYTECODE)
	$(PY) bench/soak.py --minutes $(or $(MINUTES),60)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
