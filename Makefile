# equiv-tools: `make lab` to explore, `make test` to check everything.
# Override TORCH_SPEC for a GPU build, e.g. make lab TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>".
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
LAB_ARGS ?=
PYTEST_ARGS ?=
BIN = $(VENV)/bin
STAMP = $(VENV)/.equiv-tools-installed
# JupyterLab refuses to start as root (containers, CI) unless told it may
ROOT_ARGS = $(if $(filter 0,$(shell id -u)),--allow-root)
NBVAL = --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg
# torch's portable CPU kernels on one thread: other rounding, as on another machine
PORTABLE_ENV = ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1

.PHONY: install lab test lint-imports test-unit test-notebooks test-notebooks-portable test-browser test-slow screenshots handout clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_ARGS) $(LAB_ARGS)

test: lint-imports test-unit test-notebooks test-notebooks-portable
	@if [ -x /usr/bin/chromium ]; then $(MAKE) --no-print-directory test-browser; \
	else echo "skipping the browser check: /usr/bin/chromium is not installed (apt-get install chromium)"; fi

# the package's layers (pyproject.toml [tool.importlinter]): nothing imports a layer above it
lint-imports: $(STAMP)
	$(BIN)/lint-imports --no-cache

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest notebooks $(NBVAL) $(PYTEST_ARGS)

test-notebooks-portable: $(STAMP)
	$(PORTABLE_ENV) $(BIN)/python -m pytest notebooks $(NBVAL) $(PYTEST_ARGS)

test-browser: $(STAMP)
	$(BIN)/python -m pytest -m browser tests/test_browser.py $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow tests $(PYTEST_ARGS)

# the browser checks, saving their screenshots over docs/browser_explorer.png, docs/browser_map_viewer.png and docs/browser_patching.png
screenshots: $(STAMP)
	EQUIV_TOOLS_SCREENSHOT_DIR=$(CURDIR)/docs $(BIN)/python -m pytest -m browser tests/test_browser.py $(PYTEST_ARGS)

# the notebooks without their solution cells (tagged `solution`), for a class: make handout OUT=folder
handout: $(STAMP)
	@if [ -z "$(OUT)" ]; then echo "make handout needs a folder: make handout OUT=handout" >&2; exit 2; fi
	$(BIN)/jupyter nbconvert --to notebook --log-level WARN --TagRemovePreprocessor.enabled=True \
		--TagRemovePreprocessor.remove_cell_tags=solution --output-dir "$(OUT)" notebooks/[0-9]*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache
