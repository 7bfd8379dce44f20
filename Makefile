# Atlas: two commands matter.
#   make lab   - set up .venv with what a reader needs (first time only), bring the reader's own
#                copy of the notebooks (workbook/, ignored by git) up to date, and start
#                JupyterLab on it, on 127.0.0.1; LAB_PORT=8890 picks the port, LAB_ARGS adds options
#   make test  - set up .venv with the test tools as well, then lint, unit tests, nbval over
#                every notebook, and every notebook run in JupyterLab in headless Chromium
# Everything else here is a helper for maintainers.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
comma := ,
# Two set-ups: a reader's (the package and JupyterLab) and a maintainer's (also the test and
# lint tools: pytest, nbval, playwright, dask, ruff, mypy, ...). Each is redone when pyproject.toml
# changes.
LAB_STAMP := $(VENV)/.atlas-lab-installed
STAMP := $(VENV)/.atlas-test-installed
LAB_PORT ?= 8888
LAB_ARGS ?=
# The reader's copy: JupyterLab saves answers and outputs here, never into notebooks/, so that
# git pull keeps working (tools/reader_copy.py never overwrites a notebook the reader changed).
WORKBOOK ?= workbook
# Jupyter refuses to start as root unless told; containers and CI machines often run as root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# Screenshots and timings of the browser tests.
export ATLAS_BROWSER_ARTEFACTS ?= $(CURDIR)/build/browser

.PHONY: lab test lint unit fast nbval browser notebooks bench clean

# The installer. uv (Astral's installer, a binary wheel from PyPI) resolves, downloads and
# installs in parallel, shows its progress, and leaves Python to compile a module's bytecode on
# its first import instead of compiling all ~7,700 files up front (the README gives the times
# and sizes measured). pip fetches uv into a throwaway folder first (a few seconds; uv is not
# kept in .venv). Where uv cannot be fetched, or its install fails, pip does the same install,
# with its progress bar; INSTALLER=pip chooses pip from the start.
INSTALLER ?= uv
UV_VERSION ?= 0.13.10
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check --progress-bar on

# Bytecode: the reader's set-up leaves each module to be compiled on its first import (the first
# JupyterLab start and the first notebook's imports then take a few seconds more, once; .venv
# stays smaller); under PYTHONDONTWRITEBYTECODE nothing would ever be kept, so uv compiles all up
# front, as it does for the test set-up, whose many kernels and processes start at once.
LAB_UV_OPTIONS := $(if $(PYTHONDONTWRITEBYTECODE),--compile-bytecode)
TEST_UV_OPTIONS := --compile-bytecode

# $(call install,EXTRAS,UV_OPTIONS): Atlas with EXTRAS, editable, into $(VENV), timed; one
# shell line.
install = start=$$(date +%s); status=1; \
	if [ "$(INSTALLER)" = uv ]; then \
		uv_dir=$$(mktemp -d); trap 'rm -rf "$$uv_dir"' EXIT; trap 'exit 130' INT TERM; \
		echo "[1/2] Fetching the installer uv $(UV_VERSION) from PyPI (a few seconds)"; \
		if $(BIN)/python -m pip install --quiet --disable-pip-version-check --target "$$uv_dir" \
				"uv==$(UV_VERSION)"; then \
			echo "[2/2] Installing Atlas with '.[$(1)]' and what it needs, with uv"; \
			"$$uv_dir/bin/uv" pip install --python $(BIN)/python $(2) -e '.[$(1)]' && status=0 \
				|| echo "uv failed (above); installing with pip instead"; \
		else echo "uv could not be fetched (above); installing with pip instead, slower"; fi; \
		rm -rf "$$uv_dir"; \
	fi; \
	if [ $$status -ne 0 ]; then \
		echo "Installing Atlas with '.[$(1)]' and what it needs, with pip"; \
		$(PIP_INSTALL) -e '.[$(1)]' && status=0; \
	fi; \
	if [ $$status -eq 0 ]; then echo "Installed in $$(( $$(date +%s) - start )) s."; fi; \
	exit $$status

# The virtual environment: created once, reinstalled when pyproject.toml changes.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else f"Atlas needs Python 3.11 or newer, found {v.major}.{v.minor}: run make with PYTHON=python3.11 (or newer)")'
	@echo "Creating the virtual environment $(VENV) (first run only)"
	@$(PYTHON) -m venv $(VENV)

$(LAB_STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing Atlas and JupyterLab into $(VENV) (first run, or pyproject.toml changed): about a minute, with progress below"
	@$(call install,lab,$(LAB_UV_OPTIONS))
	@touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing Atlas, JupyterLab and the test tools into $(VENV) (first run, or pyproject.toml changed): a minute or two, with progress below"
	@$(call install,lab$(comma)test,$(TEST_UV_OPTIONS))
	@touch $@ $(LAB_STAMP)

# The notebook sources (notebooks/src/) are hidden from JupyterLab's file browser: a reader opens
# the .ipynb files. hide_globs replaces jupyter_server's default list, so that list is repeated.
LAB_HIDE := src __pycache__ '*.pyc' '*.pyo' .DS_Store '*~'

lab: $(LAB_STAMP)
	@$(BIN)/python tools/reader_copy.py --target $(WORKBOOK)
	@echo "Starting JupyterLab on http://127.0.0.1:$(LAB_PORT)/ (Ctrl+C twice to stop)"
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
		--ServerApp.root_dir=$(WORKBOOK) $(foreach glob,$(LAB_HIDE),--ContentsManager.hide_globs=$(glob)) \
		$(ROOT_FLAG) $(LAB_ARGS)

test: lint unit nbval browser

# ruff, then mypy (strict about None and Optional; configured in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# --no-skips: a skipped test fails, except one that needs a Debian package this machine lacks
# (PostgreSQL, Redis, promtool: tests/programs.py), which skips naming the package, and fails
# too under CI=true (.ci/run installs them). `make lab` needs none of them.
unit: $(STAMP)
	$(BIN)/python -m pytest tests --no-skips --ignore=tests/browser

# The fast tier alone: no test that needs a socket, a child process or the wall clock
# (those carry the `live` marker). For a quick loop while editing.
fast: $(STAMP)
	$(BIN)/python -m pytest tests --no-skips --ignore=tests/browser -m "not live"

# Every notebook, executed cell by cell and compared with its committed outputs.
nbval: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=120 --no-skips -v -p no:cacheprovider \
		$(NOTEBOOKS)

# Every notebook as a reader uses it, in JupyterLab in Debian's Chromium (see
# tests/browser/conftest.py). Without Chromium these skip with a message, except with CI=true,
# where they fail.
browser: $(STAMP)
	$(BIN)/python -m pytest tests/browser -v -p no:cacheprovider \
		$(if $(filter-out 0 false,$(CI)),--no-skips); status=$$?; \
		echo "Browser test screenshots and timings: $(ATLAS_BROWSER_ARTEFACTS)"; exit $$status

# Rebuild every notebook from its source in notebooks/src/ and execute it top to bottom,
# so that the committed outputs are the ones a reader gets.
notebooks: $(STAMP)
	$(BIN)/python tools/build_notebooks.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sim.py
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_widgets.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
