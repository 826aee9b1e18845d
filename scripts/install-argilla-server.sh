#!/usr/bin/env bash
# Install the local Argilla stack that `prefdelta review serve` and the tests boot: argilla-server
# 2.8.0, osmem-server and fakeredis in a venv of their own (argilla-server's pins clash with
# prefdelta's env). Idempotent: returns at once when the venv already matches the requirements.
#
#   bash scripts/install-argilla-server.sh
#   PREFDELTA_ARGILLA_VENV=/elsewhere PYTHON=python3.11 bash scripts/install-argilla-server.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PREFDELTA_ARGILLA_VENV:-$ROOT/.venv-argilla}"
PYTHON="${PYTHON:-python3}"
REQUIREMENTS="$ROOT/scripts/argilla-server-requirements.txt"
STAMP="$VENV/.prefdelta-requirements.sha256"

want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "Argilla server venv is up to date: $VENV"
    exit 0
fi

echo "Installing the Argilla server venv into $VENV ..."
start=$SECONDS
"$PYTHON" -m venv "$VENV"
echo '*' > "$VENV/.gitignore"  # keep the venv out of git, wherever it lives
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
"$VENV/bin/python" -m pip check --disable-pip-version-check
# Prove the CLI runs (the click pin) and the osmem binary is there; also warms the .pyc cache.
(cd "$VENV" && "$VENV/bin/python" -I -m argilla_server --help > /dev/null)
"$VENV/bin/python" -I -c "import fakeredis, osmem_server; osmem_server.resolve_binary()"
echo "$want" > "$STAMP"
echo "Argilla server venv ready in $((SECONDS - start)) s: $VENV"
