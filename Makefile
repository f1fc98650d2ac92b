# The two commands of the README: `make quickstart` and `make test`.
# Each sets up its own environment in .venv the first time.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: quickstart test bench

# The quickstart installs only what it needs (rx_magic, a kernel, nbclient, numpy, matplotlib); the tests, all of it.
# --no-compile: pip would byte-compile all ~3900 installed modules (jedi, debugpy, numpy's tests...), which
# took as long as the rest of the install; the notebook compiles the ~1000 it imports, once.
$(VENV)/.quickstart: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile -e '.[quickstart]'
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[quickstart,test]'
	touch $@ $(VENV)/.quickstart

quickstart: $(VENV)/.quickstart
	$(PY) notebooks/run.py notebooks/01-quickstart.ipynb

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_local.py

# Rewrites the README's generated sections (the %%remote options, the %rx commands) from the magics' own help.
.PHONY: readme
readme: $(VENV)/.installed
	$(PY) tests/readme_sections.py
