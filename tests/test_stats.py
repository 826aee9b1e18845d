"""The sweep's interval arithmetic (scipy's, through prefdelta.stats), checked by hand on
small fixed tables: the bootstrap figures are recomputed in plain Python from the same
seeded prompt resamples scipy draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefdelta.stats import (
    Interval,
    bootstrap_indices,
    bootstrap_interval,
    fit_line,
    gain_slope,
    krippendorff_alpha,
    krippendorff_interval,
    paired_difference,
    wilson,
)


def test_wilson_matches_the_published_values() -> None:
    # 8 of 10: the textbook Wilson 95% interval is 0.4902 to 0.9433
    iv = wilson(8, 10)
    assert iv.estimate == 0.8
    assert (round(iv.low, 4), round(iv.high, 4)) == (0.4902, 0.9433)
    # by hand for 0 of 16: centre = (z^2/32) / (1 + z^2/16), half the same, so low = 0
    z = 1.959963984540054
    high = (z * z / 16) / (1 + z * z / 16)
    zero = wilson(0, 16)
    assert zero.low == 0.0 and math.isclose(zero.high, high)
    assert not zero.significant or zero.low > 0  # [0, 0.19] does not exclude zero
    with pytest.raises(ValueError):
        wilson(0, 0)


def _percentile(values: list[float], q: float) -> float:
    """numpy's default (linear) percentile, written out."""
    s = sorted(values)
    pos = q / 100 * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def test_paired_bootstrap_by_hand() -> None:
    run = [1, 1, 0, 1, 0, 1, 1, 0]
    base = [0, 1, 0, 0, 0, 1, 0, 0]
    indices = bootstrap_indices(len(run), resamples=500, seed=7)
    assert indices.shape == (500, 8)
    assert (indices == bootstrap_indices(8, resamples=500, seed=7)).all()  # seeded
    # each resample: the mean over its drawn prompts of (run - base)
    means = [sum(run[i] - base[i] for i in row) / 8 for row in indices.tolist()]
    iv = paired_difference(run, base, resamples=500, seed=7)
    assert iv.estimate == pytest.approx(3 / 8)
    assert iv.low == pytest.approx(_percentile(means, 2.5))
    assert iv.high == pytest.approx(_percentile(means, 97.5))
    assert iv.low > 0 and iv.significant  # three prompts gained, none lost

    # identical outcomes: no difference, and not significant
    same = paired_difference(run, run, resamples=500, seed=7)
    assert (same.estimate, same.low, same.high, same.significant) == (0.0, 0.0, 0.0, False)
    # one gain and one loss: the interval straddles zero
    mixed = paired_difference([1, 0, 0, 0], [0, 1, 0, 0], seed=1)
    assert mixed.estimate == 0.0 and mixed.low < 0 < mixed.high and not mixed.significant
    with pytest.raises(ValueError, match="4 outcomes against 3"):
        paired_difference([1, 0, 0, 0], [1, 0, 0])


def test_gap_regression_by_hand_on_three_points() -> None:
    # (0, 0), (1, 1), (2, 4): x mean 1, y mean 5/3; slope = sum(dx*dy) / sum(dx^2)
    # = ((-1)(-5/3) + 0 + (1)(7/3)) / 2 = 2; intercept = 5/3 - 2 = -1/3
    slope, intercept = fit_line([0, 1, 2], [0, 1, 4])
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(-1 / 3)
    with pytest.raises(ValueError, match="two different x values"):
        fit_line([1, 1], [0, 1])

    # gains over the base of three runs on four prompts: 0, 1/4 and 2/4 at deltas 0.5, 1, 1.5
    base = [0, 0, 1, 0]
    runs = [[0, 0, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0]]
    indices = bootstrap_indices(4, resamples=300, seed=3)
    iv, icpt = gain_slope([0.5, 1.0, 1.5], runs, base, resamples=300, seed=3)
    assert iv.estimate == pytest.approx(0.5) and icpt == pytest.approx(-0.25)  # 0.25 per 0.5
    # each resample's slope, refitted by hand
    slopes = []
    for row in indices.tolist():
        gains = [sum(r[i] - base[i] for i in row) / 4 for r in runs]
        slopes.append(fit_line([0.5, 1.0, 1.5], gains)[0])
    assert iv.low == pytest.approx(_percentile(slopes, 2.5))
    assert iv.high == pytest.approx(_percentile(slopes, 97.5))


def test_significance_means_the_interval_excludes_zero() -> None:
    assert Interval(0.1, 0.01, 0.2).significant
    assert Interval(-0.1, -0.2, -0.01).significant
    assert not Interval(0.1, 0.0, 0.2).significant
    assert not Interval(0.0, -0.1, 0.1).significant
    assert np.isfinite(wilson(3, 3).low)


