"""A review sample stratified by delta and by generator pair, deterministic for a seed.

Why stratify instead of sampling uniformly: a spot-check must say whether the judge is right
where it matters (large deltas that a delta filter keeps, near-zero deltas it drops, negative
deltas where the weaker generator won) and for every generator pair. A uniform sample mirrors
the bulk of the distribution and misses the tails, so strata get equal shares here:

- the delta column's observed range is cut into ``bins`` equal-width buckets (the last one
  closed on the right), crossed with the (chosen, rejected) generator pair;
- ``n`` is split equally over the non-empty strata; a stratum smaller than its share gives
  the rest to the others (water-filling), so the sample has ``min(n, available)`` pairs;
- within a stratum, pairs are drawn by a seeded RNG over pair ids sorted first, so the same
  data and seed give the same sample whatever the row order.

Pairs without a value in the delta column (the judge could not score one of the traces)
cannot be placed in a bucket. By default they form one more stratum per generator pair,
"no score": a reviewer's answer there still says whether the stronger generator's trace is
the better one (the generator-level delta), and a build whose judge scored nothing can still
be reviewed. With ``unscored=False`` they are only counted, in ``missing``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class Stratum:
    """One delta bucket of one generator pair: how many pairs it holds and how many were drawn.

    ``low`` and ``high`` are None for the bucket of pairs without a score.
    """

    low: float | None
    high: float | None
    generator_pair: str
    available: int
    sampled: int

    @property
    def label(self) -> str:
        if self.low is None or self.high is None:
            return "no score"
        return (
            f"[{self.low:+.2f}, {self.high:+.2f}]" if self.high > self.low else f"{self.low:+.2f}"
        )


@dataclass(frozen=True)
class StratifiedSample:
    """Row indices of the sample (ascending) and the per-stratum counts."""

    indices: list[int]
    strata: list[Stratum]
    column: str
    missing: int = 0  # pairs without a value in ``column``
    unscored: bool = True  # whether those were sampled (as "no score" strata)

    def __len__(self) -> int:
        return len(self.indices)


def generator_pair_name(chosen: str | None, rejected: str | None) -> str:
    """How a generator pair is written in metadata, tables and the card: ``strong vs weak``."""
    return f"{chosen or '?'} vs {rejected or '?'}"


def bucket_edges(values: Sequence[float], bins: int) -> list[float]:
    """``bins + 1`` equal-width edges over the observed range (one bucket if it is a point)."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    low, high = min(values), max(values)
    if high == low:
        return [low, high]
    width = (high - low) / bins
    return [low + i * width for i in range(bins)] + [high]


_NO_SCORE = -1  # bucket index of pairs without a value: sorts before the buckets


def _bucket(value: float, edges: list[float]) -> int:
    for i in range(len(edges) - 2, -1, -1):
        if value >= edges[i]:
            return i
    return 0


def allocate(capacities: Sequence[int], n: int, rng: random.Random) -> list[int]:
    """Split ``n`` equally over strata of these sizes; leftovers go to strata with room.

    Where ``n`` does not divide evenly, which strata get one more is drawn by ``rng``.
    """
    taken = [0] * len(capacities)
    remaining = min(n, sum(capacities))
    while remaining > 0:
        open_ = [i for i, c in enumerate(capacities) if taken[i] < c]
        share = remaining // len(open_)
        if share == 0:
            for i in rng.sample(open_, remaining):
                taken[i] += 1
            break
        for i in open_:
            extra = min(share, capacities[i] - taken[i])
            taken[i] += extra
            remaining -= extra
    return taken


def stratified_sample(
    pair_ids: Sequence[str],
    deltas: Sequence[float | None],
    generator_pairs: Sequence[str],
    n: int,
    *,
    bins: int = 5,
    seed: int = 0,
    column: str = "delta",
    unscored: bool = True,
) -> StratifiedSample:
    """Draw ``n`` rows stratified by delta bucket x generator pair (see the module docstring)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not len(pair_ids) == len(deltas) == len(generator_pairs):
        raise ValueError("pair_ids, deltas and generator_pairs must have the same length")
    known = [
        i
        for i, d in enumerate(deltas)
        if d is not None and not (isinstance(d, float) and math.isnan(d))
    ]
    missing = len(pair_ids) - len(known)
    members: dict[tuple[str, int], list[int]] = {}
    edges: list[float] = []
    if known:
        edges = bucket_edges([float(deltas[i]) for i in known], bins)  # type: ignore[arg-type]
        for i in known:
            key = (generator_pairs[i], _bucket(float(deltas[i]), edges))  # type: ignore[arg-type]
            members.setdefault(key, []).append(i)
    if unscored:
        for i in sorted(set(range(len(pair_ids))) - set(known)):
            members.setdefault((generator_pairs[i], _NO_SCORE), []).append(i)
    keys = sorted(members)
    rng = random.Random(seed)
    counts = allocate([len(members[k]) for k in keys], n, rng)
    indices: list[int] = []
    strata = []
    for key, k in zip(keys, counts, strict=True):
        rows = sorted(members[key], key=lambda i: pair_ids[i])
        indices.extend(rng.sample(rows, k))
        pair, b = key
        low, high = (None, None) if b == _NO_SCORE else (edges[b], edges[b + 1])
        strata.append(Stratum(low, high, pair, len(rows), k))
    return StratifiedSample(sorted(indices), strata, column, missing, unscored)


def sample_pairs(
    pairs: datasets.Dataset,
    n: int,
    *,
    dimension: str = "delta",
    bins: int = 5,
    seed: int = 0,
    unscored: bool = True,
) -> tuple[datasets.Dataset, StratifiedSample]:
    """Stratified sample of a ``pairs`` dataset (as :func:`prefdelta.load_pairs` returns it).

    ``dimension`` names the delta column as ``load_pairs`` does: ``"delta"``, a dimension
    name or its ``delta_<dimension>`` column.
    """
    from prefdelta.loading import delta_column

    column = delta_column(dimension, pairs.column_names)
    table = pairs.with_format("arrow").select_columns(
        ["pair_id", column, "chosen_generator", "rejected_generator"]
    )[:]
    names = [
        generator_pair_name(c, r)
        for c, r in zip(
            table.column("chosen_generator").to_pylist(),
            table.column("rejected_generator").to_pylist(),
            strict=True,
        )
    ]
    sample = stratified_sample(
        table.column("pair_id").to_pylist(),
        table.column(column).to_pylist(),
        names,
        n,
        bins=bins,
        seed=seed,
        column=column,
        unscored=unscored,
    )
    return pairs.select(sample.indices), sample
