# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8866
STORE ?= demo.db
STAMP := $(VENV)/.installed

.PHONY: demo test setup chromium postgresql bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,text]"
	touch $(STAMP)

setup: $(STAMP)

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium (needed by the browser tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(VENV)/bin/dcai-widgets serve --data digits --store $(STORE) --port $(PORT) --no-browser

postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian postgresql (the store tests start a private server with its initdb/pg_ctl)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

test: setup chromium postgresql
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/session_open.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
