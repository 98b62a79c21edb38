# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup weights run test unit lint bench eval clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# GPU=1 (make setup GPU=1, make test GPU=1): TensorFlow with CUDA, and onnxruntime-gpu, for GPU embedding (Linux x86-64, NVIDIA driver).
GPU ?= 0
comma := ,
EXTRAS := dev$(if $(filter 1 yes true,$(GPU)),$(comma)gpu)
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

$(STAMP): pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	@# tensorflow-cpu (older set-ups) and tensorflow both provide the `tensorflow` module: keep only one.
	$(BIN)/pip uninstall --quiet --yes tensorflow-cpu 2>/dev/null || true
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	@# onnxruntime and onnxruntime-gpu (the gpu extra) both provide the `onnxruntime` module: keep only the GPU one.
	$(if $(filter 1 yes true,$(GPU)),$(BIN)/pip uninstall --quiet --yes onnxruntime && $(BIN)/pip install --quiet --force-reinstall --no-deps "onnxruntime-gpu>=1.20$(comma)<2")
	touch $@

setup: $(STAMP)

weights: setup
	$(BIN)/python -m engine models fetch

run: weights
	$(BIN)/python -m bot

test: weights
	$(BIN)/python -m pytest -q

# The fast layer: rendering, paging, retries, parsing, the LRU, shared state, photo marking (no networks loaded).
unit: setup
	$(BIN)/python -m pytest -q tests/test_bot_units.py tests/test_bot_photos_units.py

# ruff (lint and format) and mypy on the engine and the bot: CI runs it before the tests.
lint: setup
	$(BIN)/ruff check engine bot tests benchmarks migrations
	$(BIN)/ruff format --check engine bot tests benchmarks migrations
	$(BIN)/mypy

bench: weights
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) data/index data/eval
