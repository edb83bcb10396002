# The README's quick start: `make run` and `make test`, each on a fresh clone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: install test-tools run test lint docs docs-generate docs-build verify containers soak bench train migrate lock clean

install: $(VENV)/.installed

# What `make run` needs: the serving lock, honcho, and the package. `make install` (the
# tests' and tools') adds the development lock on top, with the same serving pins.
$(VENV)/.serving: requirements-run.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-run.txt
	$(BIN)/pip install --quiet --no-deps --editable .
	touch $@

$(VENV)/.installed: requirements-dev.txt pyproject.toml $(VENV)/.serving
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

# What the tests drive besides Python: Debian's chromium (the web page's end-to-end
# test; Playwright's own browser download cannot work here) and nginx (the deployment
# and soak tests; Debian starts it, the tests run their own), and from npm (package.json)
# newman, which runs the Postman collection, and axe-core, the accessibility check.
test-tools: node_modules/.installed
	command -v chromium >/dev/null && command -v nginx >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium nginx)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The locks, from pyproject.toml: every package beneath it pinned, with its hashes.
# requirements.txt serves (Heroku, the image); -run adds honcho for `make run`; -train
# adds training and file work; -dev adds the tests and tools. The pins already there are kept unless pyproject.toml
# asks otherwise; `make lock UPGRADE=--upgrade` takes the newest. LOCK_DIR: elsewhere
# (tests/test_locks.py checks that the committed locks are what this makes).
LOCK_DIR ?= .
LOCK := $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 \
	--custom-compile-command "make lock" $(UPGRADE)
lock: install
	$(LOCK) -o $(LOCK_DIR)/requirements.txt
	$(LOCK) --extra run -o $(LOCK_DIR)/requirements-run.txt
	$(LOCK) --extra train -o $(LOCK_DIR)/requirements-train.txt
	$(LOCK) --extra train --extra run --extra dev -o $(LOCK_DIR)/requirements-dev.txt

# Serves as Heroku would: the Procfile's web process on $(PORT), and its worker (the
# change feed's webhook deliveries), run together by honcho.
run: $(VENV)/.serving
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho start --port $(PORT) web worker

# A candidate model, filed in the database's registry (served by nobody until
# `nomads-cluster promote VERSION`); the committed model/ changes only by hand.
train: install
	$(BIN)/nomads-cluster train

# The store's schema, on $DATABASE_URL (default: SQLite in instance/).
migrate: install
	$(BIN)/nomads-cluster db upgrade

# Style, and the architecture: layers imported downwards only, no import cycles
# (import-linter's contracts in pyproject.toml; docs/architecture.md).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The documentation site: a broken link, a missing page or an anchor that is not there
# fails the build (strict). docs-generate writes the pages made from the code (the API
# reference, the settings table, the heatmap); tests/test_docs.py checks they are current.
docs-generate: install
	$(BIN)/python tools/generate_docs.py

docs-build: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr localhost:8001

# With NOMADS_TEST_DATABASE_URL set (.ci/run sets it), every store test also runs on
# that PostgreSQL server, and an unreachable server fails the run.
test: install test-tools lint docs-build
	$(BIN)/pytest

# The scorer against scikit-learn on all 2^26 possible users (3 to 5 minutes).
verify: install
	$(BIN)/python bench/verify_scorer.py

# A minute of traffic through nginx to two gunicorns on PostgreSQL, with a worker, an
# instance and PostgreSQL failing; every acknowledged assignment must be stored. It
# restarts the local PostgreSQL server: run it alone (CI runs it last).
soak: install test-tools
	$(BIN)/python bench/soak.py

# The image built on a Debian base made here and run against the local PostgreSQL, then
# docker-compose.yml scaled out with podman-compose (deploy/check_containers.py). Needs
# root for podman and mmdebstrap; installs Debian's podman, runc and mmdebstrap.
containers: install
	command -v podman >/dev/null && command -v mmdebstrap >/dev/null && command -v runc >/dev/null \
		|| (apt-get update -qq && apt-get install -y -qq podman runc mmdebstrap)
	$(BIN)/python deploy/check_containers.py

bench: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/assign_file.py
	$(BIN)/python bench/store_rows.py
	$(BIN)/python bench/similar_users.py
	$(BIN)/python bench/churn.py
	$(BIN)/python bench/promotion.py
	$(BIN)/python bench/webhooks.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .import_linter_cache node_modules site
