# The two set-up commands of the README.
VENV ?= .venv

.PHONY: demo test test-fast lint
demo:  ## install, then build the embedded demo recipe offline on CPU
	scripts/install.sh
	$(VENV)/bin/prefdelta build recipes/demo.yaml

test:  ## install with test extras and services, then run the whole suite and ruff
	scripts/install.sh --test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	bash scripts/check-vllm-resolves.sh
	$(VENV)/bin/python -m pytest -q -ra

test-fast:  ## the suite without the tests marked slow (end-to-end builds, training, servers)
	$(VENV)/bin/python -m pytest -q -ra -m "not slow"

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports
