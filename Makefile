# brainbench — run `make help` for the list of targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# DEVICE=cpu|cuda: the framework builds `make install` puts in .venv (default: what .venv was installed with, else cpu)
DEVICE ?= $(shell cat $(VENV)/.device 2>/dev/null || echo cpu)
STAMP := $(VENV)/.installed$(if $(filter cuda,$(DEVICE)),-cuda,)
DATA ?= synthetic
PROFILE ?= quick
IBSR18_ROOT ?= ../shared/data/ibsr18
SPLIT ?= paper
EXTRA ?=
SYNTH_DIR := runs/data/synthetic
SYNTH_SUBJECTS ?= 7
JOBS ?= 2
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install test test-all lint docs reproduce-table1 recipe recipe-ablation report bench ui clean stack-up stack-down postgres

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'
	@echo "  variables: DEVICE=cpu|cuda (install)  DATA=synthetic|ibsr18  IBSR18_ROOT=path  SPLIT=paper|holdout|course  PROFILE=smoke|quick|long|full  EXTRA='hydra overrides'  EXPERIMENT=name (report)  JOBS=2  TEST_WORKERS=2"

# cuda: pyproject's pins with requirements/cuda.txt's frameworks in place of torch and tensorflow-cpu (an extra
# cannot replace a base pin), then the project itself with --no-deps, so tensorflow-cpu never lands.
$(STAMP): pyproject.toml requirements/cuda.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (brainbench needs Python 3.11)"; exit 2; }
	@case "$(DEVICE)" in cpu|cuda) ;; *) echo "error: DEVICE=$(DEVICE) is unknown (use DEVICE=cpu or DEVICE=cuda)"; exit 2;; esac
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python requirements/pins.py conflicts $(DEVICE) | xargs -r $(BIN)/python -m pip uninstall --quiet -y
ifeq ($(DEVICE),cuda)
	$(BIN)/python requirements/pins.py cuda > $(VENV)/requirements-cuda.txt
	$(BIN)/python -m pip install --quiet -r $(VENV)/requirements-cuda.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
else
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
endif
	@rm -f $(VENV)/.installed $(VENV)/.installed-cuda
	@echo $(DEVICE) > $(VENV)/.device
	@touch $(STAMP)

install: $(STAMP) ## Create .venv from pyproject.toml (DEVICE=cuda: the CUDA builds of torch and TensorFlow; a second call does nothing)

postgres: ## Install PostgreSQL from the system packages if its server binaries are missing (tests need it)
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
	    echo "warning: PostgreSQL is not installed and cannot be installed here (apt-get install postgresql)"; }

stack-up: $(STAMP) postgres ## Start PostgreSQL + MLflow server + Ray head on 127.0.0.1 (runs/stack; STACK_ARGS=--mlflow-port ...)
	$(BIN)/bench stack up $(STACK_ARGS)

stack-down: $(STAMP) ## Stop the local stack (each service by its own pid)
	$(BIN)/bench stack down $(STACK_ARGS)

test: $(STAMP) postgres ## Run the fast test suite (excludes tests marked slow; TEST_WORKERS=2 processes, 0: in one; PYTEST_ARGS=--durations=40)
	$(BIN)/python -m pytest -m "not slow" -q --timeout=600 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-all: $(STAMP) postgres ## Run every test, slow ones included
	$(BIN)/python -m pytest -q --timeout=1800 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

docs: $(STAMP) ## Build the documentation site from docs/ into runs/site (mkdocs, strict: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir runs/site
	@echo "open runs/site/index.html"

lint: $(STAMP) ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/mypy bench adapters benchmarks

$(SYNTH_DIR)/.done: | $(STAMP)
	$(BIN)/bench synth --out $(SYNTH_DIR) --subjects $(SYNTH_SUBJECTS) --seed 0
	@touch $@

ifeq ($(DATA),synthetic)
DATA_ARGS := data=synthetic data.root=$(SYNTH_DIR)
DATA_DEP := $(SYNTH_DIR)/.done
else
DATA_ARGS := data=ibsr18 data.root=$(IBSR18_ROOT) data.split=$(SPLIT)
DATA_DEP :=
endif

# A row that fails does not cost the others their report: the report is written from the rows that finished
# (naming the failed ones) and make still exits with the sweep's status.
reproduce-table1: $(STAMP) $(DATA_DEP) ## Run the Table 1 sweep (JOBS rows at once) and write Table 1 / Table 2 (DATA=, PROFILE=, EXTRA=)
	status=0; $(BIN)/python -m bench.run --multirun +sweep=table1 $(DATA_ARGS) profile=$(PROFILE) \
	  hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) $(EXTRA) || status=$$?; \
	if [ $$status -eq 0 ]; then $(BIN)/bench report; else \
	  echo "the sweep failed (exit $$status): reporting the rows that finished" >&2; \
	  $(BIN)/bench report --experiment table1-$(DATA)-$(PROFILE) 2>/dev/null || true; exit $$status; fi

recipe: $(STAMP) $(DATA_DEP) ## The brainbench recipe: both members side by side (profile long), their ensemble, the report (DATA=, EXTRA=)
	$(BIN)/python -m bench.run --multirun +sweep=brainbench $(DATA_ARGS) \
	  hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) $(EXTRA)
	$(BIN)/bench ensemble --name brainbench --sweep +sweep=brainbench $(DATA_ARGS) $(EXTRA)
	$(BIN)/bench report

recipe-ablation: $(STAMP) $(DATA_DEP) ## The recipe's PyTorch member with each ingredient switched in turn (DATA=, EXTRA='profile.epochs=N')
	$(BIN)/python -m bench.run --multirun +sweep=brainbench_ablation $(DATA_ARGS) \
	  hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) $(EXTRA)
	$(BIN)/bench report

report: $(STAMP) ## Rebuild runs/reports/<experiment>/ from MLflow (the newest experiment; EXPERIMENT= to pick one)
	$(BIN)/bench report $(if $(EXPERIMENT),--experiment $(EXPERIMENT),)

bench: $(STAMP) ## Run the performance benchmark suite (writes runs/bench/)
	$(BIN)/python -m benchmarks.suite

ui: $(STAMP) ## MLflow UI on 127.0.0.1:5000 against runs/mlflow.db (HOST= to change)
	@echo "open http://$${HOST:-127.0.0.1}:$${PORT:-5000}/#/experiments?workflowType=machine_learning (model-training view)"
	$(BIN)/mlflow ui --host $${HOST:-127.0.0.1} --port $${PORT:-5000} \
	  --backend-store-uri sqlite:///runs/mlflow.db --default-artifact-root runs/artifacts

clean: ## Remove runs/ outputs (keeps .venv)
	rm -rf runs/mlflow.db runs/artifacts runs/reports runs/cache runs/outputs runs/bench
