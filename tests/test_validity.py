"""Judge validity checks, every number worked out by hand on small tables."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from prefdelta.builders.judge.validity import judge_validity, validity_markdown, validity_rows
from prefdelta.stats import Z95, auc_interval, mann_whitney_auc, pearson, pearson_interval, wilson


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    iv = wilson(successes, n)
    return iv.low, iv.high


DIMS = ["factuality", "step_coherence"]


def trace(
    key: str,
    correct: bool | None,
    fact: float | None,
    coh: float | None = 3.0,
    *,
    status: str = "ok",
    tokens: int = 100,
    generator: str = "g",
) -> dict[str, Any]:
    ok = status == "ok"
    scores = {"factuality": fact if ok else None, "step_coherence": coh if ok else None}
    agg = (fact + coh) / 2 if ok and fact is not None and coh is not None else None
    return {
        "trace_key": key,
        "generator": generator,
        "correct": correct,
        "scores": scores,
        "aggregate": agg,
        "judge_status": status,
        "output_tokens": tokens,
    }


def pair(
    chosen: str,
    rejected: str,
    delta: float | None,
    *,
    ck: str = "c",
    rk: str = "r",
    fact: float | None = None,
    coh: float | None = None,
) -> dict[str, Any]:
    return {
        "chosen_generator": chosen,
        "rejected_generator": rejected,
        "chosen_trace_key": ck,
        "rejected_trace_key": rk,
        "delta": delta,
        "delta_factuality": delta if fact is None else fact,
        "delta_step_coherence": delta if coh is None else coh,
    }


# --- verifier agreement -------------------------------------------------------------------

# Factuality: correct traces score 5, 4, 3; incorrect ones 3, 2. Of the 3 x 2 = 6
# (correct, incorrect) pairs, (3, 3) is a tie and the other five have the correct trace
# higher, so AUC = (5 + 0.5) / 6 = 11/12. Hanley & McNeil with A = 11/12, n1 = 3, n0 = 2:
#   Q1 = A / (2 - A) = 11/13,   Q2 = 2 A^2 / (1 + A) = 121/138,   A^2 = 121/144
#   var = (A(1 - A) + 2 (Q1 - A^2) + 1 (Q2 - A^2)) / 6
#       = (11/144 + 22/1872 + 121/3312) / 6 = 0.0207791...,   SE = 0.144150...
#   CI = 11/12 -/+ 1.959964 * 0.144150 = [0.634138, 1.199 -> clipped to 1.0]
HAND_TRACES = [
    trace("c1", True, 5.0, coh=1.0),
    trace("c2", True, 4.0, coh=2.0),
    trace("c3", True, 3.0, coh=3.0),
    trace("i1", False, 3.0, coh=4.0),
    trace("i2", False, 2.0, coh=5.0),
    # ignored: the judge failed (its scores are left in place here, so only the status
    # keeps this incorrect trace with a top factuality score out of the AUC)
    {**trace("bad", False, 5.0, coh=5.0), "judge_status": "parse_error"},
    # ignored: no reference to check against
    trace("noref", None, 1.0, coh=1.0),
]


def test_auc_by_hand_with_a_tie_counted_half() -> None:
    assert mann_whitney_auc([5, 4, 3], [3, 2]) == pytest.approx(11 / 12)
    var = (11 / 144 + 22 / 1872 + 121 / 3312) / 6
    assert var == pytest.approx(0.0207791, abs=1e-7)
    lo, hi = auc_interval(11 / 12, 3, 2)
    assert lo == pytest.approx(11 / 12 - 1.959964 * math.sqrt(var), abs=1e-6)
    assert lo == pytest.approx(0.634138, abs=1e-6)
    assert hi == 1.0


def test_verifier_agreement_on_the_hand_table() -> None:
    va = judge_validity(HAND_TRACES, [], DIMS, "generators")["verifier_agreement"]
    assert va["n_with_reference"] == 6  # "bad" has a reference, "noref" does not
    assert va["n_judged"] == 5
    fact = va["dimensions"]["factuality"]
    assert fact["auc"] == pytest.approx(11 / 12)
    assert fact["ci95"] == pytest.approx([0.634138, 1.0], abs=1e-6)
    assert (fact["n"], fact["n_correct"], fact["n_incorrect"]) == (5, 3, 2)
    assert fact["label"] == "too few to tell"  # 5 traces, 2 incorrect
    # step_coherence is reversed: correct 1, 2, 3 vs incorrect 4, 5 -> every pair lost
    assert va["dimensions"]["step_coherence"]["auc"] == pytest.approx(0.0)
    # aggregate = mean of the two: correct 3, 3, 3 vs incorrect 3.5, 3.5 -> AUC 0
    assert va["aggregate"]["auc"] == pytest.approx(0.0)


def test_failed_judge_rows_are_ignored() -> None:
    # Without the filter "bad" (incorrect, factuality 5) would join the incorrect class:
    # correct 5 beats 3 and 2 and ties 5 (2.5), 4 beats 3 and 2 (2), 3 ties 3 and beats 2
    # (1.5), so the factuality AUC would fall from 11/12 to 6/9 = 2/3.
    only_ok = [t for t in HAND_TRACES if t["judge_status"] == "ok"]
    with_bad = judge_validity(HAND_TRACES, [], DIMS, "generators")
    without = judge_validity(only_ok, [], DIMS, "generators")
    assert (
        with_bad["verifier_agreement"]["dimensions"] == without["verifier_agreement"]["dimensions"]
    )
    assert mann_whitney_auc([5, 4, 3], [3, 2, 5]) == pytest.approx(2 / 3)


def test_missing_references_give_a_reason_not_a_number() -> None:
    no_ref = [trace(f"t{i}", None, 4.0) for i in range(12)]
    va = judge_validity(no_ref, [], DIMS, "generators")["verifier_agreement"]
    for entry in [va["aggregate"], *va["dimensions"].values()]:
        assert entry["auc"] is None and entry["ci95"] is None
        assert entry["reason"] == "no references"
        assert entry["n"] == 0

    all_right = [trace(f"t{i}", True, 4.0) for i in range(12)]
    agg = judge_validity(all_right, [], DIMS, "generators")["verifier_agreement"]["aggregate"]
    assert (agg["auc"], agg["reason"], agg["n_correct"]) == (None, "no incorrect traces", 12)

    all_wrong = [trace(f"t{i}", False, 4.0) for i in range(12)]
    agg = judge_validity(all_wrong, [], DIMS, "generators")["verifier_agreement"]["aggregate"]
    assert (agg["auc"], agg["reason"]) == (None, "no correct traces")

    unjudged = [trace(f"t{i}", i % 2 == 0, 4.0, status="refused") for i in range(12)]
    agg = judge_validity(unjudged, [], DIMS, "generators")["verifier_agreement"]["aggregate"]
    assert (agg["auc"], agg["reason"]) == (None, "no judged traces with references")


def test_constant_scores_give_auc_half_near_chance() -> None:
    # Every one of the 10 x 10 pairs ties: AUC = 100 * 0.5 / 100 = 0.5.
    # HM at A = 0.5: Q1 = Q2 = 1/3, A^2 = 1/4, var = (1/4 + 9/12 + 9/12) / 100 = 0.0175,
    # SE = 0.132288, CI = 0.5 -/+ 0.259279 = [0.240721, 0.759279].
    flat = [trace(f"t{i}", i < 10, 3.0) for i in range(20)]
    agg = judge_validity(flat, [], DIMS, "generators")["verifier_agreement"]["aggregate"]
    assert agg["auc"] == pytest.approx(0.5)
    assert agg["ci95"] == pytest.approx([0.5 - Z95 * math.sqrt(0.0175), 0.5 + Z95 * 0.1322876])
    assert agg["ci95"] == pytest.approx([0.240721, 0.759279], abs=1e-6)
    assert agg["label"] == "near chance (95% CI includes 0.5)"


def test_good_and_inverted_judge_labels() -> None:
    # 10 correct at 4; incorrect: 8 at 2 and 2 at 4. Wins 10 * 8 = 80, ties 10 * 2 = 20,
    # AUC = (80 + 10) / 100 = 0.9. HM: Q1 = 0.9/1.1, Q2 = 1.62/1.9,
    # var = (0.09 + 9 (Q1 - 0.81) + 9 (Q2 - 0.81)) / 100 = 0.0054731, SE = 0.073981,
    # CI = 0.9 -/+ 0.145000 = [0.755000, 1.0].
    good = [trace(f"c{i}", True, 4.0, coh=4.0) for i in range(10)]
    good += [trace(f"i{i}", False, 2.0 if i < 8 else 4.0, coh=4.0) for i in range(10)]
    fact = judge_validity(good, [], DIMS, "generators")["verifier_agreement"]["dimensions"][
        "factuality"
    ]
    assert fact["auc"] == pytest.approx(0.9)
    assert fact["ci95"] == pytest.approx([0.755000, 1.0], abs=1e-6)
    assert fact["label"] == "agrees with the verifier"

    inverted = [dict(t, correct=not t["correct"]) for t in good]
    fact = judge_validity(inverted, [], DIMS, "generators")["verifier_agreement"]["dimensions"][
        "factuality"
    ]
    assert fact["auc"] == pytest.approx(0.1)
    assert fact["label"] == "inverted: scores favour incorrect traces"

    # a small class: 2 incorrect of 20 is too few, whatever the point estimate
    lopsided = [trace(f"c{i}", True, 5.0) for i in range(18)]
    lopsided += [trace(f"i{i}", False, 1.0) for i in range(2)]
    agg = judge_validity(lopsided, [], DIMS, "generators")["verifier_agreement"]["aggregate"]
    assert agg["auc"] == pytest.approx(1.0)
    assert agg["label"] == "too few to tell"


# --- generator order ----------------------------------------------------------------------


def test_wilson_interval_by_hand() -> None:
    # 8 of 10: p = 0.8, z^2 = 3.841459; centre = (0.8 + z^2/20) / (1 + z^2/10) = 0.716737,
    # half = z sqrt(0.8 * 0.2 / 10 + z^2 / 400) / (1 + z^2/10) = 0.226578
    # -> [0.490162, 0.943318]  (the textbook Wilson interval for 8/10)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.490162, abs=1e-6)
    assert hi == pytest.approx(0.943318, abs=1e-6)
    # 20 of 20: centre = (1 + z^2/40) / (1 + z^2/20), half = (z^2/40) / (1 + z^2/20),
    # so the lower bound is 1 / (1 + z^2/20) = 1 / 1.192073 = 0.838875
    z2 = 1.959964**2
    lo, hi = wilson_interval(20, 20)
    assert lo == pytest.approx(1 / (1 + z2 / 20), abs=1e-6)
    assert lo == pytest.approx(0.838875, abs=1e-6)
    assert hi == pytest.approx(1.0)


def test_generator_order_counts_ties_apart() -> None:
    pairs = [
        pair("strong", "weak", 1.0),
        pair("strong", "weak", 0.5),
        pair("strong", "weak", 0.0),
        pair("strong", "weak", -1.0),
        pair("strong", "weak", 0.0),
        pair("strong", "weaker", 1.0),
        pair("strong", "weaker", 2.0),
        pair("strong", "weaker", None),  # unjudged: not counted anywhere
    ]
    go = judge_validity([], pairs, DIMS, "generators")["generator_order"]
    assert go["applicable"] is True
    weak = go["by_pair"]["strong vs weak"]
    assert (weak["n_pairs"], weak["higher"], weak["lower"], weak["ties"]) == (5, 2, 1, 2)
    assert weak["higher_fraction"] == pytest.approx(0.4)
    assert weak["lower_fraction"] == pytest.approx(0.2)
    assert weak["tie_fraction"] == pytest.approx(0.4)
    assert weak["n_untied"] == 3
    assert weak["win_fraction"] == pytest.approx(2 / 3)  # ties are not half-wins here
    assert weak["ci95"] == pytest.approx(list(wilson_interval(2, 3)))
    assert weak["label"] == "too few to tell"
    overall = go["overall"]
    assert (overall["n_pairs"], overall["higher"], overall["lower"], overall["ties"]) == (
        7,
        4,
        1,
        2,
    )
    assert overall["win_fraction"] == pytest.approx(4 / 5)
    assert go["by_pair"]["strong vs weaker"]["n_pairs"] == 2


def test_generator_order_labels() -> None:
    clear = [pair("s", "w", 1.0) for _ in range(20)]
    e = judge_validity([], clear, DIMS, "generators")["generator_order"]["overall"]
    assert e["ci95"] == pytest.approx([0.838875, 1.0], abs=1e-6)
    assert e["label"] == "sees the generator gap"
    # 8 of 10 looks good but its Wilson interval starts at 0.490: honest label is chance
    eight = [pair("s", "w", 1.0) for _ in range(8)] + [pair("s", "w", -1.0) for _ in range(2)]
    e = judge_validity([], eight, DIMS, "generators")["generator_order"]["overall"]
    assert e["win_fraction"] == pytest.approx(0.8)
    assert e["label"] == "near chance (95% CI includes 0.5)"
    inverted = [pair("s", "w", -1.0) for _ in range(20)]
    e = judge_validity([], inverted, DIMS, "generators")["generator_order"]["overall"]
    assert e["label"] == "inverted: prefers the rejected generator"
    tied = [pair("s", "w", 0.0) for _ in range(12)]
    e = judge_validity([], tied, DIMS, "generators")["generator_order"]["overall"]
    assert (e["win_fraction"], e["tie_fraction"], e["label"]) == (None, 1.0, "all pairs tied")
    e = judge_validity([], [], DIMS, "generators")["generator_order"]["overall"]
    assert (e["n_pairs"], e["label"]) == (0, "no judged pairs")


def test_best_vs_worst_is_not_applicable() -> None:
    pairs = [pair("a", "b", 1.0) for _ in range(20)]
    report = judge_validity([], pairs, DIMS, "best-vs-worst")
    go = report["generator_order"]
    assert go["applicable"] is False
    assert go["overall"] is None and go["by_pair"] == {}
    assert "best-vs-worst" in go["reason"] and "judge score" in go["reason"]
    row = next(r for r in validity_rows(report) if r[0].startswith("generator order"))
    assert row == ("generator order", "n/a", "-", go["reason"])


# --- length bias --------------------------------------------------------------------------


def test_pearson_and_fisher_by_hand() -> None:
    # x = 1, 2, 3, 4 and y = 2, 1, 4, 3: both have mean 2.5, deviations
    # (-1.5, -0.5, 0.5, 1.5) and (-0.5, -1.5, 1.5, 0.5); Sxy = 0.75 * 4 = 3,
    # Sxx = Syy = 2.25 + 0.25 + 0.25 + 2.25 = 5, so r = 3 / 5 = 0.6.
    # Fisher: atanh(0.6) = ln 2 exactly, SE = 1 / sqrt(4 - 3) = 1,
    # CI = tanh(ln 2 -/+ 1.959964) = [-0.852933, 0.990128].
    assert pearson([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
    lo, hi = pearson_interval([1, 2, 3, 4], [2, 1, 4, 3])  # type: ignore[misc]
    assert lo == pytest.approx(math.tanh(math.log(2) - 1.959964), abs=1e-6)
    assert (lo, hi) == pytest.approx((-0.852933, 0.990128), abs=1e-6)
    assert pearson_interval([1, 2, 3], [2, 1, 3]) is None  # under 4 points
    assert pearson([1, 1, 1], [1, 2, 3]) is None


def test_length_bias_on_a_four_pair_table() -> None:
    # Token differences chosen - rejected of 200, 100, 400, 300 (y = 2, 1, 4, 3 scaled by
    # 100, which leaves r alone) against deltas 1, 2, 3, 4: r = 0.6 as worked out above.
    traces = [trace(f"r{i}", None, 3.0, tokens=50) for i in range(6)]
    traces += [trace(f"c{i}", None, 3.0, tokens=50 + d) for i, d in enumerate([200, 100, 400, 300])]
    traces += [trace("c4", None, 3.0, tokens=-1), trace("c5", None, 3.0, tokens=999)]
    pairs = [pair("s", "w", float(i + 1), ck=f"c{i}", rk=f"r{i}", fact=1.0) for i in range(4)]
    pairs.append(pair("s", "w", 5.0, ck="c4", rk="r4"))  # unknown chosen tokens: skipped
    pairs.append(pair("s", "w", None, ck="c5", rk="r5"))  # unjudged: skipped
    lb = judge_validity(traces, pairs, DIMS, "generators")["length_bias"]
    agg = lb["aggregate"]
    assert agg["r"] == pytest.approx(0.6)
    assert agg["n"] == 4
    assert agg["ci95"] == pytest.approx([-0.852933, 0.990128], abs=1e-6)
    assert agg["label"] == "too few to tell"
    assert lb["n_unknown_tokens"] == 1
    assert lb["dimensions"]["step_coherence"]["r"] == pytest.approx(0.6)
    fact = lb["dimensions"]["factuality"]  # delta_factuality is 1.0 in all four
    assert (fact["r"], fact["reason"]) == (None, "no variation in delta_factuality")


def test_constant_token_difference_gives_a_reason() -> None:
    traces = [trace(f"k{i}", None, 3.0, tokens=100) for i in range(24)]
    pairs = [pair("s", "w", float(i), ck=f"k{i}", rk=f"k{i + 12}") for i in range(12)]
    agg = judge_validity(traces, pairs, DIMS, "generators")["length_bias"]["aggregate"]
    assert (agg["r"], agg["n"]) == (None, 12)
    assert agg["reason"] == "no variation in output_tokens difference"


def _length_table(deltas: list[float], diffs: list[int]) -> dict[str, Any]:
    traces = [trace(f"r{i}", None, 3.0, tokens=1000) for i in range(len(deltas))]
    traces += [trace(f"c{i}", None, 3.0, tokens=1000 + d) for i, d in enumerate(diffs)]
    pairs = [pair("s", "w", d, ck=f"c{i}", rk=f"r{i}") for i, d in enumerate(deltas)]
    return judge_validity(traces, pairs, DIMS, "generators")["length_bias"]["aggregate"]


def test_length_bias_labels() -> None:
    deltas = [float(i) for i in range(12)]
    longer = _length_table(deltas, [10 * i + (i % 3) for i in range(12)])
    assert longer["r"] > 0.99 and longer["ci95"][0] > 0
    assert longer["label"] == "favours longer traces"
    shorter = _length_table(deltas, [-10 * i for i in range(12)])
    assert shorter["r"] == pytest.approx(-1.0)
    assert shorter["label"] == "favours shorter traces"
    # diffs alternate -/+ in a pattern orthogonal to the deltas: mean-centred deltas
    # (-5.5 .. 5.5) dotted with (+1, -1, -1, +1, ...) = 0, so r = 0 exactly
    none = _length_table(deltas, [1, -1, -1, 1] * 3)
    assert none["r"] == pytest.approx(0.0, abs=1e-12)
    assert none["ci95"] == pytest.approx(
        [math.tanh(-1.959964 / 3), math.tanh(1.959964 / 3)], abs=1e-6
    )
    assert none["label"] == "no clear length bias (95% CI includes 0)"


# --- presentation -------------------------------------------------------------------------


def test_rows_and_markdown() -> None:
    pairs = [pair("a|b", "c", 1.0) for _ in range(3)] + [pair("a|b", "c", 0.0)]
    report = judge_validity(HAND_TRACES, pairs, DIMS, "generators")
    json.dumps(report, allow_nan=False)  # goes into summary.json as is
    rows = validity_rows(report)
    assert rows[0] == ("verifier AUC: aggregate", "0.00 [0.00, 0.00]", "5 traces (3 correct)",
                       "too few to tell")  # fmt: skip
    assert rows[1] == (
        "verifier AUC: factuality",
        "0.92 [0.63, 1.00]",
        "5 traces (3 correct)",
        "too few to tell",
    )
    assert ("generator order: a|b vs c", "1.00 [0.44, 1.00]", "4 pairs (1 tied)",
            "too few to tell") in rows  # fmt: skip
    length = [r for r in rows if r[0].startswith("length bias")]
    assert [r[0] for r in length] == [
        "length bias r: aggregate",
        "length bias r: factuality",
        "length bias r: step_coherence",
    ]
    # every pair points at trace keys "c"/"r" that are not in the table
    assert length[0][1:] == ("n/a", "0 pairs", "no pairs with deltas and token counts")

    md = validity_markdown(report)
    lines = md.splitlines()
    assert "measure the judge, not the data" in lines[0]
    assert lines[2] == "| Check | Value [95% CI] | n | Verdict |"
    assert "| generator order: a\\|b vs c | 1.00 [0.44, 1.00] | 4 pairs (1 tied) |" in md
    assert len([ln for ln in lines if ln.startswith("| ")]) == 2 + len(rows)  # header, rule
