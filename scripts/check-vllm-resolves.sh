#!/usr/bin/env bash
# Check that `prefdelta[vllm]` resolves: pip reads package metadata only (a dry run; no CUDA
# wheel is downloaded or installed), so a later pin that clashes with vLLM fails CI here.
#   bash scripts/check-vllm-resolves.sh            uses .venv's pip
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# pip before 24 may download whole wheels (GBs of CUDA builds) to read their metadata; a current
# pip reads the registry's metadata files only.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pip>=25"
report=$(mktemp)
log=$(mktemp)
trap 'rm -f "$report" "$log"' EXIT
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --dry-run \
    --ignore-installed --report "$report" ".[vllm]" >"$log" 2>&1; then
  grep -v "^WARNING: Location" "$log" >&2
  echo "prefdelta[vllm] does not resolve: a pin in pyproject.toml clashes with vLLM's" >&2
  exit 1
fi
"$VENV/bin/python" - "$report" <<'PY'
import json, sys
names = ("vllm", "torch", "transformers", "xgrammar", "trl", "distilabel", "datasets")
got = {i["metadata"]["name"].lower(): i["metadata"]["version"]
       for i in json.load(open(sys.argv[1]))["install"]}
print("prefdelta[vllm] resolves:", ", ".join(f"{n} {got.get(n, '?')}" for n in names))
PY
