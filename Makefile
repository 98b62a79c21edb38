# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup weights run test unit lint image-test bench eval clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# `convert`: TensorFlow and Keras, which `models fetch` needs to convert the networks to ONNX (the keras runtime and
# vgg16 run on them too). A plain `pip install .` has none of it: the bot and the search run on ONNX Runtime once
# MODELS_DIR holds the graphs.
# GPU=1 (make setup GPU=1, make test GPU=1): TensorFlow with CUDA, and onnxruntime-gpu, for GPU embedding (Linux x86-64, NVIDIA driver).
GPU ?= 0
comma := ,
EXTRAS := dev$(comma)convert$(if $(filter 1 yes true,$(GPU)),$(comma)gpu)
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

# Every test, in folders by area: tests/{unit,engine,stores,bot,processes}/ (shared helpers in tests/support/).
test: weights
	$(BIN)/python -m pytest -q

# The fast layer, in seconds: the tests marked `unit` (tests/unit/: rendering, paging, retries, parsing, shared state,
# photo marking, names, docs and deploy files; no network loaded). Other markers: slow, postgres, milvus, ray, e.g.
# `$(BIN)/python -m pytest -m "not slow"`.
unit: setup
	$(BIN)/python -m pytest -q -m unit

# ruff (lint and format), mypy on the engine and the bot, and the import rules (.importlinter: engine never imports
# bot, nothing on the ONNX path imports TensorFlow, ...): CI runs it before the tests.
lint: setup
	$(BIN)/ruff check engine bot tests benchmarks migrations
	$(BIN)/ruff format --check engine bot tests benchmarks migrations
	$(BIN)/mypy
	$(BIN)/lint-imports

# Builds the Docker image (TensorFlow converts in a build stage; the runtime stage has ONNX Runtime and the graphs)
# and drives the bot inside it through the fake Bot API. Not part of `make test`: it needs podman or docker, and
# stops with status 2 where neither is installed. IMAGE_BUILD_FLAGS adds build flags; IMAGE names the image.
IMAGE ?= facesearch-bot
image-test: setup
	$(BIN)/python tests/drive_image.py --image $(IMAGE)

bench: weights
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) data/index data/eval
