# brainbench: `make setup`, then `make bench METHOD=litemind SUBJECT=1`, `make leaderboard` and `make test`.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
METHOD ?= litemind
SUBJECT ?= 1
DATASET ?=
DATA_ROOT ?=
DEVICES ?=
NODES ?=
ARGS ?=
SITES ?= 8
MISSING ?= 0.5
ROUNDS ?=
# `make federate` runs METHOD when it is given (command line or environment), else pmcmfl
FEDERATED_METHOD := $(if $(filter command line environment,$(origin METHOD)),$(METHOD),pmcmfl)
PERF_METHODS ?=
# the extras the test suite imports ([diffusion]'s transformers and [tracking] are left out: no test needs them)
SETUP_EXTRAS ?= dev,video,report,publish,federated
PERF_HOME := $(or $(BRAINBENCH_HOME),$(HOME)/.cache/brainbench)
PERF_SUBJECT := $(PERF_HOME)/prepared/world-nsd-v1-small/subj01
# pip's extra-index warnings on these machines are noise; sed drops them and, with pipefail, pip's own exit
# status still fails the recipe.
QUIET_PIP := sed '/is ignored: it is neither a file nor a directory/d'

.PHONY: setup bench federate leaderboard perf test test-fast lint format list clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q -c constraints.txt torch torchvision 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q -c constraints.txt -e ".[$(SETUP_EXTRAS)]" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import torch, torchvision, brainbench; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

# DEVICES=N (NODES=M) trains with DDP on N devices per node (M nodes; launch one `make bench` per node
# through torchrun or srun, see README "Multi-GPU and multi-node").
BENCH_ARGS = --method $(METHOD) --subject $(SUBJECT) $(if $(DATASET),--dataset $(DATASET)) \
	$(if $(DATA_ROOT),--data-root $(DATA_ROOT)) \
	$(if $(DEVICES),--devices $(DEVICES) --strategy ddp) $(if $(NODES),--num-nodes $(NODES)) $(ARGS)

bench: setup
	$(BIN)/brainbench bench $(strip $(BENCH_ARGS))

# Federated decoding on Flower (README "Federated runs"): METHOD=pmcmfl (or pmcmfl-nocontrast, fedavg-zero,
# fedavg-random, fedavg-pairs, centralised) across SITES sites with modality-missing probability MISSING,
# in Flower's in-process simulation; a row goes to leaderboards/<dataset>/federated.csv.
federate: setup
	$(BIN)/brainbench federate --method $(FEDERATED_METHOD) --sites $(SITES) --missing $(MISSING) $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(DATASET),--dataset $(DATASET)) $(ARGS)

# Speed tables (benchmarks/README.md): training step vs matmul peak and vs the loader, evaluator cost, shard
# reading, and `make bench` wall time per method (every world config, about 20 min with the worlds cached;
# PERF_METHODS="litemind ridge" for a subset; its rows go to a scratch leaderboard). Loader rates use subject 1
# of each config's world where `make bench` has prepared it.
perf: setup
	mkdir -p benchmarks/results
	$(BIN)/python benchmarks/training_speed.py --csv benchmarks/results/training_speed.csv --home $(PERF_HOME)
	$(BIN)/python benchmarks/eval_speed.py --csv benchmarks/results/eval_speed.csv
	$(if $(wildcard $(PERF_SUBJECT)/manifest.json),$(BIN)/python benchmarks/shard_throughput.py \
		--prepared $(PERF_SUBJECT) --json benchmarks/results/shard_throughput.json)
	$(BIN)/python benchmarks/bench_wall_time.py --home $(PERF_HOME) --csv benchmarks/results/bench_wall_time.csv \
		$(if $(PERF_METHODS),--methods $(PERF_METHODS))

# Renders leaderboards/<dataset>/<task>.csv + leaderboards/reported/*.csv into leaderboards/README.md and the
# static HTML report leaderboards/report/index.html (plots, reconstruction galleries from runs/<id>/recons/).
leaderboard: setup
	$(BIN)/brainbench leaderboard render --leaderboards leaderboards
	$(BIN)/brainbench leaderboard report --leaderboards leaderboards --runs runs --out leaderboards/report

test: setup
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

lint: setup
	$(BIN)/ruff check brainbench tests benchmarks
	$(BIN)/ruff format --check brainbench tests benchmarks
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format brainbench tests benchmarks
	$(BIN)/ruff check --fix brainbench tests benchmarks

list: setup
	$(BIN)/brainbench list

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
