# `make run` and `make test` work on a fresh clone: they build .venv from the pins.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install browser run test lint typecheck pytest bench faults soak fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes instamg 2>/dev/null || true  # the 0.1 distribution's name
	$(PY) -m pip install --quiet -c requirements.lock -e '.[demo,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# The demo users' passwords are published: they are made only when the server listens on
# loopback alone (and seed_demo itself refuses anything but the embedded default).
LOOPBACK := $(filter $(HOST),127.0.0.1 localhost ::1)
run: install
	$(PY) manage.py migrate --noinput
	$(if $(LOOPBACK),$(PY) manage.py seed_demo,@echo "HOST=$(HOST) is not loopback: no demo users")
	@echo "Serving on http://$(HOST):$(PORT)/$(if $(LOOPBACK),  (log in as alice or bob))"
	@# The task worker (notifications) runs beside the server and stops with it.
	$(PY) manage.py dm_worker & worker=$$!; trap 'kill $$worker 2>/dev/null' EXIT; \
		$(PY) -m daphne -b $(HOST) -p $(PORT) instamg.asgi:application

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

pytest: install browser
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The browser tests (tests/e2e) drive Debian's chromium (and a dbus-daemon): installed through apt when we
# are root (as `make bench` does for nginx), else a message saying what to install.
CHROMIUM_PATH ?= /usr/bin/chromium
export CHROMIUM_PATH
browser:
	@test -x "$(CHROMIUM_PATH)" || command -v "$(CHROMIUM_PATH)" >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing chromium (apt-get) for the browser tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "The browser tests need Chromium at $(CHROMIUM_PATH): run 'sudo apt-get install chromium'," \
				"or set CHROMIUM_PATH to a Chromium binary (make test CHROMIUM_PATH=...)"; \
			exit 1; \
		fi; }
	@test -x "$(CHROMIUM_PATH)" || command -v "$(CHROMIUM_PATH)" >/dev/null || { \
		echo "chromium is still missing at $(CHROMIUM_PATH) after apt-get install"; exit 1; }
	@# The notification tests click a notification as a desktop would, over a private D-Bus.
	@command -v dbus-daemon >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing dbus-daemon (apt-get) for the notification tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dbus-daemon >/dev/null; \
		else \
			echo "The notification tests need dbus-daemon: run 'sudo apt-get install dbus-daemon'"; \
			exit 1; \
		fi; }

test: lint typecheck pytest

bench: install
	@command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
	$(PY) -m bench $(BENCH_ARGS)

# Faults under load (Redis, a server, PostgreSQL, SQLite) and a 20-minute soak:
# make soak SOAK_ARGS="--minutes 2"; results in reliability/results/.
faults: install
	$(PY) -m reliability faults $(FAULTS_ARGS)

soak: install
	@command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
	$(PY) -m reliability soak $(SOAK_ARGS)

# Long fuzzing runs; make test runs short ones. Each prints its figures.
# make fuzz FUZZ_FRAMES=20000 FUZZ_HTTP_EXAMPLES=300
FUZZ_FRAMES ?= 10000
FUZZ_HTTP_EXAMPLES ?= 100
fuzz: install
	FUZZ_FRAMES=$(FUZZ_FRAMES) $(VENV)/bin/pytest tests/reliability/test_fuzz_frames.py \
		-k fuzzed -s -p no:cacheprovider --timeout 7200
	FUZZ_HTTP_EXAMPLES=$(FUZZ_HTTP_EXAMPLES) FUZZ_HTTP_PHASES=examples,coverage,fuzzing,stateful \
		$(VENV)/bin/pytest tests/reliability/test_fuzz_http.py -k every -s -p no:cacheprovider \
		--timeout 7200

clean:
	rm -rf $(VENV) var/*.sqlite3* staticfiles .pytest_cache .mypy_cache .ruff_cache .import_linter_cache dist build
