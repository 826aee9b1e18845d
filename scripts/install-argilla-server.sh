#!/usr/bin/env bash
# Install the local Argilla stack that `prefdelta review serve` and the tests boot: argilla-server
# 2.8.0, osmem-server and fakeredis in a venv of their own (argilla-server's pins clash with
# prefdelta's env). Idempotent: returns at once when the venv already matches the requirements.
#
#   bash scripts/install-argilla-server.sh
#   PREFDELTA_ARGILLA_VENV=/elsewhere PYTHON=python3.11 bash scripts/install-argilla-server.sh
#
# prefdelta.review.server_venv finds the venv the same way: $PREFDELTA_ARGILLA_VENV, else .venv-argilla
# in the working directory or beside the prefdelta checkout it is run from (this script's ROOT).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PREFDELTA_ARGILLA_VENV:-$ROOT/.venv-argilla}"
source "$ROOT/scripts/server-venv.sh"

# Prove the CLI runs (the click pin) and the osmem binary is there; also warms the .pyc cache.
check() {
    (cd "$VENV" && "$VENV/bin/python" -I -m argilla_server --help > /dev/null)
    "$VENV/bin/python" -I -c "import fakeredis, osmem_server; osmem_server.resolve_binary()"
}
server_venv "Argilla server" "$VENV" "$ROOT/scripts/argilla-server-requirements.txt" check
