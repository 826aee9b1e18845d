"""Load a published dataset's pairs, filtered by delta, generator pair and correctness.

Why this exists next to plain ``load_dataset``: the paper's experiments select pairs by a
dimension's delta (a threshold, or the top fraction), by generator pair, and by verifier
correctness. Thresholds, generator pairs and correctness become parquet filters that
``datasets`` pushes down into the files, so rows that do not match are never
materialized; only ``top_fraction``, which needs the whole ranking, runs after loading.
The result is a plain ``datasets.Dataset`` with TRL's conversational ``prompt``,
``chosen`` and ``rejected`` columns (plus every other column), ready for ``DPOTrainer``.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from prefdelta.errors import PrefdeltaError
from prefdelta.locations import is_local_path
from prefdelta.schema import LABEL_COLUMN, PAIRS, REPO_TYPE, config_dir

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

# correctness -> the (column, value) conditions it requires (verifier results need references)
CORRECTNESS: dict[str, tuple[tuple[str, bool], ...]] = {
    "chosen_correct": (("chosen_correct", True),),
    "both_correct": (("chosen_correct", True), ("rejected_correct", True)),
    "chosen_only": (("chosen_correct", True), ("rejected_correct", False)),
    "rejected_only": (("chosen_correct", False), ("rejected_correct", True)),
    "both_wrong": (("chosen_correct", False), ("rejected_correct", False)),
    "rejected_incorrect": (("rejected_correct", False),),
}
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")  # a Hub revision that can never move

# the four that split every verified pair exactly once (the paper's correctness directions)
CORRECTNESS_DIRECTIONS = ("both_correct", "chosen_only", "rejected_only", "both_wrong")


class PairsLoadError(PrefdeltaError, ValueError):
    """A selection that cannot be made; the message says what is available instead."""


class PairsArgumentError(PairsLoadError, TypeError):
    """An argument of the wrong type (``True`` for a number, a string for a list): a
    ``TypeError`` as Python has it, and a :class:`PairsLoadError` so callers catch one type."""


def load_pairs(
    repo_or_folder: str | os.PathLike[str],
    *,
    split: str = "train",
    min_delta: float | None = None,
    dimension: str = "delta",
    top_fraction: float | None = None,
    generator_pairs: Sequence[tuple[str, str] | str] | None = None,
    correctness: str | None = None,
    agree_with_label: bool | None = None,
    revision: str | None = None,
) -> datasets.Dataset:
    """The ``pairs`` config of a published dataset (Hub ``org/name`` or a local folder).

    - ``dimension``: whose delta ``min_delta`` and ``top_fraction`` use: ``"delta"`` (the
      aggregate), a dimension name (``"step_coherence"``) or its column (``"delta_step_coherence"``).
    - ``min_delta``: keep pairs with that delta ``>= min_delta`` (pushed down into parquet).
    - ``generator_pairs``: keep only these generator pairs (pushed down): a list or tuple
      whose items are ``(chosen_generator, rejected_generator)`` tuples or
      ``"chosen:rejected"`` strings. A bare string, even ``"a:b"``, is refused rather than
      read as one pair: the argument is always a list, so that a forgotten bracket around
      one pair never silently selects something else.
    - ``correctness`` (pushed down; needs references in the build):
      ``"chosen_correct"`` the chosen answer is right; ``"both_correct"`` both are right;
      ``"chosen_only"`` chosen right and rejected wrong; ``"rejected_only"`` chosen wrong
      and rejected right; ``"both_wrong"`` neither is right; ``"rejected_incorrect"`` the
      rejected answer is wrong.
    - ``agree_with_label`` (pushed down; a judged preference dataset, pairing strategy
      ``columns``): ``True`` keeps the pairs whose judge delta has the dataset label's sign
      (``label_agrees`` true: delta > 0), ``False`` those where it has the opposite sign
      (delta < 0). Ties and pairs without a delta are neither (``label_agrees`` null).
    - ``top_fraction`` in (0, 1]: after the filters above, keep the ``ceil(fraction * n)``
      pairs with the highest delta; ties are broken by ``pair_id`` so the selection is
      deterministic. Rows keep their dataset order.
    - ``revision``: branch, tag (e.g. ``recipe-<hash12>``) or commit, Hub only.

    Numbers must be numbers: ``True`` (an ``int`` to Python) or ``"0.5"`` raise a
    :class:`PairsArgumentError` naming the argument instead of being read as 1 or 0.5.
    """
    if top_fraction is not None:
        _number("top_fraction", top_fraction, "a fraction in (0, 1]", "0.3")
        if not 0.0 < top_fraction <= 1.0:
            raise PairsLoadError(f"top_fraction must be a fraction in (0, 1], got {top_fraction!r}")
    if min_delta is not None:
        _number("min_delta", min_delta, "a number", "1.0")
    if correctness is not None and correctness not in CORRECTNESS:
        raise PairsLoadError(
            f"unknown correctness {correctness!r}; expected one of: {', '.join(CORRECTNESS)}"
        )
    wanted_pairs = _check_generator_pairs(generator_pairs)
    if agree_with_label is not None and not isinstance(agree_with_label, bool):
        raise PairsArgumentError(
            f"agree_with_label must be True, False or None, got {agree_with_label!r}"
        )

    source = PairsSource.at(repo_or_folder, split, revision)
    schema = source.schema()
    column = delta_column(dimension, schema.names)
    conditions: list[tuple[str, str, Any]] = []
    if min_delta is not None:
        conditions.append((column, ">=", float(min_delta)))
    if agree_with_label is not None:
        if LABEL_COLUMN not in schema.names:
            raise PairsLoadError(
                f"agree_with_label: {source.path} has no {LABEL_COLUMN} column: only a "
                "judged preference dataset (pairing strategy 'columns') has labels of its own"
            )
        conditions.append((LABEL_COLUMN, "==", agree_with_label))
    for name, value in CORRECTNESS.get(correctness or "", ()):
        conditions.append((name, "==", value))
    if wanted_pairs is None:
        filters: list[list[tuple[str, str, Any]]] | None = [conditions] if conditions else None
    else:  # disjunctive normal form: one conjunction per generator pair
        filters = [
            [*conditions, ("chosen_generator", "==", c), ("rejected_generator", "==", r)]
            for c, r in wanted_pairs
        ]

    import datasets

    try:
        if source.local:
            # by file, not by folder: datasets caches a folder's configs by folder name and
            # file patterns, so a republished (or another) folder of that name read stale rows
            ds = datasets.load_dataset(
                "parquet", data_files={split: source.files()}, split=split, filters=filters
            )
        else:
            ds = datasets.load_dataset(
                source.path, PAIRS, split=split, revision=source.revision, filters=filters
            )
    except ValueError as exc:
        if filters and "corresponds to no data" in str(exc):
            raise PairsLoadError(
                _nothing_left(
                    source, column, min_delta, wanted_pairs, correctness, agree_with_label
                )
            ) from None
        raise
    if len(ds) == 0 and filters:
        raise PairsLoadError(
            _nothing_left(source, column, min_delta, wanted_pairs, correctness, agree_with_label)
        )
    if top_fraction is not None:
        ds = _top(ds, column, top_fraction, source)
    return ds


def _number(name: str, value: object, expected: str, example: str) -> None:
    """Refuse what is not a real number: a bool is an ``int`` to Python, never a number here."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        kind = "a bool" if isinstance(value, bool) else f"a {type(value).__name__}"
        raise PairsArgumentError(
            f"{name} must be {expected}, got {value!r} ({kind}); pass a number such as {example}"
        )


