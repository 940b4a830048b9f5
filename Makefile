# Pizzeria: `make run` starts everything embedded; `make test` installs what it needs and runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test test-unit lint bench clean install system-deps services deploy-tools

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

# The demo runs itself: the kitchen and the couriers move orders on without staff.
run: install
	KITCHEN_AUTOPILOT=$${KITCHEN_AUTOPILOT:-1} DELIVERY_AUTOPILOT=$${DELIVERY_AUTOPILOT:-1} $(PY) -m pizzeria up

# Installs Debian packages the tests need (when missing) and starts PostgreSQL and Redis.
services:
	@tools/ensure-services.sh

# Builds (once, cached under ~/.cache/pizzeria/bin) the Go tools the deploy tests run: helm,
# actionlint and compose-check.
deploy-tools:
	@tools/ensure-deploy-tools.sh

test: install services deploy-tools
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: install services
	$(PY) -m bench.run

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
