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

compile: $(STAMP) ## write pipeline.yaml, monitoring_pipeline.yaml and manifests/pipelines/ (kubectl apply -k)
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

# --- cluster ---
# Offline checks of manifests/ and the kind/minikube path (manifests/README.md). Bootstrap needs a real
# machine with docker/podman, kind or minikube, kubectl and helm; nothing here is run by `make test`.
KUBECTL ?= kubectl
SHELLCHECK ?= shellcheck
CHECKOV_VENV ?= .tools/checkov
CHECKOV_VERSION ?= 3.3.30
KFP_ENDPOINT ?= http://127.0.0.1:8080
CLUSTER_NAME ?= kfp-sklearn-kserve

K8S_VERSION ?= $(shell bash -c '. manifests/bootstrap/versions.env && echo "$$KUBERNETES_VERSION"' | sed 's/^v//')

manifests-check: $(STAMP) ## render every kustomization and validate it strictly (built-in kinds + KServe CRDs)
	@rendered=$$(mktemp --suffix=.yaml); trap 'rm -f "$$rendered"' EXIT; \
	for dir in $$(find manifests -name kustomization.yaml -exec dirname {} \; | sort); do \
	  echo ">> $(KUBECTL) kustomize $$dir | kubernetes-validate --strict -k $(K8S_VERSION)"; \
	  $(KUBECTL) kustomize "$$dir" > "$$rendered" || exit 1; \
	  $(BIN)/kubernetes-validate --strict --quiet --no-warn -k $(K8S_VERSION) "$$rendered" || exit 1; \
	done
	$(BIN)/python -m pytest -q tests/manifests/test_manifests_offline.py tests/deploy/test_inference_service_builder.py

$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)

checkov-install: $(CHECKOV_VENV)/bin/checkov ## install checkov in its own venv (its pins clash with the project's)

# The MLflow tracking server the tests start (tests/test_tracking.py): full `mlflow` in its own venv, because its
# pins do not resolve with requirements.lock (it falls back to mlflow 1.26); the project itself needs only the
# `mlflow` extra (mlflow-skinny, the client).
MLFLOW_VENV ?= .tools/mlflow
MLFLOW_VERSION ?= 3.17.2

$(MLFLOW_VENV)/bin/mlflow:
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MLFLOW_VENV)/bin/python -m pip install --quiet mlflow==$(MLFLOW_VERSION)

mlflow-install: $(MLFLOW_VENV)/bin/mlflow ## install the MLflow server for the tracking tests in its own venv

checkov: $(STAMP) checkov-install ## scan rendered manifests + the predictor pod; skips explained in manifests/.checkov.yaml
	$(BIN)/python -m pytest -q tests/manifests/test_manifests_offline.py -k checkov -rs

shellcheck: ## lint the bootstrap scripts (apt-get install shellcheck)
	$(SHELLCHECK) --external-sources --source-path=SCRIPTDIR --shell=bash \
	  manifests/bootstrap/*.sh manifests/bootstrap/versions.env

kind-up: ## kind cluster + cert-manager + KServe (Standard) + KFP + project image + kind overlay
	manifests/bootstrap/kind-up.sh

minikube-up: ## the same on minikube (profile kfp-sklearn-kserve)
	manifests/bootstrap/minikube-up.sh

kind-down: ## delete the kind cluster
	kind delete cluster --name $(CLUSTER_NAME)

port-forward: ## expose the KFP API and UI on 127.0.0.1:8080 (keep it running in another terminal)
	$(KUBECTL) port-forward -n kubeflow svc/ml-pipeline-ui 8080:80

submit: $(STAMP) ## compile and run the pipeline on KFP, deploying to KServe (KFP_ENDPOINT=...)
	$(BIN)/python pipeline.py submit --endpoint $(KFP_ENDPOINT) --service-account pipeline-runner \
	  --arg deploy_target=kubernetes --arg predictor_service_account=kfp-model-reader

e2e: $(STAMP) ## end-to-end tests on the current kubectl context (after kind-up; KFP_ENDPOINT port-forwarded)
	KFP_ENDPOINT=$(KFP_ENDPOINT) $(BIN)/python -m pytest -m e2e tests/e2e -v $(PYTEST_ARGS)

.PHONY: manifests-check checkov-install mlflow-install checkov shellcheck kind-up minikube-up kind-down port-forward submit e2e

# --- image ---
# One image for every pipeline component and the KServe predictor (Dockerfile). `make image` is for people with
# docker or podman and registry access; `make image-ci` is the daemonless buildah path CI uses (.ci/image/).
IMAGE ?= $(shell $(PYTHON) -c 'import runpy; print(runpy.run_path("components/constants.py")["DEFAULT_IMAGE"])')
IMAGE_VERSION ?= $(shell $(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
CONTAINER_ENGINE ?= $(shell if docker info >/dev/null 2>&1; then echo docker; elif command -v podman >/dev/null; then echo podman; else echo docker; fi)
MINIKUBE_PROFILE ?= $(CLUSTER_NAME)
IMAGE_ARCHIVE ?= build/image.tar

image: ## build the project image with docker or podman on the official python:3.11-slim (CONTAINER_ENGINE=...)
	$(CONTAINER_ENGINE) build --tag $(IMAGE) --build-arg VERSION=$(IMAGE_VERSION) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) .

image-ci: ## CI build: buildah on a cached debootstrap base, no daemon or registry (root; installs podman/buildah)
	.ci/image/build.sh

image-test: $(STAMP) checkov-install ## image tests only (container runs, checkov) against the image-ci build
	KFP_SKLEARN_KSERVE_REQUIRE_IMAGE=1 $(BIN)/python -m pytest -m image tests/image -rs $(PYTEST_ARGS)

kind-load: ## load the project image into the kind cluster (CLUSTER_NAME; after make image)
	@if [ "$(CONTAINER_ENGINE)" = docker ]; then \
	  kind load docker-image $(IMAGE) --name $(CLUSTER_NAME); \
	else \
	  mkdir -p $(dir $(IMAGE_ARCHIVE)) && podman save --output $(IMAGE_ARCHIVE) $(IMAGE) && \
	  kind load image-archive $(IMAGE_ARCHIVE) --name $(CLUSTER_NAME) && rm -f $(IMAGE_ARCHIVE); \
	fi

minikube-load: ## load the project image into minikube (MINIKUBE_PROFILE; after make image)
	@if [ "$(CONTAINER_ENGINE)" = docker ]; then \
	  minikube image load $(IMAGE) --profile $(MINIKUBE_PROFILE); \
	else \
	  mkdir -p $(dir $(IMAGE_ARCHIVE)) && podman save --output $(IMAGE_ARCHIVE) $(IMAGE) && \
	  minikube image load $(IMAGE_ARCHIVE) --profile $(MINIKUBE_PROFILE) && rm -f $(IMAGE_ARCHIVE); \
	fi

.PHONY: image image-ci image-test kind-load minikube-load
