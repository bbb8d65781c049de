# Edgeward: make demo | make demo-ha | make test | make bench | make lint | make sim | make chaos |
#   make chaos-ha | make deb | make package-test
# Each target sets up what it needs on a fresh Debian machine with Python 3.11+.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-ha test lint bench sim chaos chaos-ha clean system-deps package-deps deb package-test screenshots

# make sim: seeds 0..SEEDS-1 of the fault simulation, or replay one with SEED=S
SEEDS ?= 20000
SEED ?=

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Edgeward needs Python 3.11 or newer (found $$($(PYTHON) --version))" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing python3-venv"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null && \
			$(PYTHON) -m venv $(VENV); \
		else echo "cannot create a virtual environment: install python3-venv" >&2; exit 1; fi; }

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	@# compat mode puts the checkout on sys.path, so a package added later imports without
	@# a reinstall (the default finder only knows the packages present at install time)
	$(BIN)/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	@touch $@

# Mosquitto, PostgreSQL (and systemd-analyze) come from Debian's packages when run as root and missing.
system-deps:
	@./scripts/system-deps

demo: $(STAMP)
	@# without Mosquitto the demo runs the embedded amqtt broker from its own venv
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || ./scripts/broker-venv
	$(BIN)/edgeward demo

# two hub replicas on a throwaway PostgreSQL behind HAProxy, an edge and a device (docs/ha.md)
demo-ha: $(STAMP) system-deps
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || ./scripts/broker-venv
	$(BIN)/edgeward demo-ha

test: $(STAMP) system-deps
	$(BIN)/ruff check --no-cache .
	@# the pure cores carry a 100% branch coverage gate: the twin rules and the sync sessions
	$(BIN)/python -m pytest -q tests/unit/devicetwin tests/unit/session \
		--cov=devicetwin --cov=edgeward.session --cov-branch \
		--cov-report=term-missing:skip-covered --cov-fail-under=100
	@# three at a time on two cores (pytest-xdist: most of a test's time is spent waiting on
	@# real processes, and two workers left a core idle two fifths of the time: 6:23 against
	@# 7:21 in one sitting; worksteal: a worker left idle takes queued tests from another,
	@# which "load" never did, 5:26 against 6:39), then the tests whose premise is a timing or
	@# a load, alone (tests/conftest.py SERIAL)
	$(BIN)/python -m pytest -q -n 3 --dist worksteal -m "not serial" --ignore=tests/unit/devicetwin \
		--ignore=tests/unit/session --ignore=tests/package
	$(BIN)/python -m pytest -q -m serial --ignore=tests/unit/devicetwin \
		--ignore=tests/unit/session --ignore=tests/package

# Debian packages into dist/: edgeward-edge and edgeward-hub, for ARCH (default both: amd64 arm64)
ARCH ?=
package-deps:
	@./scripts/package-deps

deb: $(STAMP) package-deps
	$(BIN)/python packaging/deb/build.py $(foreach a,$(ARCH),--arch $(a))

# Builds the packages, lints them, and installs and runs them in Debian 12 and 13 roots under
# their own systemd (slow: the roots are made once and cached in ~/.cache/edgeward/roots)
package-test: $(STAMP) system-deps package-deps
	$(BIN)/python -m pytest -q tests/package

lint: $(STAMP)
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --check .

# make chaos: the long chaos run (1,000 faults, a new seed each time; SEED=S replays one)
CHAOS_FAULTS ?= 1000
chaos: $(STAMP) system-deps
	$(BIN)/python -m tests.chaos --faults $(CHAOS_FAULTS) $(if $(SEED),--seed $(SEED))

# make chaos-ha: the chaos run against 3 secure hub replicas on a throwaway PostgreSQL behind
# HAProxy (tests/chaos/replicas.py): replicas killed and stopped, their database connections
# terminated, edges' links broken; about 3-4 minutes (a new seed each time; SEED=S replays one)
CHAOS_HA_FAULTS ?= 50
chaos-ha: $(STAMP) system-deps
	$(BIN)/python -m tests.chaos --replicas 3 --faults $(CHAOS_HA_FAULTS) $(if $(SEED),--seed $(SEED))

# make screenshots: the web console's browser tests, keeping their screenshots in docs/console/
screenshots: $(STAMP) system-deps
	EDGEWARD_SCREENSHOTS=$(CURDIR)/docs/console $(BIN)/python -m pytest -q tests/integration/test_console.py

sim: $(STAMP)
	$(BIN)/python -m tests.sim $(if $(SEED),--seed $(SEED) --verbose,--seeds $(SEEDS))

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-broker .edgeward .edgeward-ha .pytest_cache .ruff_cache dist
