"""The intervals every figure prefdelta reports carries, from scipy, in one place.

The judge's validity report (:mod:`prefdelta.builders.judge.validity`) and the sweep's error bars
(:mod:`prefdelta.train.sweep`) ask the same questions of small samples: how sure is a
proportion, an AUC, a correlation, a paired difference. scipy answers each; this module
only fixes the choices (95%, the Wilson interval, percentile bootstraps over one seeded
set of prompt resamples) so both stages say the same thing the same way. The human review's
agreement figures (:mod:`prefdelta.review.agreement`) use the same bootstrap over the
reviewed records, and a judge panel's inter-judge agreement (Krippendorff's alpha) the
same bootstrap over the judged traces.

Hanley & McNeil's AUC interval is written out: scipy has no AUC interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "RESAMPLES",
    "Z95",
    "Interval",
    "auc_interval",
    "bootstrap_indices",
    "bootstrap_interval",
    "fit_line",
    "gain_slope",
    "krippendorff_alpha",
    "krippendorff_interval",
    "mann_whitney_auc",
    "paired_difference",
    "pearson",
    "pearson_interval",
    "wilson",
]

Z95 = float(stats.norm.ppf(0.975))  # 1.959963984540054
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


def wilson(successes: int, n: int) -> Interval:
    """Proportion ``successes / n`` with its 95% Wilson score interval: sane at small n and
    right at 0 and 1, where the normal approximation is not."""
    if n <= 0:
        raise ValueError("wilson: n must be positive")
    ci = stats.binomtest(successes, n).proportion_ci(0.95, method="wilson")
    return Interval(successes / n, max(0.0, float(ci.low)), min(1.0, float(ci.high)))


def mann_whitney_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counted half: the Mann-Whitney U
    of the positives over the number of pairs."""
    n1, n0 = len(positives), len(negatives)
    if not n1 or not n0:
        raise ValueError("both classes need at least one value")
    u = stats.mannwhitneyu(positives, negatives, alternative="two-sided").statistic
    return float(u) / (n1 * n0)


def auc_interval(auc: float, n_pos: int, n_neg: int) -> tuple[float, float]:
    """95% normal interval from the Hanley & McNeil (1982) standard error, clipped to [0, 1].

    The SE collapses to 0 at AUC 0 or 1, which is one reason a small class reads
    "too few to tell" whatever this interval says.
    """
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    se = math.sqrt(max(var, 0.0))
    return max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se)


def _varies(values: Sequence[float]) -> bool:
    return any(v != values[0] for v in values)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson r, or None when either side has no variation (r is undefined there)."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    if len(xs) < 2 or not _varies(xs) or not _varies(ys):
        return None
    return max(-1.0, min(1.0, float(stats.pearsonr(xs, ys).statistic)))


def pearson_interval(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """95% interval for Pearson r through Fisher's z (SE 1/sqrt(n - 3)); None below 4
    points or where r is undefined."""
    if len(xs) < 4 or pearson(xs, ys) is None:
        return None
    ci = stats.pearsonr(xs, ys).confidence_interval(0.95)
    return float(ci.low), float(ci.high)


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """The ``resamples`` x ``n`` prompt indices that :func:`paired_difference` and
    :func:`gain_slope` resample with ``seed``: scipy's paired bootstrap draws exactly these
    (``default_rng(seed).integers(0, n, (resamples, n))``), so every comparison on one eval
    set sees the same resampled prompts."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(
    samples: Sequence[Sequence[float]],
    statistic: Callable[..., np.ndarray],
    resamples: int,
    seed: int,
) -> tuple[float, float]:
    """:func:`bootstrap_interval` of a statistic that is defined on every resample."""
    interval = bootstrap_interval(samples, statistic, resamples=resamples, seed=seed)
    assert interval is not None  # a mean difference or a slope is never undefined
    return interval


def bootstrap_interval(
    samples: Sequence[Sequence[float]],
    statistic: Callable[..., np.ndarray],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile 95% interval of ``statistic`` over units resampled together.

    ``samples`` are per-unit columns of equal length (unit ``i`` is ``s[i]`` of each);
    ``statistic(*columns, axis=-1)`` is vectorized and returns NaN where it is undefined
    for a resample (a kappa whose chance agreement is 1). The resamples are
    :func:`bootstrap_indices` with ``seed``; undefined ones are left out of the percentiles,
    and None says every resample was undefined.
    """
    columns = [np.asarray(s, dtype=float) for s in samples]
    if columns[0].shape[-1] < 2:  # one unit: every resample is that unit
        value = float(statistic(*columns, axis=-1))
        return None if math.isnan(value) else (value, value)
    with warnings.catch_warnings():  # NaN resamples: scipy warns, the quantiles below omit them
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        with np.errstate(invalid="ignore", divide="ignore"):
            result = stats.bootstrap(
                columns,
                statistic,
                n_resamples=resamples,
                paired=True,
                vectorized=True,
                axis=-1,
                method="percentile",
                rng=np.random.default_rng(seed),
            )
    distribution = np.asarray(result.bootstrap_distribution, dtype=float)
    if np.isnan(distribution).all():
        return None
    low, high = stats.quantile(distribution, [0.025, 0.975], nan_policy="omit")
    return float(low), float(high)


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0
) -> Interval:
    """Mean of ``a`` minus mean of ``b`` (per-prompt outcomes, same prompts, same order),
    with the percentile interval of a paired bootstrap over the prompts: both runs answered
    the same prompts, so each prompt's pair of outcomes is resampled together."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_difference: {x.size} outcomes against {y.size}")

    def mean_difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(x - y, axis=axis)

    return Interval(float((x - y).mean()), *_interval((x, y), mean_difference, resamples, seed))


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of ``y`` on ``x``; needs two distinct ``x``."""
    xs = np.asarray(x, dtype=float)
    if xs.size < 2 or not _varies(list(xs)):
        raise ValueError("fit_line: needs at least two different x values")
    fit = stats.linregress(xs, np.asarray(y, dtype=float))
    return float(fit.slope), float(fit.intercept)


def gain_slope(
    deltas: Sequence[float],
    runs: Sequence[Sequence[float]],
    base: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[Interval, float]:
    """Slope of (run accuracy - base accuracy) against each run's generator delta, with the
    percentile interval of the refitted slope over the same paired prompt resamples, and
    the fitted intercept. It measures eval noise only: one run per generator pair carries
    no run-to-run training noise."""
    outcomes = np.asarray(runs, dtype=float) - np.asarray(base, dtype=float)  # runs x prompts
    slope, intercept = fit_line(deltas, outcomes.mean(axis=1))
    dx = np.asarray(deltas, dtype=float)
    dx = dx - dx.mean()

    def refit(*per_run: np.ndarray, axis: int) -> np.ndarray:
        gains = np.stack([r.mean(axis=axis) for r in per_run])  # runs x resamples
        return (dx.reshape(-1, *[1] * (gains.ndim - 1)) * (gains - gains.mean(axis=0))).sum(
            axis=0
        ) / float((dx * dx).sum())

    low, high = _interval(list(outcomes), refit, resamples, seed)
    return Interval(slope, low, high), intercept


def _alpha(*coders: np.ndarray, axis: int = -1) -> np.ndarray:
    """Vectorized interval alpha: each of ``coders`` holds one coder's values per unit along
    ``axis`` (NaN: not coded); NaN where the pairable values do not vary."""
    values = np.moveaxis(np.stack(coders), axis if axis < 0 else axis + 1, -1)
    coded = ~np.isnan(values)
    v = np.where(coded, values, 0.0)
    m = coded.sum(axis=0)  # values per unit
    pairable = m >= 2  # a unit coded once carries no agreement
    s1 = np.where(pairable, v.sum(axis=0), 0.0)
    s2 = np.where(pairable, (v * v).sum(axis=0), 0.0)
    mp = np.where(pairable, m, 0)
    # sum over ordered pairs within a unit of (a - b)^2 is 2 (m S2 - S1^2)
    within = np.where(pairable, 2 * (mp * s2 - s1 * s1) / np.maximum(mp - 1, 1), 0.0).sum(-1)
    n = mp.sum(-1)
    total = 2 * (n * s2.sum(-1) - s1.sum(-1) ** 2)  # the same over every pairable value
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = 1 - (n - 1) * within / total
    return np.where((total > 0) & (n > 1), alpha, np.nan)


def krippendorff_alpha(coders: Sequence[Sequence[float | None]]) -> float | None:
    """Krippendorff's alpha for interval data: ``coders[c][u]`` is coder ``c``'s value of
    unit ``u`` (None: not coded). 1 - D_o / D_e, where D_o is the mean squared difference
    of values within a unit and D_e the same over all pairable values (Krippendorff 2011,
    "Computing Krippendorff's alpha-reliability"); units coded fewer than twice are left
    out. None when the pairable values do not vary (alpha is undefined there)."""
    columns = [np.array([np.nan if x is None else x for x in c], dtype=float) for c in coders]
    value = float(_alpha(*columns))
    return None if math.isnan(value) else value


def krippendorff_interval(
    coders: Sequence[Sequence[float | None]], *, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile 95% interval of :func:`krippendorff_alpha` over units resampled (each
    unit with all its coders' values): :func:`bootstrap_interval`."""
    columns = [np.array([np.nan if x is None else x for x in c], dtype=float) for c in coders]
    return bootstrap_interval(columns, _alpha, resamples=resamples, seed=seed)
