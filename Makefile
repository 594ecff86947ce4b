# The commands of the README: `make demo`, `make test` and `make test-fast` (the tests that
# start no server or other process). All build the virtualenv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_ARGS ?=
PYTEST_ARGS ?=
CHAOS_ARGS ?=
BENCH_ARGS ?=

.PHONY: install lock lint test test-fast test-stress demo worker emulator bench bench-backends bench-anchor bench-gateway chaos clean

install: $(STAMP)

# What CI and `make install` get is what was tested: the exact versions in requirements.lock
# (pyproject.toml keeps the ranges library users install from). `make lock` renews it.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

lock: $(STAMP)
	$(PY) -m pip install --quiet pip-tools
	$(PY) -m piptools compile --quiet --all-extras --strip-extras --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

# Three pytest processes (pytest-xdist), a test module to each at a time: most tests wait on
# a server, so three share two cores well. TEST_PROCESSES=0 runs it in this process alone.
TEST_PROCESSES ?= 3
test: $(STAMP)
	$(PY) -m pytest -m "not stress" -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

# ruff (pyflakes, pycodestyle, bugbear, import order, pyupgrade) over everything, and mypy over
# the product's code (pyproject.toml); both without blanket ignores. CI runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Load tests of many minutes each (a thread with 3,000 waiting runs): run before a release.
test-stress: $(STAMP)
	$(PY) -m pytest -m stress $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not server" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m durable_assistants.devstack.demo $(DEMO_ARGS)

worker: $(STAMP)
	$(PY) worker.py

emulator: $(STAMP)
	$(PY) -m durable_assistants.emulator

bench: $(STAMP)
	$(PY) bench/emulator_load.py

bench-backends: $(STAMP)
	$(PY) bench/backends.py

# The performance figures against their anchors (a bare hop, the SDK's own loops, a bare
# workflow), interleaved and repeated: docs/benchmarks.md. BENCH_ARGS="--repeats 1 --quick", "--thousand".
bench-anchor: $(STAMP)
	$(PY) bench/anchor.py $(BENCH_ARGS)

# What the HTTP gateway adds to an enqueue, against the Python client: docs/benchmarks.md.
bench-gateway: $(STAMP)
	$(PY) bench/gateway.py $(BENCH_ARGS)

chaos: $(STAMP)
	$(PY) bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info .local
