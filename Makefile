# Interpretability workbench: `make run` starts the app, `make test` lints and runs the tests.
# Installs happen only when a requirements file is newer than its stamp inside .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8501

.PHONY: run test lint e2e clean-stamps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.stamp-runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

$(VENV)/.stamp-dev: requirements-dev.txt requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -r requirements-dev.txt
	$(BIN)/python -m pip install --no-deps --upgrade --target $(VENV)/tuned-lens $$(sed -n 's/^# apart: //p' requirements-dev.txt)
	touch $(VENV)/.stamp-runtime $@

run: $(VENV)/.stamp-runtime
	$(BIN)/streamlit run app.py --server.port=$(PORT)

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .

test: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

e2e: $(VENV)/.stamp-dev
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else \
	    echo "make e2e needs Debian's chromium at /usr/bin/chromium."; \
	    echo "Install it as root: apt-get update && apt-get install -y chromium (never 'playwright install')."; \
	    exit 1; \
	  fi; \
	fi
	INTERP_E2E=1 $(BIN)/python -m pytest -q tests/e2e

clean-stamps:
	rm -f $(VENV)/.stamp-runtime $(VENV)/.stamp-dev

# Benchmarks against TransformerLens and Captum (bench/run.py): writes BENCHMARKS.md and bench/scaling.png.
# DEVICE=cuda to use a GPU.
# transformer-lens and sae-lens are installed with --no-deps (sae-lens in a folder of its own); requirements-bench.txt
# says why. (tuned-lens, a test oracle, is installed the same way by the dev stamp: requirements-dev.txt.)
DEVICE ?= cpu

.PHONY: bench

$(VENV)/.stamp-bench: requirements-bench.txt $(VENV)/.stamp-dev
	$(BIN)/python -m pip install $$(grep -v '# sae-lens folder' requirements-bench.txt | sed -e 's/#.*//' | grep -v -e '^[[:space:]]*$$' -e '^transformer-lens')
	$(BIN)/python -m pip install --no-deps $$(grep -v '# sae-lens folder' requirements-bench.txt | sed -e 's/#.*//' | grep '^transformer-lens')
	$(BIN)/python -m pip install --no-deps --upgrade --target $(VENV)/sae-lens $$(grep '# sae-lens folder' requirements-bench.txt | sed -e 's/#.*//')
	touch $@

bench: $(VENV)/.stamp-bench
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else \
	    echo "The app workload needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium); it is skipped."; \
	  fi; \
	fi
	$(BIN)/python bench/run.py --device $(DEVICE)