_PAIRS_FORM = "a list of (chosen, rejected) tuples or 'chosen:rejected' strings"


def _check_generator_pairs(
    pairs: Sequence[tuple[str, str] | str] | None,
) -> list[tuple[str, str]] | None:
    if pairs is None:
        return None
    if isinstance(pairs, str):
        one = pairs.split(":") if pairs.count(":") == 1 else ["chosen", "rejected"]
        raise PairsArgumentError(
            f"generator_pairs takes {_PAIRS_FORM}, got the string {pairs!r}; "
            f"for one pair write [{pairs!r}] or [{tuple(one)!r}]"
        )
    if not isinstance(pairs, list | tuple):
        raise PairsArgumentError(
            f"generator_pairs takes {_PAIRS_FORM}, got {pairs!r} (a {type(pairs).__name__})"
        )
    out = []
    for item in pairs:
        if isinstance(item, str) and item.count(":") == 1 and all(item.split(":")):
            chosen, rejected = item.split(":")
            out.append((chosen, rejected))
            continue
        if (
            isinstance(item, list | tuple)
            and len(item) == 2
            and all(isinstance(g, str) and g for g in item)
        ):
            out.append((item[0], item[1]))
            continue
        hint = ""
        if len(pairs) == 2 and all(isinstance(g, str) and ":" not in g for g in pairs):
            hint = f"; for that one pair write [{tuple(pairs)!r}]"
        raise PairsArgumentError(
            f"generator_pairs takes {_PAIRS_FORM}, got the item {item!r}{hint}"
        )
    if not out:
        raise PairsLoadError("generator_pairs is empty; pass None to keep every generator pair")
    return out


