# `make run` and `make test` work on a fresh clone: they build .venv from the pins.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint typecheck pytest bench faults soak fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	@echo "Serving on http://$(HOST):$(PORT)/  (log in as alice or bob)"
	$(PY) -m daphne -b $(HOST) -p $(PORT) instamg.asgi:application

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

pytest: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

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
	rm -rf $(VENV) var/*.sqlite3* staticfiles .pytest_cache .mypy_cache .ruff_cache
