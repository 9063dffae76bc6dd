# The two set-up commands: `make demo` and `make test`. Each installs what it needs into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: demo test install install-dev lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed only when none is importable, so an existing build is never replaced.
install: $(VENV)/bin/python
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e . 

# The browser test of `genzoo serve` uses Debian's chromium: installed here when running as root,
# best effort (the test is skipped without it).
install-dev: install
	$(PIP) install -q -e ".[dev]"
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
		echo "note: chromium not installed; the browser test of genzoo serve will be skipped"

demo: install
	$(VENV)/bin/genzoo demo $(DEMO_ARGS)

test: install-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

bench: install
	@for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