def delta_column(dimension: str, columns: list[str]) -> str:
    """The delta column ``dimension`` names: ``"delta"``, a dimension or its ``delta_`` column."""
    available = [c for c in columns if c == "delta" or c.startswith("delta_")]
    column = dimension if dimension in available else f"delta_{dimension}"
    if column not in available:
        raise PairsLoadError(
            f"unknown dimension {dimension!r}; available delta columns: {', '.join(available)}"
        )
    return column


def _top(
    ds: datasets.Dataset, column: str, fraction: float, source: PairsSource
) -> datasets.Dataset:
    from prefdelta.schema import rank_by_delta

    keys = ds.with_format("arrow").select_columns([column, "pair_id"])[:]
    # pairs the judge could not score have no delta: they are never among the top
    scored = keys.num_rows - keys.column(column).null_count
    if scored == 0:
        raise PairsLoadError(
            f"top_fraction: none of the {keys.num_rows} selected pairs in split "
            f"{source.split!r} of {source.path} has a {column} (the judge scored no pair on "
            "both sides); select by generator pair instead, or rebuild once the judge scores "
            "traces (the build's summary.json counts why each trace went unscored)"
        )
    k = math.ceil(fraction * scored)
    chosen = sorted(rank_by_delta(keys, column)[:k].to_pylist())
    return ds.select(chosen)


