# NexusAI — two commands: `make run` and `make test`. Each bootstraps .venv from the hashed lock.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements/dev.lock pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test venv lint typecheck unit lock bench clean browser-deps

$(STAMP): requirements/dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/nexus up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy core workflows activities workers api cli evals connectors

test: lint typecheck browser-deps
	$(BIN)/pytest -q -p no:cacheprovider --basetemp=$(CURDIR)/.pytest-tmp $(PYTEST_ARGS)

# The console's browser tests need Debian's Chromium (never `playwright install`: it downloads).
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: browser tests will be skipped"; fi; \
	fi

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# Regenerate the hashed locks after editing requirements/*.in (needs uv: pip install uv).
lock:
	uv pip compile --generate-hashes --python-version 3.11 requirements/base.in -o requirements/base.lock
	uv pip compile --generate-hashes --python-version 3.11 requirements/dev.in -o requirements/dev.lock

clean:
	rm -rf $(VENV) build *.egg-info
