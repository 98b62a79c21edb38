# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup weights run test bench eval clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

weights: setup
	$(BIN)/python -m engine models fetch

run: weights
	$(BIN)/python -m bot

test: weights
	$(BIN)/python -m pytest -q

bench: weights
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) data/index data/eval
