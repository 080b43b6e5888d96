# quantrac: the two commands a newcomer needs are `make run` and `make test`.
# Each installs what is missing: Debian packages (apt-get), Python packages (a virtualenv in
# .venv); the Kafka jars come from Maven Central when the stack first starts.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
RATE ?= 20
BRIDGES ?= 1
WORKERS ?= 1
TOOLS := .tools/bin
KUBECONFORM_VERSION := v0.6.7
QUICK ?=
UNIT_TIER = $(BIN)/python -m pytest -m "not integration" -n auto $(PYTEST_ARGS)

.PHONY: run test test-unit lint deps timescaledb validators browser-harness debs venv stack-up stack-down stack-status bench clean

run: deps ## the whole pipeline on local services with the station simulator
	$(BIN)/quantrac run --rate $(RATE) --bridges $(BRIDGES) --workers $(WORKERS)

# The tiers in turn: the tests that need no service spread over every core (pytest-xdist), then the integration
# tests in one session, which starts the services once. A PYTEST_ARGS selection that leaves a tier empty (pytest's
# exit status 5) does not fail the other.
test: deps validators browser-harness lint ## style and types first, then every test, on real Mosquitto, Kafka and PostgreSQL (store tests on TimescaleDB and on native PostgreSQL)
	$(UNIT_TIER) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: venv ## ruff (pyflakes, bugbear, complexity, imports, docstrings) and mypy (pydantic plugin), zero findings
	$(BIN)/ruff check .
	$(BIN)/mypy

# The tests that need no service (parsers, rules, detectors, registry, docs, import layers): the loop to run
# all day. Needs only the virtualenv; tests/conftest.py refuses a test that uses a service unmarked.
test-unit: venv
	$(UNIT_TIER)

deps: debs venv timescaledb

# TimescaleDB for the local PostgreSQL: used when installed, else built once per machine from
# QUANTRAC_TIMESCALEDB_SOURCE (../shared/vendor/timescaledb/ by default) into ~/.cache/quantrac/timescaledb
# and installed from there; without a tarball the stack runs plain PostgreSQL. Logs one line either way.
timescaledb: debs venv
	@$(BIN)/quantrac stack timescaledb

# The dashboard's browser test drives the Debian chromium with npm playwright-core (no browser download).
browser-harness: tests/browser/node_modules/.installed
tests/browser/node_modules/.installed: tests/browser/package.json tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund
	@touch $@

validators: $(TOOLS)/kubeconform ## tools the deployment-file tests run (Go toolchain needed once)

$(TOOLS)/kubeconform:
	@command -v go >/dev/null || test -x /usr/local/go/bin/go || (echo "kubeconform is built with Go: install Go 1.22+ (apt-get install golang-go on Debian 13)" && false)
	GOBIN=$(abspath $(TOOLS)) PATH="$$PATH:/usr/local/go/bin" go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)

debs:
	@deploy/local/install-debian-packages.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || (apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV))
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

stack-up: deps
	$(BIN)/quantrac stack up
stack-down:
	$(BIN)/quantrac stack down
stack-status:
	$(BIN)/quantrac stack status

clean: stack-down
	rm -rf .run

# Benchmarks print JSON and keep it under bench/results/; the table in docs/performance.md is made from them.
# QUICK=1 keeps the whole run within about 5 minutes. The detection bench needs the GECCO 2018 CSV
# (../shared/data/gecco2018/ beside the repository, or QUANTRAC_GECCO_DATA=<path>).
bench: deps
	$(BIN)/python bench/e2e.py $(if $(QUICK),--quick,)
	$(BIN)/python bench/bridge.py $(if $(QUICK),--messages 5000,)
	$(BIN)/python bench/worker.py $(if $(QUICK),--messages 2000,--messages 300000 --stations 200)
	$(BIN)/python bench/worker.py --workers 2 $(if $(QUICK),--messages 2000,--messages 600000 --stations 200)
	$(BIN)/python bench/store_writes.py $(if $(QUICK),--write-rows 50000 --days 1 --stations 10 --queries 50,--days 7 --stations 100)
	$(BIN)/python bench/detection.py $(if $(QUICK),--days 1,)
	$(if $(QUICK),,$(BIN)/python bench/soak.py --minutes 30 --rate 5000)
	$(BIN)/python bench/report.py --write
