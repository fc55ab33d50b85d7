# omnijourney — `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install kafka browser kafka-up demo validate simulate graphs stats test unit faults lint types bench bench-live bench-scale bench-herd clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

# The core's hot modules compiled by mypyc, again whenever a core source changes
# (src/omnijourney/native.py); without a C compiler the core runs from its sources.
NATIVE := src/omnijourney/native.json
$(NATIVE): $(STAMP) $(wildcard src/omnijourney/core/*.py src/omnijourney/runtime/*.py) src/omnijourney/native.py src/omnijourney/nativebuild.py
	OMNIJOURNEY_NATIVE=off $(BIN)/python -m omnijourney.nativebuild build

install: $(STAMP) $(NATIVE) ## Create .venv, install omnijourney with dev tools, compile the core

kafka: install ## Fetch the pinned Apache Kafka's jars (Maven Central) into ~/.cache/omnijourney
	$(BIN)/python -c "from omnijourney.runtime.kafkadist import ensure_jars, find_java; find_java(); print(ensure_jars())"

browser: ## Debian's Chromium and ChromeDriver for the browser tests (apt, once)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
	@chromium --version && chromedriver --version

kafka-up: install ## Run a real Kafka node here until Ctrl-C (NODES=3 for a cluster)
	$(BIN)/omnijourney kafka up --nodes $(or $(NODES),1)

demo: install ## Local Kafka (real where Java 17+ is, else embedded) + worker + sample events
	$(BIN)/omnijourney validate journeys
	$(BIN)/omnijourney dev --journeys journeys --events examples/events.jsonl

validate: install ## Check every journey, template and policy file
	$(BIN)/omnijourney validate journeys

simulate: install ## Simulate the sample timeline with per-customer explanations
	$(BIN)/omnijourney simulate --journeys journeys --events examples/events.jsonl --explain

graphs: install ## Print every example journey as a Mermaid flowchart
	@for f in journeys/*.yaml; do case $$f in *policies.yaml) continue;; esac; \
	  echo "## $$f"; $(BIN)/omnijourney graph --markdown $$f; done

stats: install ## Funnel of every example journey over the sample timeline (simulated)
	@for f in journeys/*.yaml; do case $$f in *policies.yaml) continue;; esac; \
	  $(BIN)/omnijourney stats $$(basename $$f .yaml) --events examples/events.jsonl; echo; done

test: install lint types kafka browser ## Lint, type-check and run the whole suite on real Kafka and Chromium (CI runs this)
	$(BIN)/python -m pytest
	OMNIJOURNEY_NATIVE=off $(BIN)/python -m pytest tests/unit -q  # the core from its sources too

unit: install ## Run only the fast pure-core tests
	$(BIN)/python -m pytest tests/unit -q

faults: install kafka ## Only the fault tests (3-node cluster; RUNS=N repeats them)
	@for i in $$(seq $(or $(RUNS),1)); do $(BIN)/python -m pytest tests/integration/test_faults.py -q || exit 1; done

lint: install ## ruff
	$(BIN)/ruff check src tests bench

types: install ## mypy --strict on src
	$(BIN)/mypy

bench: install ## Evaluator throughput (100k customers); timers at 1M, index rebuild at 100k; a tick's cost, gc tuned or not (ratios)
	$(BIN)/python bench/evaluator.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/ticks.py

bench-live: install kafka ## Live engine vs raw aiokafka loop and Faust floor, real Kafka and embedded
	cd bench && ../$(BIN)/python live.py --broker both

bench-scale: install kafka ## 1 vs 2 workers on a real 3-node cluster, warmed up first (and the single-node table)
	cd bench && ../$(BIN)/python live.py --scale

bench-herd: install kafka ## Timers through real Kafka: 100k waits ending in one second, then spread out
	cd bench && ../$(BIN)/python herd.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build src/*.egg-info \
	  src/*.so src/omnijourney/core/*.so src/omnijourney/runtime/*.so src/omnijourney/native.json \
	  omnijourney-worker.log omnijourney*-data  # the Kafka jars stay in ~/.cache/omnijourney
