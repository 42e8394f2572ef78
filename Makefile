# campaign-gym: `make run` runs the full pipeline, `make test` runs the tests.
# Both install into .venv first when needed. On machines with a local CPU torch wheel, the
# pin below keeps pip from pulling a multi-GB CUDA build; elsewhere: make install TORCH=torch
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
OBP_WHEEL ?= obp==0.4.1
RECBOLE_WHEEL ?= recbole==1.2.1
STAMP := $(VENV)/.installed

.PHONY: install run smoke test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev,launchers]"
	# Open Bandit Dataset sample files, and obp.ope as a test-only reference (project code never imports obp).
	$(PY) -m pip install --quiet --no-deps $(OBP_WHEEL)
	# MovieLens-100k files only (recsys.data.movielens; project code never imports recbole; research use, never committed).
	$(PY) -m pip install --quiet --no-deps $(RECBOLE_WHEEL)
	touch $(STAMP)

run: install
	$(PY) -m experiments.run $(ARGS)

smoke: install
	$(PY) -m experiments.run experiment=smoke $(ARGS)

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m ""

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) -m benchmarks.throughput > bench_throughput.json
	$(PY) -m benchmarks.training > bench_training.json
	$(PY) -m benchmarks.gan_fidelity > bench_gan_fidelity.json
	@echo "wrote bench_throughput.json bench_training.json bench_gan_fidelity.json"

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
