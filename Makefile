# quantrac: the two commands a newcomer needs are `make run` and `make test`.
# Each installs what is missing: Debian packages (apt-get), Python packages (a virtualenv in
# .venv); the Kafka jars come from Maven Central when the stack first starts.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
RATE ?= 20
QUICK ?=

.PHONY: run test deps debs venv stack-up stack-down stack-status bench clean

run: deps ## the whole pipeline on local services with the station simulator
	$(BIN)/quantrac run --rate $(RATE)

test: deps ## every test, on real Mosquitto, Kafka and PostgreSQL
	$(BIN)/python -m pytest $(PYTEST_ARGS)

deps: debs venv

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
