# The commands of the README: `make demo`, `make test` and `make test-fast` (the tests that
# start no server or other process). All build the virtualenv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install test test-fast demo worker emulator bench bench-backends clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not server" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m devstack.demo $(DEMO_ARGS)

worker: $(STAMP)
	$(PY) worker.py

emulator: $(STAMP)
	$(PY) -m emulator

bench: $(STAMP)
	$(PY) bench/emulator_load.py

bench-backends: $(STAMP)
	$(PY) bench/backends.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info .local
