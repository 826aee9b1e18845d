"""A verified build -> the published layout, staged in a folder.

The Hub repo and a local folder get the same files (listed in :mod:`prefdelta.schema`), so
every later stage reads either. Reading and verifying the build folder is
:mod:`prefdelta.push.build_folder`'s; this module only stages.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prefdelta.push.build_folder import Build, check_no_secrets, sha256_file
from prefdelta.push.card import render_card
from prefdelta.push.errors import PublishError
from prefdelta.push.plots import write_plots
from prefdelta.schema import (
    CARD,
    PAIRS,
    RECIPE_FILE,
    TRACES,
    data_path,
    rank_by_delta,
)

# Row groups of about this many uncompressed bytes. A filtered load decodes one whole row
# group at a time, so this bounds its memory (bench/filter_load.py: 1M pairs, ~75k-row groups
# peaked ~250 MB above the import baseline, ~19k-row groups ~145 MB, at the same speed);
# much smaller groups cost time, since datasets makes one shard per row group.
ROW_GROUP_BYTES = 8 * 1024 * 1024


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


# --------------------------------------------------------------------------- splitting


def split_pairs(pairs: pa.Table, test_size: float | None, seed: int) -> dict[str, pa.Table]:
    """``train`` (and ``test``): whole prompts go to one side, chosen by a seeded hash.

    Hashing prompt ids (not shuffling rows) keeps the split stable when the build grows and
    guarantees that no prompt appears in both splits.
    """
    if not test_size:  # None, or 0: no test split
        return {"train": pairs}
    if not 0.0 < test_size < 1.0:
        raise PublishError(
            f"test_size must be a fraction in (0, 1), or 0 for no test split; got {test_size}"
        )
    prompt_ids = sorted(set(pairs.column("prompt_id").to_pylist()))
    if len(prompt_ids) < 2:
        raise PublishError(
            f"test_size needs pairs from at least 2 prompts to split by prompt; "
            f"this build has {len(prompt_ids)} (--test-size 0 publishes without a test split)"
        )
    n_test = min(max(1, round(test_size * len(prompt_ids))), len(prompt_ids) - 1)
    ranked = sorted(prompt_ids, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    test_ids = pa.array(ranked[:n_test], pa.string())
    in_test = pc.is_in(pairs.column("prompt_id"), value_set=test_ids)
    return {"train": pairs.filter(pc.invert(in_test)), "test": pairs.filter(in_test)}


def sort_pairs(pairs: pa.Table, column: str) -> pa.Table:
    """Pairs highest ``column`` first (no delta last, ties by pair id): see :func:`stage_layout`."""
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
    root.mkdir(parents=True, exist_ok=True)
    pairs = sort_pairs(build.pairs, options.sort_by)
    splits = split_pairs(pairs, options.test_size, build.recipe.prompts.seed)
    for split, table in splits.items():
        write_table(table, root / data_path(PAIRS, split))
    write_table(build.traces, root / data_path(TRACES, "train"))
    (root / RECIPE_FILE).write_text(build.recipe_text, encoding="utf-8")
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
    (root / CARD).write_text(card, encoding="utf-8")
    return StagedLayout(root, manifest(root), counts, build.traces.num_rows)


def manifest(root: Path) -> dict[str, str]:
    """Every file under ``root``: layout path -> sha256."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
