# One task list for users, hooks and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080
PYTEST_ARGS ?=

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@echo ">> creating $(VENV) and installing the project (first run only, ~2 min)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv with the project and its dev tools (pinned by requirements.lock)

run: $(STAMP) ## train, evaluate, deploy locally, then serve on 127.0.0.1:$(PORT) (Ctrl-C stops)
	$(BIN)/python pipeline.py run --serve --port $(PORT)

serve: $(STAMP) ## serve the model the last local run deployed
	$(BIN)/python pipeline.py serve --port $(PORT)

compile: $(STAMP) ## write pipeline.yaml (and the monitoring pipeline's YAML)
	$(BIN)/python pipeline.py compile

lint: $(STAMP) ## ruff format check, ruff lint, mypy
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP) ## apply ruff format and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(STAMP) lint ## lint, then the whole offline test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lock: ## regenerate requirements.lock from a fresh venv
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Exact versions of everything installed, runtime and dev (pip constraints file)."; \
	  echo "# Regenerate: make lock  (pip freeze of a fresh venv with .[dev])"; \
	  .lock-venv/bin/python -m pip freeze | grep -vE '^-e|kfp-sklearn-kserve'; } > requirements.lock
	rm -rf .lock-venv

clean: ## remove local run outputs (keeps .venv)
	rm -rf local_outputs

.PHONY: help install run serve compile lint format test lock clean
