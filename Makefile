# The README's two commands: `make demo` and `make test`. Everything they need
# is set up here, on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA := bash deploy/kafka/kafka.sh

.PHONY: setup demo test test-quick lint acceptance bench kafka-up kafka-down clean

$(BIN)/shopwatch: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

setup: $(BIN)/shopwatch
	@command -v promtool >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) || \
	  echo "setup: promtool not installed (the deploy-file checks that need it will skip)"; }
	@command -v prometheus-alertmanager >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null) || \
	  echo "setup: prometheus-alertmanager not installed (tests/test_alertmanager.py skips locally, fails in CI)"; }

lint: setup
	$(BIN)/ruff check .

kafka-up:
	$(KAFKA) up

kafka-down:
	$(KAFKA) down

# Everything: lint, unit and property tests, broker tests on the real Kafka
# broker (started here unless KAFKA_BOOTSTRAP names a cluster), acceptance.
test: setup
	$(BIN)/ruff check .
	$(KAFKA) up
	$(BIN)/python -m pytest -q
	../shared/acceptance/check || [ ! -d ../shared/acceptance ]

acceptance: setup
	../shared/acceptance/check

# The quick tier while editing: core and shell tests without the broker and without
# the ones marked slow (the crash model, long runs); make test runs them all.
test-quick: setup
	$(BIN)/python -m pytest -q -m "not broker and not slow"

# Replay speed (bench/replay_bench.py), then the workers on the local broker next to
# three baseline consumers (bench/worker_bench.py; WORKER_BENCH_ARGS="--events N ...").
bench: setup
	$(BIN)/python bench/replay_bench.py
	$(KAFKA) up
	$(BIN)/python bench/worker_bench.py $(WORKER_BENCH_ARGS)

demo: $(BIN)/shopwatch
	$(KAFKA) up
	bash deploy/demo.sh

clean:
	rm -rf $(VENV) var build *.egg-info
