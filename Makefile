# make setup : system GDAL (libgdal-dev) if missing, .venv with requirements.txt and matching GDAL bindings
# make demo  : setup, then every step on the demo scene (data/aberystwyth.toml)
# make test  : setup, Chromium and gdal-bin for the report and COG tests (test-setup), then the test suite
# make bench : setup, then the tutorial-size performance benchmark
# make bench-scale : setup, then a 10980 x 10980 px scene through all four steps, tiled on a Dask LocalCluster
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STEPS := $(wildcard Step0_*.py Step1_*.py Step2_*.py Step3_*.py)

.PHONY: setup test-setup demo test bench bench-scale
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@command -v gdal-config >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgdal-dev; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation "GDAL==$$(gdal-config --version)"
	$(PY) -c "from osgeo import gdal, gdal_array; import tensorflow"
	touch $@

demo: setup
	@set -e; for step in $(STEPS); do echo "== $$step"; $(PY) $$step; done

# headless Chromium renders report.html in the tests; gdalinfo reports the COG layout (make demo needs neither)
test-setup: setup
	@command -v chromium >/dev/null && command -v gdalinfo >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium gdal-bin; }

test: test-setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_step0.py

bench-scale: setup
	$(PY) benchmarks/bench_scale.py
