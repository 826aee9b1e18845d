# The two set-up commands of the README.
VENV ?= .venv

.PHONY: demo test lint
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

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports
