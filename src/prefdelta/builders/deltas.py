"""Per-dimension and aggregate deltas, and the generator-level gap.

The sample-level delta of a pair is chosen minus rejected, per dimension; ``delta`` is
the recipe's aggregate of those (mean, or a weighted mean). The generator-level delta is
measured over the whole build: the gap between two generators' mean aggregate scores
(and their verifier accuracy, where references exist).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefdelta.recipe import DeltaConfig


def aggregate(scores: Mapping[str, float], dimensions: Sequence[str], config: DeltaConfig) -> float:
    """One number per trace: the mean of its dimension scores, or their weighted mean."""
    if config.weights:
        weights = {d: config.weights.get(d, 0.0) for d in dimensions}
        return sum(weights[d] * scores[d] for d in dimensions) / sum(weights.values())
    return sum(scores[d] for d in dimensions) / len(dimensions)


def pair_deltas(
    chosen: Mapping[str, float],
    rejected: Mapping[str, float],
    dimensions: Sequence[str],
    config: DeltaConfig,
) -> dict[str, float]:
    """``delta_<dimension>`` for each dimension plus the aggregate ``delta``."""
    out = {f"delta_{d}": chosen[d] - rejected[d] for d in dimensions}
    out["delta"] = aggregate(chosen, dimensions, config) - aggregate(rejected, dimensions, config)
    return out


@dataclass(frozen=True)
class GeneratorGap:
    """How far apart two generators are over the whole build."""

    chosen: str
    rejected: str
    score_gap: float | None  # mean aggregate score, chosen minus rejected (None: none judged)
    accuracy_gap: float | None  # verifier accuracy, chosen minus rejected (None: no references)
    chosen_traces: int
    rejected_traces: int


def generator_means(
    traces: Iterable[Mapping[str, Any]], dimensions: Sequence[str], config: DeltaConfig
) -> dict[str, tuple[float | None, float | None, int]]:
    """Per generator: mean aggregate score, verifier accuracy, judged trace count."""
    scores: dict[str, list[float]] = {}
    correct: dict[str, list[bool]] = {}
    for t in traces:
        gen = t["generator"]
        scores.setdefault(gen, [])
        correct.setdefault(gen, [])
        if t["judge_status"] == "ok":
            scores[gen].append(aggregate(t["scores"], dimensions, config))
        if t.get("correct") is not None:
            correct[gen].append(bool(t["correct"]))
    return {
        gen: (
            statistics.fmean(scores[gen]) if scores[gen] else None,
            statistics.fmean(correct[gen]) if correct[gen] else None,
            len(scores[gen]),
        )
        for gen in scores
    }


def generator_gap(
    means: Mapping[str, tuple[float | None, float | None, int]], chosen: str, rejected: str
) -> GeneratorGap:
    c_score, c_acc, c_n = means.get(chosen, (None, None, 0))
    r_score, r_acc, r_n = means.get(rejected, (None, None, 0))
    score_gap = None if c_score is None or r_score is None else c_score - r_score
    accuracy_gap = None if c_acc is None or r_acc is None else c_acc - r_acc
    return GeneratorGap(chosen, rejected, score_gap, accuracy_gap, c_n, r_n)
