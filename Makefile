# Two commands on a fresh machine with Python 3.11 and make:
#   make demo   runs the sample worker against the local Cloud Tasks runner (SQLite in .runner/)
#   make test   runs the test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve test lint typecheck check clean bench

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m sample_worker.demo

serve: $(STAMP)
	$(BIN)/runner serve

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .runner .demo .pytest_cache .mypy_cache .ruff_cache

# The benchmark suite (docs/performance.md); installs the peer emulator into bench/.peer-venv on first use.
# BASELINE=DIR (a checkout of an older commit, e.g. `git worktree add --detach DIR COMMIT`) runs its runner
# and handler beside this one's, alternating, in the dispatch, enqueue and handler benchmarks.
bench: $(STAMP)
	$(BIN)/python bench/dispatch_throughput.py $(if $(BASELINE),--baseline $(BASELINE))
	$(BIN)/python bench/enqueue_throughput.py $(if $(BASELINE),--baseline $(BASELINE))
	$(BIN)/python bench/rate_accuracy.py
	$(BIN)/python bench/schedule_lateness.py
	$(BIN)/python bench/backlog_scaling.py
	$(BIN)/python bench/handler_overhead.py $(if $(BASELINE),--baseline $(BASELINE))
