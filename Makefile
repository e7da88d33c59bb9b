# Quick start: `make serve` (embedded default models on 127.0.0.1:8000) and `make test`.
# Both create .venv and install the project on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test install bench

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: where a local CPU wheel is on pip's find-links it is taken,
	# so the project install below finds torch satisfied and pulls no CUDA packages.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

serve: $(BIN)/.installed
	$(BIN)/dwserve serve

# On a machine without CUDA, tests/conftest.py sets TRITON_INTERPRET=1 so the fused
# Triton kernels are checked for correctness by the interpreter.
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

# Into a git-ignored scratch folder: the committed, device-named results under benchmarks/results/
# are replaced only when asked (make bench BENCH_OUT=benchmarks/results, or --out benchmarks/results).
BENCH_OUT ?= benchmarks/results/local

bench: $(BIN)/.installed
	$(BIN)/dwserve bench ops --out $(BENCH_OUT)
	$(BIN)/dwserve bench models --out $(BENCH_OUT)
	@echo "make bench: results in $(BENCH_OUT)/ (ops-cpu.*, models-cpu.*)"
