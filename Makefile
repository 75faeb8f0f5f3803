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
	PYTHONWARNINGS='ignore:Editable installation:UserWarning' $(BIN)/pip install -q -e '.[dev]'
	@touch $@

# Debian packages the tests start for real (as root, once): promtool and prometheus
# (deploy-file checks, the Prometheus test), alertmanager, chromium (the page's browser
# test). Without apt-get they are reported and those tests skip locally (they fail in CI).
APT_NEEDS := promtool:prometheus prometheus-alertmanager:prometheus-alertmanager chromium:chromium

setup: $(BIN)/shopwatch
	@missing=""; for need in $(APT_NEEDS); do command -v $${need%%:*} >/dev/null 2>&1 || missing="$$missing $${need#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "setup: apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "setup: not installed:$$missing (the tests that need them skip locally, fail in CI)"; fi; \
	fi

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
	@if [ -d ../shared/acceptance ]; then ../shared/acceptance/check; else echo "test: ../shared/acceptance not found beside the clone: acceptance cases skipped"; fi

acceptance: setup
	../shared/acceptance/check

# The quick tier while editing: core and shell tests without the broker and without
# the ones marked slow (the crash model, long runs); make test runs them all.
test-quick: setup
	$(BIN)/python -m pytest -q -m "not broker and not slow"

# Replay speed (bench/replay_bench.py), then the workers on the local broker next to
# four baseline consumers (bench/worker_bench.py; WORKER_BENCH_ARGS="--events N ...").
bench: setup
	$(BIN)/python bench/replay_bench.py
	$(KAFKA) up
	$(BIN)/python bench/worker_bench.py $(WORKER_BENCH_ARGS)
	$(BIN)/python bench/state_bench.py $(STATE_BENCH_ARGS)

demo: $(BIN)/shopwatch
	$(KAFKA) up
	bash deploy/demo.sh

clean:
	rm -rf $(VENV) var build *.egg-info
