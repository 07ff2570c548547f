# Stampede: two commands on a fresh machine.
#   make demo   set everything up and run the nightly DAG once against the bundled demo target
#   make test   set everything up and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
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

.PHONY: demo test bench airflow setup lock clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(PY) -m uv pip install --quiet --compile-bytecode --python $(PY) -r requirements.txt
	$(PY) -m uv pip install --quiet --python $(PY) --no-deps -e .
	touch $@

$(AIRFLOW_HOME)/airflow.db: $(VENV)/.installed
	mkdir -p $(AIRFLOW_HOME)
	$(VENV)/bin/airflow db migrate > $(BUILD)/airflow-migrate.log 2>&1 || (tail -20 $(BUILD)/airflow-migrate.log; exit 1)

setup: $(VENV)/.installed $(AIRFLOW_HOME)/airflow.db

demo: setup
	$(PY) -m stampede.demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m stampede.bench

airflow: setup
	$(VENV)/bin/airflow standalone

lock: $(VENV)/.installed
	$(PY) -m uv pip compile requirements.in -o requirements.txt --python-version 3.11 -q

clean:
	rm -rf $(BUILD) reports
