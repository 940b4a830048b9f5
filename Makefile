# Pizzeria: `make run` starts everything embedded; `make test` installs what it needs and runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
PYTEST_ARGS ?=

.PHONY: run test test-unit screenshots lint bench chaos chaos-replay clean install lock system-deps services deploy-tools bytecode

# The exact packages of requirements.lock, checked against their hashes, then pizzeria itself
# (editable, without resolving anything again). The ranges in pyproject.toml are for those who
# use pizzeria as a library; a lock older than them stops here (`make lock` makes a new one).
$(VENV)/.installed: pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@$(PYTHON) tools/lock.py --check
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

install: $(VENV)/.installed

# Every process of a system imports pizzeria's own modules: compiled once here, they are not
# compiled again by each (where PYTHONDONTWRITEBYTECODE is set, Python reads bytecode but never
# writes it, and a system starts a dozen processes). Only what changed is compiled again.
bytecode: install
	@$(PY) -m compileall -q src

# Resolves requirements.lock again after pyproject.toml's dependencies changed, keeping every
# pin that still fits (with uv, as pinned in the lock; installed into .venv if missing).
# LOCK_ARGS="--upgrade-package NAME" moves one pin to the newest version its range allows.
LOCK_ARGS ?=
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(PY) -m pip install --quiet "$$(grep -m1 '^uv==' $(LOCK) | cut -d' ' -f1)"
	$(PY) tools/lock.py $(LOCK_ARGS)

# The demo runs itself: the kitchen and the couriers move orders on without staff, and simulated
# ovens and trackers send their readings (a courier is out 20 s; their tracker's trip takes 18 s, longer to far addresses).
run: bytecode
	KITCHEN_AUTOPILOT=$${KITCHEN_AUTOPILOT:-1} DELIVERY_AUTOPILOT=$${DELIVERY_AUTOPILOT:-1} \
	DEVICE_SIMULATORS=$${DEVICE_SIMULATORS:-1} DELIVERY_STAGE_MS=$${DELIVERY_STAGE_MS:-20000} \
	SIM_TRIP_S=$${SIM_TRIP_S:-18} $(PY) -m pizzeria up

# Installs Debian packages the tests need (when missing) and starts PostgreSQL and Redis.
services:
	@tools/ensure-services.sh

# Builds (once, cached under ~/.cache/pizzeria/bin) the Go tools the deploy tests run: helm,
# actionlint and compose-check.
deploy-tools:
	@tools/ensure-deploy-tools.sh

test: bytecode services deploy-tools
	$(PY) -m pytest $(PYTEST_ARGS)

# The browser tests alone, photographing the pages into docs/screenshots (the README's pictures);
# `make test` keeps its photographs under var/screenshots.
screenshots: bytecode services
	PIZZERIA_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/browser $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench locustfile.py
	$(VENV)/bin/ruff format --check src tests bench locustfile.py
	$(VENV)/bin/mypy

bench: bytecode services
	$(PY) -m bench.run

# The chaos campaign: every nemesis under a steady order load, each on a system of its own,
# checked by the history checker; prints the table and writes it into docs/reliability.md.
# CHAOS_ARGS="--scenario kill --stack postgres+kafka" narrows or moves it; the soak (nemeses at
# random under a steady load) lasts CHAOS_SOAK_MINUTES (30 by default).
CHAOS_ARGS ?=
chaos: bytecode services
	$(PY) -m tests.chaos.replay --seeds $(CHAOS_SEEDS)
	$(PY) -m tests.chaos.campaign --report docs/reliability.md $(CHAOS_ARGS)

# Deterministic runs of the saga over the embedded broker (tests/chaos/simulation.py): `make
# chaos` runs CHAOS_SEEDS of them first; `CHAOS_SEED=N make chaos-replay` replays one, step by step.
CHAOS_SEEDS ?= 500
chaos-replay: install
	@test -n "$(CHAOS_SEED)" || { echo "which seed? CHAOS_SEED=N make chaos-replay" >&2; exit 2; }
	$(PY) -m tests.chaos.replay --seed $(CHAOS_SEED)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
