# Two commands do all the set-up on a fresh machine with Python >= 3.11:
#   make demo   — create .venv, install, run both Istio traffic-shifting tasks locally
#   make test   — create .venv, install the test extra, run the whole suite
# Also: make test-containers — build the image and walk the README's Containers section with podman
#   (root and apt-get needed; not part of make test)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-containers lint bench bench-capture run clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shiftproxy demo

run: $(STAMP)
	$(BIN)/shiftproxy run --config config/bookinfo --config config/tcp-echo

test: $(STAMP)
	$(BIN)/ruff check proxy tests benchmarks
	$(BIN)/python -m pytest -q

test-containers:
	sh tests/containers/run.sh

lint: $(STAMP)
	$(BIN)/ruff check proxy tests benchmarks

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.run

# the transparent-capture path against the explicit listeners; root, in a network namespace of its own
bench-capture: $(STAMP)
	unshare -n $(BIN)/python -m benchmarks.capture

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
