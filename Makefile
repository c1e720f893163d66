# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The small CPU wheel. This machine's pip resolves it from the registry; elsewhere on Linux x86, PyPI's
# torch==2.13.0 is the CUDA build: make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
# Caches and outputs stay out of ../shared (read-only in CI).
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_HOME ?= $(CURDIR)/.cache/hf
export MPLBACKEND := Agg

.PHONY: venv test test-slow lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# The downstream integrations (sentence-transformers, TRL, lm-eval) for the tests that drive them; the demo
# does not need them. `ettin finetune colbert` builds its own environment on first use (docs/downstream.md).
DOWNSTREAM := $(VENV)/.installed-downstream
$(DOWNSTREAM): $(STAMP)
	$(BIN)/pip install -q -e ".[dev,downstream]"
	touch $(DOWNSTREAM)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

test: $(DOWNSTREAM)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-slow: $(DOWNSTREAM)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m slow

demo: $(STAMP)
	$(BIN)/ettin demo --out runs/demo

bench: $(STAMP)
	$(BIN)/python bench/bench_model.py

clean:
	rm -rf runs .cache .pytest_cache
