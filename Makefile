# omnijourney — `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install demo validate simulate graphs stats test unit lint types bench bench-live clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP) ## Create .venv and install omnijourney with dev tools

demo: install ## Embedded Kafka + worker + sample events: the commands, live
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

test: install lint types ## Lint, type-check and run the whole test suite (what CI runs)
	$(BIN)/python -m pytest

unit: install ## Run only the fast pure-core tests
	$(BIN)/python -m pytest tests/unit -q

lint: install ## ruff
	$(BIN)/ruff check src tests bench

types: install ## mypy --strict on src
	$(BIN)/mypy

bench: install ## Evaluator throughput on 100k synthetic customers (prints ratios)
	$(BIN)/python bench/evaluator.py

bench-live: install ## Live engine vs a raw aiokafka loop on the same broker (ratio)
	cd bench && ../$(BIN)/python live.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build src/*.egg-info \
	  omnijourney-worker.log omnijourney*-data
