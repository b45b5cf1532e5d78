# CCGSC: `make run` starts the platform with demo campaigns and a native worker;
# `make test` runs lint, types and the whole test suite. Both set up .venv themselves.

PYTHON ?= python3
PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
export UV_PROJECT_ENVIRONMENT := $(VENV)
export ZIG_GLOBAL_CACHE_DIR := $(CURDIR)/var/zig-cache

.PHONY: run test lint typecheck jstest node pytest bench kernels vendor clean

# The gpu extra (wgpu) too: the tests run gpu kernels on Mesa's lavapipe (.ci/run installs it).
$(VENV)/.synced: pyproject.toml uv.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(VENV)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(VENV)/bin/uv sync --frozen --quiet --extra gpu
	@touch $@

venv: $(VENV)/.synced

# A local trial: you are this server's admin, so new campaigns are approved at once and the
# worker started next to the server runs them (CAMPAIGN_AUTO_APPROVE=false to see approval);
# workers on this machine count as distinct networks, so a quorum of 2 can complete here
# (ORIGIN_IGNORES_LOOPBACK=false to see the production rule).
run: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo
	@echo "Command line: $(PY) manage.py issue_token --login http://127.0.0.1:$(PORT) (then .venv/bin/ccgsc ...)"
	CAMPAIGN_AUTO_APPROVE=$${CAMPAIGN_AUTO_APPROVE:-true} \
	  ORIGIN_IGNORES_LOOPBACK=$${ORIGIN_IGNORES_LOOPBACK:-true} \
	  $(PY) manage.py serve --port $(PORT) --with-worker

# The browser code's checkers (eslint, tsc), pinned in package.json and package-lock.json and
# installed from the npm registry into node_modules/ (only they: nothing of it is served).
node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

node: node_modules/.installed

lint: venv node
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	node_modules/.bin/eslint .

typecheck: venv node
	$(VENV)/bin/mypy .
	node_modules/.bin/tsc -p tsconfig.json

# The harness's unit tests in Node (tests/browser/js/); pytest runs them too
# (tests/test_browser_js.py), this target is for a quick loop while editing static/js.
jstest:
	node --test tests/browser/js/

pytest: venv
	$(VENV)/bin/pytest -n $${PYTEST_WORKERS:-2} --dist loadgroup

test: lint typecheck pytest

bench: venv
	$(PY) -m bench
	$(PY) -m bench.browser_vs_native
	$(PY) -m bench.gpu_browser
	$(PY) -m bench.gpu
	$(PY) -m bench scale

kernels: venv
	$(PY) kernels/build.py

# Refresh the vendored browser libraries (static/vendor/) from npm, pinned in package.json.
vendor:
	scripts/vendor-js.sh

clean:
	rm -rf $(VENV) node_modules var/staticfiles .mypy_cache .ruff_cache .pytest_cache
