# One command to run, one to test. Both create the environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first: the CPU build (pip finds it on a machine that has it; elsewhere set
# TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" to avoid the CUDA build).
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
DATA_DIR ?= .genai-ingest
QUERY ?= history of the word processor
export PREFECT_LOGGING_LEVEL ?= WARNING
export HF_HUB_OFFLINE ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install run test lint bench clean triage explore es-start es-stop server-stop bench-startup \
	bench-retrieval k8s-build k8s-start k8s-stop

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install ## ingest the bundled samples into the embedded store, then search it
	$(BIN)/genai-ingest run samples --data-dir $(DATA_DIR)
	$(BIN)/genai-ingest search "$(QUERY)" --k 3 --data-dir $(DATA_DIR)

server-stop: install ## stop the local Prefect server that the first `make run` started
	$(BIN)/genai-ingest server stop

test: install ## the whole suite, slow end-to-end tests included
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: install ## ruff, and the package layers of docs/architecture.md (import-linter)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

bench: install ## corpus benchmark (default ../shared/corpus/good)
	$(BIN)/python bench/ingest_bench.py

bench-startup: install ## start-up: cold first run, no-op re-run and search on a fresh HOME
	$(BIN)/python bench/startup_bench.py

BENCH_ARGS ?=
bench-retrieval: install ## retrieval vs LlamaIndex/docling chunkers (BENCH_ARGS="--dedup")
	$(BIN)/python bench/retrieval_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(DATA_DIR)

triage: install ## the DLQ triage app (marimo) on the DLQ of $(DATA_DIR)
	GENAI_INGEST_DATA_DIR=$(DATA_DIR) $(BIN)/marimo run notebooks/dlq_triage.py

explore: install ## the search explorer app (marimo) on the index of $(DATA_DIR)
	GENAI_INGEST_DATA_DIR=$(DATA_DIR) $(BIN)/marimo run notebooks/search_explorer.py

# A real Elasticsearch node without Docker (deploy/elasticsearch/es.sh pins the default version;
# `make es-start ES_VERSION=8.19.21` runs the 8.x line). Prints the node's URL.
ES_PORT ?= 9200
ES_SH = ES_PORT=$(ES_PORT) $(if $(ES_VERSION),ES_VERSION=$(ES_VERSION)) deploy/elasticsearch/es.sh

es-start: ## start (or reuse) a single node on 127.0.0.1:$(ES_PORT) and wait until healthy
	@$(ES_SH) start

es-stop: ## stop that node gracefully
	@$(ES_SH) stop

# A local Kubernetes control plane without Docker (deploy/kubernetes/): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok nodes (a GPU and a CPU pool), built from source
# into the cache folder the first time (see the README for what that costs). Prints the kubeconfig.
k8s-build: ## build the binaries once (a no-op when built); k8s-start does it too
	@deploy/kubernetes/build.sh

k8s-start: ## build once, start on 127.0.0.1:6443, register the kwok nodes
	@deploy/kubernetes/k8s.sh start

k8s-stop: ## stop it (its state stays; `deploy/kubernetes/k8s.sh wipe` deletes it)
	@deploy/kubernetes/k8s.sh stop
