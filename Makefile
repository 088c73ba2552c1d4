# Two commands on a fresh Debian machine (as root): `make run` and `make test`.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
PYTHON  ?= python3

.PHONY: run test lint format system-packages bench bench-metering bench-stream clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# Real PHP judges the PHP formats; real PostgreSQL and redis-server (started by the tests on
# loopback, in temporary directories) hold the limits across workers and hosts; headless
# Chromium reads the /api stream with the documented fetch reader.
system-packages:
	@if ! command -v php >/dev/null 2>&1 || ! php -m 2>/dev/null | grep -qx curl || ! php -m 2>/dev/null | grep -qx SimpleXML \
		|| ! command -v redis-server >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| ! test -x /usr/bin/chromium; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			php-cli php-curl php-xml postgresql redis-server chromium; fi

run: $(STAMP)
	@bash bin/run

# Four test processes, each taking whole modules (a module's served gateway boots once): most
# tests wait on sockets and subprocesses, so four overlap well even on two cores.
PYTEST_WORKERS ?= 4

test: $(STAMP) system-packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check proxy config tests bench wsgi.py

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format proxy config tests bench wsgi.py

bench: $(STAMP)
	$(PY) bench/gateway_bench.py

# What metering (reservation + usage row) costs per call, on SQLite and a private PostgreSQL.
bench-metering: $(STAMP) system-packages
	$(PY) bench/metering_bench.py

# Time to first chunk of a streamed chat: through the gateway versus straight to the stub.
bench-stream: $(STAMP)
	$(PY) bench/stream_bench.py

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .hypothesis
