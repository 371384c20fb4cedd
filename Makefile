# Two commands on a fresh machine: `make demo` (runs the main job on the embedded default) and
# `make test` (runs the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch that lies on this kind of machine; clusters bring their own build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint clean install install-dev

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.base
install-dev: $(VENV)/.dev

demo: $(VENV)/.base
	$(VENV)/bin/selfforcing demo --out outputs

test: $(VENV)/.dev
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check platform tests jobs serve tune benchmarks

clean:
	rm -rf outputs .pytest_cache
