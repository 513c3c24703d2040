# guatu 挂图 — two commands: `make run` and `make test` (see README.md).
# Everything missing is installed here: Debian packages, the venv, front-end assets, the
# local PostGIS. Running a target again only redoes what changed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_SYS ?= $(shell command -v python3.11 || command -v python3)
VENV       := .venv
BIN        := $(VENV)/bin
STAMPS     := .stamps
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ASSET_DIR  := web/static/vendor
NPM_DIR    := $(STAMPS)/npm
# fonts-noto-cjk: the wall map is set in the Simplified Chinese face of its collections
CJK_FONTS  := /usr/share/fonts/opentype/noto

export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help run test system system-test venv assets database demo lint bench screenshots stop

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

run: system venv assets ## install what is missing, start PostGIS, migrate, load the demo, serve on :8000
	exec $(BIN)/guatu serve --prepare

test: system system-test venv assets database ## the same set-up, then lint, types and every test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: venv ## ruff and mypy only
	$(BIN)/ruff check .
	$(BIN)/mypy

# Debian packages, only those missing. PostgreSQL is skipped when DATABASE_URL names a server.
system:
	@missing=""; \
	if [ -z "$${DATABASE_URL:-}" ]; then \
	  [ -x /usr/lib/postgresql/15/bin/initdb ] || missing="$$missing postgresql-15"; \
	  [ -f /usr/share/postgresql/15/extension/postgis.control ] || missing="$$missing postgresql-15-postgis-3"; \
	fi; \
	[ -n "$(PYTHON_SYS)" ] || missing="$$missing python3"; \
	{ [ -n "$(PYTHON_SYS)" ] && $(PYTHON_SYS) -c 'import venv, ensurepip' 2>/dev/null; } || missing="$$missing python3-venv"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	{ [ -f $(CJK_FONTS)/NotoSansCJK-Regular.ttc ] && [ -f $(CJK_FONTS)/NotoSansCJK-Bold.ttc ]; } || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	  echo "==> 安装系统软件包 installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

# nginx is for the reverse-proxy tests, which start their own from a private config on a free
# port. Debian's package would start a system nginx on port 80 (and fail to install if that port
# is taken): while it installs, a policy-rc.d (unless the machine has one) forbids service
# starts, and the unit it enables is disabled again. guatu never uses that system nginx.
system-test:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v pdftoppm >/dev/null || missing="$$missing poppler-utils"; \
	[ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v ogrinfo >/dev/null || missing="$$missing gdal-bin"; \
	if [ -n "$$missing" ]; then \
	  echo "==> 安装测试用软件包 installing test packages:$$missing"; \
	  $(SUDO) apt-get update -q; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    trap '$(SUDO) rm -f /usr/sbin/policy-rc.d' EXIT; \
	    printf '#!/bin/sh\n# guatu make system-test: no service starts while test packages install\nexit 101\n' \
	      | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
	    $(SUDO) chmod 755 /usr/sbin/policy-rc.d; \
	  fi; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	  case "$$missing" in *nginx*) \
	    if [ -d /run/systemd/system ]; then $(SUDO) systemctl disable --now nginx >/dev/null 2>&1 || true; fi;; \
	  esac; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	@echo "==> Python 环境 venv ($(PYTHON_SYS))"
	[ -x $(BIN)/python ] || $(PYTHON_SYS) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

# Front-end libraries from the npm registry, pinned by web/package-lock.json, copied into
# web/static/vendor (git-ignored): the app serves them itself, no CDN.
assets: $(ASSET_DIR)/.installed

