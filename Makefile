# Two commands for a new user: `make run` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.finscore-installed

.PHONY: run test bench bench-scan eval-threat lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/finscore demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.latency

# 1M generated rows scanned in-process and through Triton, beside pandas + IsolationForest.
bench-scan: $(STAMP)
	$(BIN)/python -m bench.scan --repeats 3

# The threat model against IsolationForest on NSL-KDD (reads ../shared/data/nsl-kdd when present).
eval-threat: $(STAMP)
	$(BIN)/python -m bench.nslkdd

lint: $(STAMP)
	$(BIN)/ruff check engine kernels clients bench tests model_repo
	$(BIN)/mypy engine kernels clients

clean:
	rm -rf $(VENV) build .pytest_cache