def test_bootstrap_interval_by_hand_leaving_out_undefined_resamples() -> None:
    values = [1, 0, 1, 1, 0, 1, 1]
    indices = bootstrap_indices(7, resamples=400, seed=5)
    means = [sum(values[i] for i in row) / 7 for row in indices.tolist()]

    def mean(x: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(x, axis=axis)

    low, high = bootstrap_interval([values], mean, resamples=400, seed=5) or (None, None)
    assert low == pytest.approx(_percentile(means, 2.5))
    assert high == pytest.approx(_percentile(means, 97.5))

    # undefined (NaN) where a resample drew only ones: those resamples are left out
    def undefined_at_one(x: np.ndarray, axis: int) -> np.ndarray:
        m = np.mean(x, axis=axis)
        return np.where(m == 1, np.nan, m)

    defined = [m for m in means if m != 1]
    assert 0 < 400 - len(defined) < 400  # (5/7)^7: about one resample in ten is all ones
    low, high = bootstrap_interval([values], undefined_at_one, resamples=400, seed=5) or (0, 0)
    assert low == pytest.approx(_percentile(defined, 2.5))
    assert high == pytest.approx(_percentile(defined, 97.5))
    assert high < 1

    # one unit: the value itself; undefined everywhere: no interval
    assert bootstrap_interval([[0.5]], mean) == (0.5, 0.5)
    assert bootstrap_interval([[1, 1, 1]], undefined_at_one) is None


def test_krippendorff_alpha_and_its_interval_by_hand() -> None:
    """Interval alpha of 3 units x 2 coders, A = (1, 2, 3), B = (1, 3, 3).

    Pairable values: n = 6, {1, 1, 2, 3, 3, 3}. Within units only unit 2 differs: its two
    ordered pairs (2, 3) and (3, 2), over m - 1 = 1, give D_o = (1 + 1) / 6 = 1/3. Over all
    values: value counts n_1 = 2, n_2 = 1, n_3 = 3; ordered pairs of different values
    2 * (2*1*1 + 2*3*4 + 1*3*1) = 58, so D_e = 58 / (6 * 5) = 29/15.
    alpha = 1 - (1/3) / (29/15) = 1 - 5/29 = 24/29.

    The bootstrap draws 3 of the 3 units: the lowest alpha of any resample is all three
    unit 2: values {2, 3} x 3, D_o = 6/6 = 1, D_e = 2 * 9 * 1 / 30 = 3/5, alpha = -2/3,
    with probability 1/27 of all draws and 1/25 of the defined ones (all unit 1 or all
    unit 3 is undefined: nothing varies), above 2.5%: the interval's low end. Any resample
    without unit 2 (and not one unit thrice) agrees perfectly, alpha 1, probability
    6/25 of the defined ones, over 2.5%: the high end."""
    table = [[1, 2, 3], [1, 3, 3]]
    assert krippendorff_alpha(table) == pytest.approx(24 / 29)
    low, high = krippendorff_interval(table)  # type: ignore[misc]
    assert low == pytest.approx(-2 / 3) and high == pytest.approx(1.0)
    # a unit one coder left out counts only where two coders coded it: the same alpha
    assert krippendorff_alpha([[1, 2, 3, None], [1, 3, 3, 5]]) == pytest.approx(24 / 29)
    # perfect agreement is 1; nothing varying is undefined
    assert krippendorff_alpha([[1, 2, 5], [1, 2, 5], [1, 2, 5]]) == pytest.approx(1.0)
    assert krippendorff_alpha([[3, 3], [3, 3]]) is None
    assert krippendorff_interval([[3, 3], [3, 3]]) is None


def test_krippendorff_alpha_matches_the_coincidence_matrix_form() -> None:
    """Three coders with gaps, against Krippendorff's coincidence-matrix definition written
    out in plain Python (pairs within a unit weighted 1 / (m_u - 1))."""
    table = [[1, 2, 3, 3, 2, None], [1, 2, 3, 3, 1, 4], [None, 3, 3, 2, 1, 4]]
    units = [[c[u] for c in table if c[u] is not None] for u in range(6)]
    units = [u for u in units if len(u) >= 2]
    n = sum(len(u) for u in units)
    d_o = (
        sum(
            (a - b) ** 2 / (len(u) - 1)
            for u in units
            for i, a in enumerate(u)
            for j, b in enumerate(u)
            if i != j
        )
        / n
    )
    values = [v for u in units for v in u]
    d_e = sum((a - b) ** 2 for i, a in enumerate(values) for j, b in enumerate(values) if i != j)
    d_e /= n * (n - 1)
    assert krippendorff_alpha(table) == pytest.approx(1 - d_o / d_e)