$(ASSET_DIR)/.installed: web/package.json web/package-lock.json
	@echo "==> 前端资源 front-end assets (npm ci)"
	mkdir -p $(NPM_DIR) $(ASSET_DIR)/leaflet $(ASSET_DIR)/swagger-ui $(ASSET_DIR)/vectorgrid $(ASSET_DIR)/geoman \
	         $(ASSET_DIR)/tabulator $(ASSET_DIR)/maplibre $(ASSET_DIR)/protomaps
	cp web/package.json web/package-lock.json $(NPM_DIR)/
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	cp -r $(NPM_DIR)/node_modules/leaflet/dist/leaflet.js $(NPM_DIR)/node_modules/leaflet/dist/leaflet.css \
	      $(NPM_DIR)/node_modules/leaflet/dist/images $(NPM_DIR)/node_modules/leaflet/LICENSE $(ASSET_DIR)/leaflet/
	cp $(NPM_DIR)/node_modules/swagger-ui-dist/swagger-ui-bundle.js $(NPM_DIR)/node_modules/swagger-ui-dist/swagger-ui.css \
	   $(NPM_DIR)/node_modules/swagger-ui-dist/LICENSE $(ASSET_DIR)/swagger-ui/
	cp $(NPM_DIR)/node_modules/leaflet.vectorgrid/dist/Leaflet.VectorGrid.bundled.min.js \
	   $(NPM_DIR)/node_modules/leaflet.vectorgrid/package.json $(ASSET_DIR)/vectorgrid/
	cp $(NPM_DIR)/node_modules/@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.min.js \
	   $(NPM_DIR)/node_modules/@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.css \
	   $(NPM_DIR)/node_modules/@geoman-io/leaflet-geoman-free/LICENSE $(ASSET_DIR)/geoman/
	cp $(NPM_DIR)/node_modules/tabulator-tables/dist/js/tabulator.min.js \
	   $(NPM_DIR)/node_modules/tabulator-tables/dist/css/tabulator.min.css \
	   $(NPM_DIR)/node_modules/tabulator-tables/LICENSE $(ASSET_DIR)/tabulator/
	cp $(NPM_DIR)/node_modules/maplibre-gl/dist/maplibre-gl-csp.js \
	   $(NPM_DIR)/node_modules/maplibre-gl/dist/maplibre-gl-csp-worker.js \
	   $(NPM_DIR)/node_modules/maplibre-gl/dist/maplibre-gl.css \
	   $(NPM_DIR)/node_modules/maplibre-gl/LICENSE.txt \
	   $(NPM_DIR)/node_modules/@maplibre/maplibre-gl-leaflet/leaflet-maplibre-gl.js $(ASSET_DIR)/maplibre/
	cp $(NPM_DIR)/node_modules/protomaps-leaflet/dist/protomaps-leaflet.js \
	   $(NPM_DIR)/node_modules/protomaps-leaflet/LICENSE $(ASSET_DIR)/protomaps/
	touch $@

database: venv ## start the local PostGIS (unless DATABASE_URL is set) and migrate
	$(BIN)/guatu db upgrade

demo: database ## (re)load the demo street; idempotent
	$(BIN)/guatu demo load

screenshots: system system-test venv assets database ## refresh docs/screenshots from the browser tests
	GUATU_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest -q tests/test_map_page.py tests/test_upload_page.py tests/test_checks_page.py tests/test_edit_page.py tests/test_csrf_page.py tests/test_cockpit_page.py tests/test_ledger_page.py tests/test_exports_page.py tests/test_mapping_page.py \
	  tests/test_problems_page.py tests/test_contracts_page.py tests/test_excel_page.py

bench: system system-test database ## benchmarks in bench/ (guatu beside its peer in one run)
	@command -v ogr2ogr >/dev/null || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends gdal-bin; }
	$(BIN)/python bench/goals.py --reset
	$(BIN)/python bench/bbox_features.py
	$(BIN)/python bench/import_parcels.py --n $${BENCH_PARCELS:-100000} --memory-mb $${BENCH_MEMORY_MB:-200}
	$(BIN)/python bench/check_coverage.py
	$(BIN)/python bench/county_checks.py --parcels $${BENCH_CHECK_PARCELS:-1000000}
	$(BIN)/python bench/tile_serving.py --parcels $${BENCH_TILE_PARCELS:-1000000}
	$(BIN)/python bench/gis_formats.py --import-n $${BENCH_GIS_IMPORT:-100000} --parcels $${BENCH_GIS_PARCELS:-100000}
	$(BIN)/python bench/map_page.py
	$(BIN)/python bench/ledger_page.py
	$(BIN)/python bench/workers.py --rounds $${BENCH_WORKERS_ROUNDS:-2}
	$(BIN)/python bench/hostile_inputs.py
	$(BIN)/python bench/partitioning.py --per-county $${BENCH_COUNTY_PARCELS:-250000} --counties $${BENCH_COUNTIES:-4}
	$(BIN)/python bench/soak.py --minutes $${BENCH_SOAK_MINUTES:-10}
	$(BIN)/python bench/replica.py --parcels $${BENCH_REPLICA_PARCELS:-100000}
	$(BIN)/python bench/goals.py

stop: venv ## stop the local PostGIS
	$(BIN)/guatu db stop
