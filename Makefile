# Tracer: `make demo` builds the market data offline, `make test` runs the tests,
# `make dev` opens the Dagster UI (webserver + daemon) on a moving replay clock,
# `make dev-still` on the demo's instance with the clock stopped.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# The CLI, the demo and `make dev-still` share one instance and one DuckDB file; set either to move it.
export DAGSTER_HOME       ?= $(CURDIR)/.dagster
export TRACER_DUCKDB_PATH ?= $(CURDIR)/.tracer/tracer.duckdb

# `make dev` keeps its own instance and DuckDB file under DEV_DIR, one folder per exchange: its
# clock starts DEV_DAYS before the end of the data, where the demo's file already holds candles.
DEV_DIR  ?= $(CURDIR)/.tracer/dev
DEV_DAYS ?= 3

.PHONY: install instance demo test dev dev-still benchmark clean

$(BIN)/.installed: pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

# A DAGSTER_HOME elsewhere gets the project's instance config (DuckDB pool, freshness).
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	cp .dagster/dagster.yaml $@

# Set the pool's limit once, before any run: left to its first use, two runs starting
# together on a new instance can both initialize it and both get a slot.
$(DAGSTER_HOME)/.duckdb_pool: $(DAGSTER_HOME)/dagster.yaml | $(BIN)/.installed
	$(BIN)/dagster instance concurrency set duckdb 1
	touch $@

instance: install $(DAGSTER_HOME)/dagster.yaml $(DAGSTER_HOME)/.duckdb_pool

demo: instance
	$(BIN)/python -m tracer_assets.demo

# Lint and format check first: a style slip fails fast, before the slow tests.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# The clock, the files and the history before the UI starts: tracer_assets/dev.py. TRACER_REPLAY_START,
# TRACER_REPLAY_SPEED, TRACER_REPLAY_ANCHOR and TRACER_EXCHANGE override its choices.
dev: install
	$(BIN)/python -m tracer_assets.dev --dir $(DEV_DIR) --days $(DEV_DAYS)

# The UI over what `make demo` built, the replay clock stopped at the end of the data (blank is unset).
dev-still: instance
	TRACER_REPLAY_START= $(BIN)/dagster dev -w workspace.yaml

benchmark: install
	for bench in tracer_assets_tests/benchmarks/bench_*.py; do $(BIN)/python $$bench || exit 1; done

clean:
	rm -rf $(VENV) .tracer *.egg-info
	find .dagster -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
