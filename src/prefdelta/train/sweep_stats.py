"""The sweep's error bars: which differences between runs are real on these eval prompts.

A few hundred eval prompts make accuracies noisy, so every number the sweep reports comes
with a 95% interval:

- a run's accuracy: the Wilson interval of one proportion (right at 0 and 1, unlike the
  normal approximation, and honest on the handful of prompts a demo has);
- a difference between two runs (gain over the base model, top-k minus random-k): a
  paired bootstrap over the prompts. Both runs answered the same prompts, so resampling
  prompts keeps each prompt's pair of outcomes together, which is what makes a small gain
  on a shared hard set detectable;
- the gain-vs-generator-delta slope: a least-squares fit, its interval from the same
  bootstrap resamples (refitting on each). It measures eval noise only: with one run per
  generator pair, run-to-run training noise is not in it.

One set of resampled prompt indices (:func:`bootstrap_indices`, seeded) serves every
comparison on one eval set, so intervals are reproducible and mutually consistent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval; ``significant``: the interval excludes zero."""

    estimate: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def wilson(correct: int, n: int, z: float = Z95) -> Interval:
    """Accuracy ``correct / n`` with its Wilson score interval."""
    if n <= 0:
        raise ValueError("wilson: n must be positive")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``resamples`` rows of ``n`` prompt indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def paired_difference(a: Sequence[float], b: Sequence[float], indices: np.ndarray) -> Interval:
    """Mean of ``a`` minus mean of ``b`` (per-prompt outcomes, same prompts, same order),
    with the percentile interval over the bootstrap ``indices``."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_difference: {x.size} outcomes against {y.size}")
    d = x - y
    return Interval(float(d.mean()), *_percentiles(d[indices].mean(axis=1)))


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of ``y`` on ``x``; needs two distinct ``x``."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx = xs - xs.mean()
    var = float((dx * dx).sum())
    if xs.size < 2 or var == 0:
        raise ValueError("fit_line: needs at least two different x values")
    slope = float((dx * (ys - ys.mean())).sum() / var)
    return slope, float(ys.mean() - slope * xs.mean())


def gain_slope(
    deltas: Sequence[float],
    runs: Sequence[Sequence[float]],
    base: Sequence[float],
    indices: np.ndarray,
) -> tuple[Interval, float]:
    """Slope of (run accuracy - base accuracy) against each run's generator delta, with
    its bootstrap interval, and the fitted intercept."""
    outcomes = np.asarray(runs, dtype=float) - np.asarray(base, dtype=float)  # runs x prompts
    slope, intercept = fit_line(deltas, outcomes.mean(axis=1))
    x = np.asarray(deltas, dtype=float)
    dx = x - x.mean()
    gains = outcomes[:, indices].mean(axis=2)  # runs x resamples
    slopes = (dx[:, None] * (gains - gains.mean(axis=0))).sum(axis=0) / float((dx * dx).sum())
    return Interval(slope, *_percentiles(slopes)), intercept
