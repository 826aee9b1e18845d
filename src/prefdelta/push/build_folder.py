"""Read a finished build folder, refusing one that is incomplete, modified or holds a secret.

A build folder is only published when ``summary.json`` vouches for its tables (their sha256):
a half-finished or hand-edited build must never become a dataset someone trains on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import ValidationError

from prefdelta.push.errors import BuildFolderError, PublishError
from prefdelta.recipe import BuildRecipe, interpolate_env
from prefdelta.schema import (
    HASHED_FILES,
    PAIRS_FILE,
    RECIPE_FILE,
    REQUIRED_PAIR_COLUMNS,
    SUMMARY,
    TRACES_FILE,
)

__all__ = ["Build", "check_no_secrets", "read_build", "read_recipe_text", "sha256_file"]

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


@dataclass(frozen=True)
class Build:
    """A verified build folder: its summary, recipe and tables."""

    path: Path
    summary: dict[str, Any]
    recipe: BuildRecipe
    recipe_text: str
    pairs: pa.Table
    traces: pa.Table

    @property
    def recipe_hash(self) -> str:
        return str(self.summary["recipe_hash"])

    @property
    def dimensions(self) -> list[str]:
        return list(self.summary.get("dimensions") or self.recipe.judge.dimension_names)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_build(build_dir: str | os.PathLike[str]) -> Build:
    """Load a build folder, refusing one that is incomplete or was modified after the build."""
    root = Path(build_dir)
    if not root.is_dir():
        raise BuildFolderError(f"{root}: no such build folder")
    summary_path = root / SUMMARY
    if not summary_path.is_file():
        raise BuildFolderError(
            f"{root} is not a finished build: it has no {SUMMARY} (run or resume "
            "`prefdelta build` until it completes)"
        )
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildFolderError(f"{summary_path}: unreadable summary ({exc})") from None
    hashes = summary.get("files") if isinstance(summary, dict) else None
    if not isinstance(hashes, dict) or "recipe_hash" not in summary:
        raise BuildFolderError(f"{summary_path}: not a prefdelta build summary (no file hashes)")
    missing = [name for name in HASHED_FILES if not (root / name).is_file()]
    if missing:
        raise BuildFolderError(f"{root} is incomplete: missing {', '.join(missing)}")
    for name in HASHED_FILES:
        expected = hashes.get(name)
        actual = sha256_file(root / name)
        if expected != actual:
            raise BuildFolderError(
                f"{root / name} was modified after the build (sha256 {actual[:12]}, "
                f"summary.json records {str(expected)[:12]}); rebuild instead of editing a build"
            )
    text = (root / RECIPE_FILE).read_text(encoding="utf-8")
    recipe = read_recipe_text(text, str(root / RECIPE_FILE))
    check_no_secrets(text, str(root / RECIPE_FILE))
    pairs = pq.read_table(root / PAIRS_FILE)
    absent = [c for c in REQUIRED_PAIR_COLUMNS if c not in pairs.column_names]
    if absent:
        raise BuildFolderError(f"{root / PAIRS_FILE}: missing columns {', '.join(absent)}")
    traces = pq.read_table(root / TRACES_FILE)
    return Build(root, summary, recipe, text, pairs, traces)


def read_recipe_text(text: str, source: str) -> BuildRecipe:
    """Validate the recipe a build recorded, without needing its prompt files or model files.

    A build folder travels (another machine, later): the files the recipe named are not
    needed to publish, so only the recipe's own consistency is checked here.
    """
    try:
        data = yaml.safe_load(text)
        recipe = BuildRecipe.model_validate(interpolate_env(data))
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).strip().splitlines()
        raise BuildFolderError(f"{source}: not a valid recipe ({' '.join(first[:3])})") from None
    return recipe


def check_no_secrets(text: str, source: str) -> None:
    """Refuse text that contains the value of a secret-looking environment variable.

    Recipes only hold ``${ENV}`` references for secrets; this catches the case where one was
    resolved and written anyway (by hand, or by a tool that expanded the file).
    """
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_NAME.search(name) and value in text:
            raise PublishError(
                f"{source} contains the value of ${{{name}}}; refusing to publish a secret "
                f"(write the reference ${{{name}}} instead)"
            )
