# Atlas: two commands matter.
#   make lab   - set up .venv (first time only) and start JupyterLab on notebooks/, on 127.0.0.1
#   make test  - the same set-up, then lint, unit tests, nbval over every notebook, and every
#                notebook run in JupyterLab in headless Chromium (tests/browser)
# Everything else here is a helper for maintainers.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.atlas-installed
LAB_PORT ?= 8888
LAB_ARGS ?=
# Jupyter refuses to start as root unless told; containers and CI machines often run as root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# Screenshots and timings of the browser tests.
export ATLAS_BROWSER_ARTEFACTS ?= $(CURDIR)/build/browser

.PHONY: lab test lint unit fast nbval browser notebooks bench clean

# The virtual environment: created once, reinstalled when pyproject.toml changes.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 10) else f"Atlas needs Python 3.10 or newer, found {v.major}.{v.minor}: run make with PYTHON=python3.1x")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[lab,test]'
	@touch $@

lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
		--ServerApp.root_dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

test: lint unit nbval browser

# ruff, then mypy (strict about None and Optional; configured in pyproject.toml). The type
# stubs of pandas and scipy need Python 3.11, so on 3.10 the type check says so and stops there.
lint: $(STAMP)
	$(BIN)/ruff check .
	@if $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		echo "$(BIN)/mypy"; $(BIN)/mypy; \
	else echo "mypy: the type check needs Python 3.11 or newer (pandas-stubs); not run here"; fi

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
