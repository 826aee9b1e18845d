"""A finished build folder -> the published layout, staged in a folder.

The Hub repo and a local folder get the same files, so every later stage reads either:

    data/pairs/train-00000-of-00001.parquet   (+ data/pairs/test-... when a test split is asked)
    data/traces/train-00000-of-00001.parquet
    recipe.yaml
    plots/*.png
    README.md                                 (the card, with the `configs:` block)

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
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from pydantic import ValidationError

from prefdelta.errors import PrefdeltaError
from prefdelta.recipe import BuildRecipe

SUMMARY = "summary.json"
HASHED_FILES = ("traces.parquet", "pairs.parquet", "recipe.yaml")
PAIRS, TRACES = "pairs", "traces"
# Paths a publish owns: files under these that the new layout lacks are deleted on the Hub.
MANAGED_DIRS = ("data/", "plots/")
MANAGED_FILES = ("README.md", "recipe.yaml")
# In a published folder: the files its publish wrote, the only ones a republish touches.
FOLDER_MANIFEST = ".prefdelta-manifest.json"
# Row groups of about this many uncompressed bytes. A filtered load decodes one whole row
# group at a time, so this bounds its memory (bench/filter_load.py: 1M pairs, ~75k-row groups
# peaked ~250 MB above the import baseline, ~19k-row groups ~145 MB, at the same speed);
# much smaller groups cost time, since datasets makes one shard per row group.
ROW_GROUP_BYTES = 8 * 1024 * 1024
REQUIRED_PAIR_COLUMNS = ("pair_id", "prompt_id", "prompt", "chosen", "rejected", "delta")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


class PublishError(PrefdeltaError, RuntimeError):
    """A publish that cannot go ahead; ``str()`` is one line a user can act on."""


class BuildFolderError(PublishError):
    """The folder is not a finished, unmodified build."""


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


@dataclass(frozen=True)
class LayoutOptions:
    """How a build is laid out: the held-out split, the card's license, the row order."""

    test_size: float | None = None
    license: str = "apache-2.0"
    sort_by: str = "delta"


@dataclass(frozen=True)
class StagedLayout:
    """The published files of one build, written under ``root``."""

    root: Path
    files: dict[str, str]  # path in the layout -> sha256
    splits: dict[str, int]  # pairs rows per split
    traces: int

    @property
    def publish_id(self) -> str:
        """Names the content: same build and options, same id (it goes in commit messages)."""
        manifest = json.dumps(sorted(self.files.items()), separators=(",", ":"))
        return hashlib.sha256(manifest.encode()).hexdigest()[:16]


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
    text = (root / "recipe.yaml").read_text(encoding="utf-8")
    recipe = read_recipe_text(text, str(root / "recipe.yaml"))
    check_no_secrets(text, str(root / "recipe.yaml"))
    pairs = pq.read_table(root / "pairs.parquet")
    absent = [c for c in REQUIRED_PAIR_COLUMNS if c not in pairs.column_names]
    if absent:
        raise BuildFolderError(f"{root / 'pairs.parquet'}: missing columns {', '.join(absent)}")
    traces = pq.read_table(root / "traces.parquet")
    return Build(root, summary, recipe, text, pairs, traces)


def read_recipe_text(text: str, source: str) -> BuildRecipe:
    """Validate the recipe a build recorded, without needing its prompt files or model files.

    A build folder travels (another machine, later): the files the recipe named are not
    needed to publish, so only the recipe's own consistency is checked here.
    """
    try:
        data = yaml.safe_load(text)
        recipe = BuildRecipe.model_validate(_resolve_env(data, ()))
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).strip().splitlines()
        raise BuildFolderError(f"{source}: not a valid recipe ({' '.join(first[:3])})") from None
    return recipe


def _resolve_env(value: Any, loc: tuple[Any, ...]) -> Any:
    """${VAR} as the recipe loader does, but an unset variable stays as written."""
    if isinstance(value, dict):
        return {k: _resolve_env(v, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, (*loc, i)) for i, v in enumerate(value)]
    if isinstance(value, str) and loc and loc[-1] != "api_key":

        def sub(m: re.Match[str]) -> str:
            return os.environ.get(m.group(1), m.group(2) if m.group(2) is not None else m.group(0))

        return _ENV_REF.sub(sub, value)
    return value


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


# --------------------------------------------------------------------------- splitting


