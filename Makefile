# skyops: two commands on a fresh Debian machine with Python 3.11.
#   make demo   run the main job on the embedded default and print its summary
#   make test   run the test suite (unit, integration with real PostgreSQL/Airflow/tools, e2e)
# Both create .venv from the pinned requirements.lock and install the Astromatic tools
# from Debian when run as root.

PYTHON      ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(VENV)/bin/pip
STAMP       := $(VENV)/.skyops-installed
SKYOPS_HOME ?= $(CURDIR)/.skyops
TOOLS       := source-extractor SWarp psfex scamp
TOOL_PKGS   := source-extractor swarp psfex scamp
PYTEST_ARGS ?=
export SKYOPS_HOME

.PHONY: demo test tools services venv lock bench clean help

help:
	@echo "make demo    run the main job (embedded SQLite, synthetic archive, local executor)"
	@echo "make test    run all tests"
	@echo "make bench   run the benchmarks in bench/ and print ratios"
	@echo "make lock    re-pin requirements.lock from requirements.in"

venv: $(STAMP)

$(STAMP): requirements.lock setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (apt-get install python3.11 python3.11-venv)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.lock
	$(PIP) install --quiet --no-deps -e .
	@touch $(STAMP)

# The Astromatic tools come from Debian; install them when root, otherwise say what to do.
tools:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Astromatic tools:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TOOL_PKGS) >/dev/null; \
	  else \
	    echo "error: missing$$missing; run: sudo apt-get install $(TOOL_PKGS)"; exit 1; \
	  fi; \
	fi

# PostgreSQL (provenance/archive tests) and Redis (Celery) on 127.0.0.1; start them if down.
services:
	@$(PY) -m skyops.devservices ensure

demo: venv tools
	@$(PY) -m skyops.operators.demo

test: venv tools services
	$(VENV)/bin/pytest -q -n 2 --dist loadfile tests $(PYTEST_ARGS)

bench: venv tools services
	$(PY) -m bench

lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.in
	$(PIP) freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) .skyops *.egg-info
