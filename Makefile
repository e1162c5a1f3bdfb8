# Two commands on a fresh machine: `make demo` runs the whole system with a simulated call,
# `make test` runs the test suite. Both create the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SPEAKERS_STAMP := $(VENV)/.speakers-stamp

.PHONY: demo up test lint check bench clean speakers

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## broker + ingest + transcriber + bridge, then a sample call, live
	$(VENV)/bin/callscribe up --demo

up: $(STAMP)  ## the whole system, waiting for your calls
	$(VENV)/bin/callscribe up

# The 'speakers' extra without its unused dependencies (torch...): only its weights file is
# read (see pyproject.toml). `make test` needs it; `make demo` does not.
$(SPEAKERS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-deps 'resemblyzer==0.1.4'
	touch $(SPEAKERS_STAMP)

speakers: $(SPEAKERS_STAMP)  ## speaker separation of mixed calls (the 'speakers' extra)

test: $(STAMP) $(SPEAKERS_STAMP)  ## the test suite (real broker, real tiny.en, real sockets)
	@if [ "$$(id -u)" = 0 ] && [ "$$CALLSCRIBE_TEST_BROWSER" != 0 ] && ! command -v chromium >/dev/null; then \
	  echo "make test: the web-view test will apt-get install Debian's chromium (about 100 packages);" \
	       "CALLSCRIBE_TEST_BROWSER=0 make test skips it"; fi
	$(PY) -m pytest

lint: $(STAMP)  ## ruff and mypy --strict
	$(VENV)/bin/ruff check workers tests bench
	$(VENV)/bin/mypy

check: lint test

bench: $(STAMP)  ## end-of-utterance -> liveCalls latency, 4 calls
	$(PY) -m bench.latency --calls 4 --seconds 60

clean:
	rm -rf $(VENV) artifacts .callscribe *.egg-info