def split_pairs(pairs: pa.Table, test_size: float | None, seed: int) -> dict[str, pa.Table]:
    """``train`` (and ``test``): whole prompts go to one side, chosen by a seeded hash.

    Hashing prompt ids (not shuffling rows) keeps the split stable when the build grows and
    guarantees that no prompt appears in both splits.
    """
    if test_size is None:
        return {"train": pairs}
    if not 0.0 < test_size < 1.0:
        raise PublishError(f"test_size must be a fraction in (0, 1), got {test_size}")
    prompt_ids = sorted(set(pairs.column("prompt_id").to_pylist()))
    if len(prompt_ids) < 2:
        raise PublishError(
            f"test_size needs pairs from at least 2 prompts to split by prompt; "
            f"this build has {len(prompt_ids)}"
        )
    n_test = min(max(1, round(test_size * len(prompt_ids))), len(prompt_ids) - 1)
    ranked = sorted(prompt_ids, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    test_ids = pa.array(ranked[:n_test], pa.string())
    in_test = pc.is_in(pairs.column("prompt_id"), value_set=test_ids)
    return {"train": pairs.filter(pc.invert(in_test)), "test": pairs.filter(in_test)}


def sort_pairs(pairs: pa.Table, column: str) -> pa.Table:
    """Pairs highest ``column`` first (no delta last, ties by pair id): see :func:`stage_layout`."""
    from prefdelta.builders.deltas import rank_by_delta

    if column not in pairs.column_names:
        deltas = [c for c in pairs.column_names if c == "delta" or c.startswith("delta_")]
        raise PublishError(f"sort_by: no column {column!r}; delta columns: {', '.join(deltas)}")
    return pairs.take(rank_by_delta(pairs, column))


def write_table(table: pa.Table, path: Path) -> None:
    """Parquet with statistics and row groups sized for filter pushdown."""
    path.parent.mkdir(parents=True, exist_ok=True)
    per_row = table.nbytes / table.num_rows if table.num_rows else 1
    rows = int(min(max(ROW_GROUP_BYTES // max(per_row, 1), 100), 100_000))
    pq.write_table(table, path, row_group_size=rows, compression="zstd", write_statistics=True)


def data_path(config: str, split: str) -> str:
    return f"data/{config}/{split}-00000-of-00001.parquet"


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` rows."""
    for power, label in enumerate(_SIZE_LABELS, start=3):
        if n < 10**power:
            return label
    return "n>1T"


_SIZE_LABELS = (
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
)


def stage_layout(
    build: Build,
    root: Path,
    *,
    options: LayoutOptions,
    dataset_ref: str,
) -> StagedLayout:
    """Write the whole published layout under ``root`` (which must be empty or absent).

    ``dataset_ref`` is what users pass to ``load_dataset`` (a repo id or a folder); it only
    appears in the card's snippets. Pairs are stored highest ``options.sort_by`` first, so each
    row group holds a narrow range of that delta and a filter on it skips the rest by
    their parquet statistics (a top-k selection reads a prefix).
    """
    from prefdelta.push.card import render_card
    from prefdelta.push.plots import write_plots

    root.mkdir(parents=True, exist_ok=True)
    pairs = sort_pairs(build.pairs, options.sort_by)
    splits = split_pairs(pairs, options.test_size, build.recipe.prompts.seed)
    for split, table in splits.items():
        write_table(table, root / data_path(PAIRS, split))
    write_table(build.traces, root / data_path(TRACES, "train"))
    (root / "recipe.yaml").write_text(build.recipe_text, encoding="utf-8")
    plots = write_plots(build, root)
    counts = {split: t.num_rows for split, t in splits.items()}
    card = render_card(
        build,
        splits=counts,
        plots=plots,
        dataset_ref=dataset_ref,
        license=options.license,
        sort_by=options.sort_by,
    )
    check_no_secrets(card, "the dataset card")
    (root / "README.md").write_text(card, encoding="utf-8")
    return StagedLayout(root, manifest(root), counts, build.traces.num_rows)


def manifest(root: Path) -> dict[str, str]:
    """Every file under ``root``: layout path -> sha256."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def is_managed(path: str) -> bool:
    """Whether a repo path belongs to the published layout (stale ones may be deleted)."""
    return path in MANAGED_FILES or path.startswith(MANAGED_DIRS)


def read_folder_manifest(root: Path) -> set[str] | None:
    """The files a publish (or a review pull) wrote into the folder ``root``; None when it
    has no manifest."""
    path = root / FOLDER_MANIFEST
    if not path.is_file():
        return None
    try:
        listed = json.loads(path.read_text(encoding="utf-8"))["files"]
        return {str(f) for f in listed}
    except (ValueError, KeyError, TypeError):
        raise PublishError(
            f"{path} is not a prefdelta manifest; remove it or choose another folder"
        ) from None


def write_folder_manifest(root: Path, files: set[str] | dict[str, str]) -> None:
    """Write the manifest of ``root`` atomically."""
    tmp = root / f".{FOLDER_MANIFEST}.tmp"
    tmp.write_text(json.dumps({"files": sorted(files)}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, root / FOLDER_MANIFEST)
