# Two commands on a fresh Debian machine (as root): `make run` and `make test`.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
PYTHON  ?= python3

.PHONY: run test lint format system-packages bench bench-metering bench-stream bench-peers \
	bench-tools clean

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

# LiteLLM in a venv of its own, pinned: 1.106.12 is the newest whose [proxy] extra installs
# from the registry (later ones need a `litellm-proxy` package it does not serve).
LITELLM_VENV  := .bench-venv-litellm
LITELLM_STAMP := $(LITELLM_VENV)/.installed-stamp
LITELLM_SPEC  ?= litellm[proxy]==1.106.12

# The gateway beside its peers (bare Flask, a minimal SDK pass-through, LiteLLM with
# PEERS=litellm) behind wrk, against an nginx stub upstream: bench/README.md.
bench-peers: $(STAMP) bench-tools $(if $(findstring litellm,$(PEERS)),$(LITELLM_STAMP))
	$(PY) bench/peers.py

bench-tools:
	@if ! command -v wrk >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx; fi

$(LITELLM_STAMP):
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -q --upgrade pip
	$(LITELLM_VENV)/bin/pip install -q '$(LITELLM_SPEC)'
	@touch $@

clean:
	rm -rf $(VENV) $(LITELLM_VENV) instance .pytest_cache .ruff_cache .hypothesis
