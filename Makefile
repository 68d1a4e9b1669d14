# The README's two commands are `make train` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: install
	$(BIN)/zoo-train lenet_digits

# Test files run in parallel processes (pytest-xdist), one per core up to 4, a file's tests in
# one process so that its module fixtures (short training runs) are built once. Each process's
# TensorFlow computes an op on one thread (TF_NUM_INTRAOP_THREADS), not on every core: with one
# process per core, more threads only contend (on a 2-core CPU, three test files ran in 157 s
# so, in 177 s without).
PYTEST := TF_NUM_INTRAOP_THREADS=$${TF_NUM_INTRAOP_THREADS:-1} $(BIN)/python -m pytest -q \
	-n auto --maxprocesses 4 --dist loadfile

test: install
	$(PYTEST) -m "not slow" --durations=25

test-all: install
	$(PYTEST)

# Latency and size of every export of a small trained model, beside its Keras model.
bench: install
	test -f runs/bench-digits/metrics.json || $(BIN)/zoo-train lenet_digits --output runs/bench-digits
	$(BIN)/zoo bench --export runs/bench-digits

lint: install
	$(BIN)/ruff check zoo zoo_cli tests benchmarks
	$(BIN)/ruff format --check zoo zoo_cli tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
