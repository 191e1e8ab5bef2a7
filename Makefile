# Two commands for a new user: `make run` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.finscore-installed

.PHONY: run test bench bench-tools bench-scan eval-threat lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/finscore demo

test: $(STAMP)
	$(BIN)/python -m pytest

# perf_analyzer 2.51 (from the tritonclient wheel) with the two libraries it needs linked from nvidia-pytriton.
bench-tools: $(STAMP)
	$(BIN)/python -m bench.perf_analyzer

# churn trained on generated customers into build/bench, then the whole suite: closed and open loops,
# perf_analyzer, the in-process and FastAPI baselines, and the configuration sweep. Reports in build/bench/.
bench: bench-tools
	$(BIN)/finscore demo-data churn --out build/bench/customers.parquet
	$(BIN)/finscore train churn --data build/bench/customers.parquet --label churned --id customer_id --repo build/bench/model_repo
	$(BIN)/finscore bench churn --repo build/bench/model_repo --data build/bench/customers.parquet --sweep --json build/bench/churn.json

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
