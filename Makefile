# softswitch: `make run` starts the switch on its embedded default config,
# `make test` runs the whole test suite. Both build the virtualenv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= $(shell for p in python3.11 python3.12 python3; do command -v $$p >/dev/null 2>&1 && { echo $$p; break; }; done)
CONFIG ?=
PYTEST_ARGS ?=

.PHONY: run test bench lint format check clean

$(STAMP): pyproject.toml softswitch/__init__.py
	@$(PYTHON) -c 'import sys; v=sys.version_info[:2]; sys.exit(0 if (3,11)<=v<(3,13) else "softswitch needs Python 3.11 or 3.12 (the pjsua2 wheels stop at 3.12); found %d.%d" % v)'
	@$(PYTHON) -m venv $(VENV) || { echo "cannot create a virtualenv: on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/softswitch run $(if $(CONFIG),--config $(CONFIG))

check: $(STAMP)
	$(VENV)/bin/softswitch check $(if $(CONFIG),--config $(CONFIG))

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check softswitch tests bench examples
	$(VENV)/bin/ruff format --check softswitch tests bench examples

format: $(STAMP)
	$(VENV)/bin/ruff format softswitch tests bench examples
	$(VENV)/bin/ruff check --fix softswitch tests bench examples

clean:
	rm -rf $(VENV) build *.egg-info
