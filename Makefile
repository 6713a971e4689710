# Two commands do all the set-up on a fresh machine with Python >= 3.11:
#   make demo   — create .venv, install, run both Istio traffic-shifting tasks locally
#   make test   — create .venv, install the test extra, run the whole suite
# Also: make test-containers — build the image and walk the README's Containers section with podman
#   (root and apt-get needed; not part of make test)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-containers lint bench bench-capture run clean browser

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

test: $(STAMP) browser
	$(BIN)/ruff check proxy tests benchmarks
	$(BIN)/python -m pytest -q

# the /ui browser test needs Debian's headless chromium and its driver: installed when run as root and
# missing; otherwise (or if apt-get fails) that one test is skipped and says why
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
			|| echo "chromium not installed: the /ui browser test will be skipped"; \
	else echo "not root or no apt-get: chromium not installed, the /ui browser test will be skipped"; fi

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