class PairsSource:
    """Where the ``pairs`` parquet files of a split are: a folder, or a Hub dataset repo.

    :meth:`at` is the way to get one: at a Hub commit sha (immutable) the files are listed
    once per process, however many checks, counts and loads read them.
    """

    _at_commit: ClassVar[dict[tuple[str, str, str], PairsSource]] = {}

    @classmethod
    def at(cls, ref: str | os.PathLike[str], split: str, revision: str | None) -> PairsSource:
        """The source of ``split`` at ``revision``; one shared instance per Hub commit."""
        if revision is None or not COMMIT_SHA.fullmatch(revision) or is_local_path(ref):
            return cls(ref, split, revision)
        key = (str(ref), split, revision)
        if key not in cls._at_commit:
            cls._at_commit[key] = cls(ref, split, revision)
        return cls._at_commit[key]

    def __init__(self, ref: str | os.PathLike[str], split: str, revision: str | None) -> None:
        self.split = split
        local = Path(ref).expanduser()
        self.local = is_local_path(ref)
        if self.local:
            if not local.is_dir():
                raise PairsLoadError(f"{local}: no such folder")
            if revision is not None:
                raise PairsLoadError("revision applies to Hub datasets, not to a local folder")
            self.path, self.revision = str(local), None
        else:
            self.path, self.revision = str(ref), revision
        self._files: list[str] | None = None

    def files(self) -> list[str]:
        """Local paths of the split's parquet files (downloaded, and cached, from the Hub)."""
        if self._files is not None:
            return self._files
        prefix = config_dir(PAIRS)
        if self.local:
            root = Path(self.path)
            names = sorted(
                p.relative_to(root).as_posix() for p in (root / prefix).glob("*.parquet")
            )
        else:
            from huggingface_hub import HfApi

            names = sorted(
                f
                for f in HfApi().list_repo_files(
                    self.path, repo_type=REPO_TYPE, revision=self.revision
                )
                if f.startswith(prefix) and f.endswith(".parquet")
            )
        mine = [n for n in names if n[len(prefix) :].startswith(f"{self.split}-")]
        if not mine:
            splits = sorted({n[len(prefix) :].split("-", 1)[0] for n in names})
            if not splits:
                raise PairsLoadError(
                    f"{self.path} is not a published prefdelta dataset (no {prefix}*.parquet)"
                )
            raise PairsLoadError(
                f"no split {self.split!r} in {self.path}; available splits: {', '.join(splits)}"
            )
        if self.local:
            self._files = [str(Path(self.path) / n) for n in mine]
        else:
            from huggingface_hub import hf_hub_download

            self._files = [
                hf_hub_download(self.path, n, repo_type=REPO_TYPE, revision=self.revision)
                for n in mine
            ]
        return self._files

    def schema(self) -> pa.Schema:
        import pyarrow.parquet as pq

        return pq.read_schema(self.files()[0])

    def read(self, columns: list[str]) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        return pa.concat_tables(pq.read_table(f, columns=columns) for f in self.files())


def _nothing_left(
    source: PairsSource,
    column: str,
    min_delta: float | None,
    wanted: list[tuple[str, str]] | None,
    correctness: str | None,
    agree: bool | None = None,
) -> str:
    """Why the selection is empty: each filter next to what the split actually holds."""
    columns = [column, "chosen_generator", "rejected_generator"]
    columns += [c for c, _ in CORRECTNESS.get(correctness or "", ()) if c not in columns]
    columns += [LABEL_COLUMN] if agree is not None else []
    table = source.read(columns)
    n = table.num_rows
    parts = [
        f"no pairs left in split {source.split!r} of {source.path} ({n} pairs before filtering)"
    ]
    if min_delta is not None:
        values = [v for v in table.column(column).to_pylist() if v is not None]
        seen = f"{min(values):g} to {max(values):g}" if values else "no values"
        parts.append(f"{column} >= {min_delta:g} (observed range of {column}: {seen})")
    if wanted is not None:
        present = Counter(
            zip(
                table.column("chosen_generator").to_pylist(),
                table.column("rejected_generator").to_pylist(),
                strict=True,
            )
        )
        listed = ", ".join(f"({c!r}, {r!r}): {k}" for (c, r), k in sorted(present.items()))
        parts.append(f"generator_pairs {wanted} (present: {listed or 'none'})")
    if correctness is not None:
        counts = []
        for name, _ in CORRECTNESS[correctness]:
            values = Counter(table.column(name).to_pylist())
            counts.append(
                f"{name}: true {values[True]}, false {values[False]}, unknown {values[None]}"
            )
        parts.append(f"correctness {correctness!r} ({'; '.join(counts)})")
    if agree is not None:
        values = Counter(table.column(LABEL_COLUMN).to_pylist())
        parts.append(
            f"agree_with_label={agree} ({LABEL_COLUMN}: true {values[True]}, false "
            f"{values[False]}, null (ties, no delta) {values[None]})"
        )
    return "; ".join(parts)
