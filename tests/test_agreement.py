"""Unit tests: Cohen's kappa and agreement counts, and the delta-stratified review sample.

Expected values are worked out by hand in the comments, not by another implementation.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from prefdelta.review.agreement import (
    DEFAULT_TIE_BAND,
    GeneratorPreference,
    agreement,
    agreement_table,
    cohen_kappa,
    generator_preference,
    judge_label,
    reviewer_agreement,
)
from prefdelta.review.sample import allocate, bucket_edges, stratified_sample
from prefdelta.stats import RESAMPLES, bootstrap_indices

C, R, S = "chosen", "rejected", "same"


# ----------------------------------------------------------------------------- kappa


def test_kappa_by_hand() -> None:
    # 10 (judge, human) pairs: agree on 4 chosen + 2 rejected + 1 same -> p_o = 7/10.
    # judge: chosen 6, rejected 3, same 1; human: chosen 5, rejected 3, same 2.
    # p_e = (6*5 + 3*3 + 1*2) / 10^2 = 41/100; kappa = (0.70 - 0.41) / 0.59 = 29/59.
    pairs = [(C, C)] * 4 + [(C, R), (C, S)] + [(R, R)] * 2 + [(R, C), (S, S)]
    assert cohen_kappa(pairs) == pytest.approx(29 / 59)
    a = agreement("overall", pairs)
    assert (a.n, a.agree) == (10, 7)
    assert a.accuracy == pytest.approx(0.7)
    assert a.kappa == pytest.approx(0.4915254, abs=1e-7)
    assert a.judge == {C: 6, R: 3, S: 1}
    assert a.human == {C: 5, R: 3, S: 2}
    assert a.confusion[C] == {C: 4, R: 1, S: 1}
    assert a.confusion[R] == {C: 1, R: 2, S: 0}
    assert a.confusion[S] == {C: 0, R: 0, S: 1}


def test_kappa_extremes() -> None:
    assert cohen_kappa([(C, C), (R, R), (S, S)]) == pytest.approx(1.0)
    # Always opposite: p_o = 0, p_e = (1*1 + 1*1) / 4 = 1/2 -> kappa = -1.
    assert cohen_kappa([(C, R), (R, C)]) == pytest.approx(-1.0)
    # Agreement no better than chance: p_o = 1/2, p_e = (1*2 + 1*0) / 4... judge C,C; human C,R:
    # judge chosen 2; human chosen 1, rejected 1 -> p_e = 2*1/4 = 1/2, p_o = 1/2 -> kappa 0.
    assert cohen_kappa([(C, C), (C, R)]) == pytest.approx(0.0)


def test_kappa_undefined() -> None:
    assert cohen_kappa([]) is None
    assert cohen_kappa([(C, C)] * 3) is None  # p_e = 1: one label for everything, both raters
    empty = agreement("x", [])
    assert (empty.n, empty.accuracy, empty.kappa) == (0, None, None)


def test_ties_are_a_category() -> None:
    # A reviewer's "same" against a judge's gap is a disagreement, not half a point.
    a = agreement("d", [(C, S), (S, S)])
    assert a.accuracy == pytest.approx(0.5)
    # judge chosen 1, same 1; human same 2 -> p_e = (1*2)/4 = 1/2 -> kappa 0.
    assert a.kappa == pytest.approx(0.0)


def test_judge_label_is_the_sign() -> None:
    assert [judge_label(x) for x in (2.0, 0.25, 0.0, -0.0, -1.0, None)] == [C, C, S, S, R, None]


def test_tie_band_at_its_edges() -> None:
    # |delta| < band is "same"; at the band's edge the judge already has a view
    band = 0.25
    deltas = (0.25, 0.2499, 0.0, -0.2499, -0.25, 0.26, -1.0, None)
    assert [judge_label(d, band) for d in deltas] == [C, S, S, S, R, C, R, None]
    # a band of 0 keeps only an exact 0 (the old rule); a tiny gap is a view
    assert [judge_label(d, 0.0) for d in (0.0, 0.001, -0.001)] == [S, C, R]
    assert DEFAULT_TIE_BAND == 0.25


def test_agreement_table_skips_missing_answers() -> None:
    rows = [
        {"overall": C, "judge_overall": C, "f": S, "judge_f": C},
        {"overall": R, "judge_overall": C, "f": None, "judge_f": C},
    ]
    overall, f = agreement_table(rows, ["overall", "f"])
    assert (overall.n, overall.agree) == (2, 1)
    assert (f.n, f.agree) == (1, 0)


def _percentile(values: list[float], q: float) -> float:
    """numpy's default (linear) percentile, written out."""
    s = sorted(values)
    pos = q / 100 * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def test_intervals_resample_records_with_all_their_reviews_by_hand() -> None:
    # five records; p2 and p4 were reviewed twice: 7 (judge, human) comparisons
    rows = [
        {"pair_id": "p1", "annotator": "alice", "overall": C, "judge_overall": C},
        {"pair_id": "p2", "annotator": "alice", "overall": C, "judge_overall": C},
        {"pair_id": "p2", "annotator": "bob", "overall": S, "judge_overall": C},
        {"pair_id": "p3", "annotator": "alice", "overall": R, "judge_overall": R},
        {"pair_id": "p4", "annotator": "alice", "overall": R, "judge_overall": C},
        {"pair_id": "p4", "annotator": "bob", "overall": C, "judge_overall": C},
        {"pair_id": "p5", "annotator": "bob", "overall": S, "judge_overall": S},
    ]
    (a,) = agreement_table(rows, ["overall"], seed=4)
    assert (a.n, a.records, a.agree) == (7, 5, 5)
    # judge c5 r1 s1, human c3 r2 s2: p_e = (15 + 2 + 2) / 49, p_o = 5/7
    assert a.kappa == pytest.approx((5 / 7 - 19 / 49) / (1 - 19 / 49))
    # by hand: each resample draws 5 records (in first-seen order) with all their comparisons
    by_record: dict[int, list[tuple[str, str]]] = {}
    order = ["p1", "p2", "p3", "p4", "p5"]
    for r in rows:
        by_record.setdefault(order.index(r["pair_id"]), []).append(
            (r["judge_overall"], r["overall"])
        )
    accuracies, kappas = [], []
    for row in bootstrap_indices(5, RESAMPLES, seed=4).tolist():
        pairs = [p for i in row for p in by_record[i]]
        accuracies.append(sum(j == h for j, h in pairs) / len(pairs))
        k = cohen_kappa(pairs)
        if k is not None:  # undefined resamples are left out of kappa's interval
            kappas.append(k)
    # a resample that drew one of p1, p3 or p5 five times has one label for everything
    assert len(kappas) < RESAMPLES
    assert a.accuracy_interval == pytest.approx(
        (_percentile(accuracies, 2.5), _percentile(accuracies, 97.5))
    )
    assert a.kappa_interval == pytest.approx((_percentile(kappas, 2.5), _percentile(kappas, 97.5)))
    lo, hi = a.kappa_interval or (0, 0)
    assert lo < (a.kappa or 0) < hi
    # the same pairs with no records named: each comparison is its own unit, another interval
    alone = agreement("overall", [(r["judge_overall"], r["overall"]) for r in rows], seed=4)
    assert alone.records == 7 and alone.accuracy_interval != a.accuracy_interval


def test_reviewers_against_each_other_by_hand() -> None:
    # alice and bob on six records; carol also on r1. Alice's answer is rater 1 (first by name).
    answers = {
        "r1": {"bob": C, "alice": C, "carol": R},
        "r2": {"alice": C, "bob": C},
        "r3": {"alice": R, "bob": R},
        "r4": {"alice": S, "bob": C},
        "r5": {"alice": C, "bob": R},
        "r6": {"alice": S, "bob": S},
        "r7": {"alice": C},  # one reviewer: nothing to compare
    }
    between = reviewer_agreement("overall", answers)
    # pairs: r1 (a,b)=(C,C) (a,c)=(C,R) (b,c)=(C,R); r2 (C,C); r3 (R,R); r4 (S,C); r5 (C,R);
    # r6 (S,S): 8 pairs over 6 records, 4 agree
    assert (between.records, between.n, between.agree) == (6, 8, 4)
    assert between.accuracy == pytest.approx(0.5)
    # rater 1: C C C C R S C S -> c5 r1 s2; rater 2: C R R C R C R S -> c3 r4 s1
    # p_e = (5*3 + 1*4 + 2*1) / 64 = 21/64; kappa = (32/64 - 21/64) / (43/64) = 11/43
    assert between.kappa == pytest.approx(11 / 43)
    assert between.accuracy_interval is not None and between.kappa_interval is not None
    # two reviewers on every record: their Cohen's kappa, by hand
    two = {k: {n: v[n] for n in ("alice", "bob")} for k, v in answers.items() if "bob" in v}
    pair = reviewer_agreement("overall", two)
    # alice C C R S C S (c3 r1 s2), bob C C R C R S (c3 r2 s1): p_o = 4/6,
    # p_e = (9 + 2 + 2) / 36 = 13/36; kappa = (24/36 - 13/36) / (23/36) = 11/23
    assert (pair.n, pair.agree) == (6, 4)
    assert pair.kappa == pytest.approx(11 / 23)
    assert reviewer_agreement("overall", {"r7": {"alice": C}}).n == 0

    # in the table: beside the judge's figures, and absent where no record has two reviewers
    rows = [
        {"pair_id": k, "annotator": name, "overall": label, "judge_overall": C}
        for k, v in answers.items()
        for name, label in v.items()
    ]
    (a,) = agreement_table(rows, ["overall"])
    assert a.between_reviewers == between
    (single,) = agreement_table([r for r in rows if r["annotator"] == "alice"], ["overall"])
    assert single.between_reviewers is None


# ----------------------------------------------------------------------------- sample


def test_bucket_edges() -> None:
    assert bucket_edges([-1.0, 3.0, 0.5], 4) == [-1.0, 0.0, 1.0, 2.0, 3.0]
    assert bucket_edges([2.0, 2.0], 5) == [2.0, 2.0]  # a point: one bucket
    with pytest.raises(ValueError):
        bucket_edges([1.0], 0)


def test_allocate_is_equal_with_water_filling() -> None:
    rng = random.Random(0)
    assert allocate([1, 10, 10], 9, rng) == [1, 4, 4]  # 3 each; the small one gives 2 back
    assert allocate([5, 5], 100, rng) == [5, 5]  # more asked than there is
    uneven = allocate([10, 10, 10], 10, rng)  # 3 each, the 10th to one of them
    assert sorted(uneven) == [3, 3, 4]


def _data(k: int = 60) -> tuple[list[str], list[float], list[str]]:
    rng = random.Random(42)
    ids = [f"p{i:03d}" for i in range(k)]
    deltas = [round(rng.uniform(-1, 3), 2) for _ in ids]
    pairs = ["a vs b" if i % 3 else "a vs c" for i in range(k)]
    return ids, deltas, pairs


def test_sample_counts_per_stratum() -> None:
    # Range [-1, 3] in 4 buckets of width 1. Strata (pair, bucket) -> rows:
    #   a vs b: [-1,0) 1, [0,1) 5, [1,2) 5, [2,3] 5;   a vs c: [0,1) 3, [1,2) 4, [2,3] 4.
    layout = {
        ("a vs b", -1.0): [-1.0],
        ("a vs b", 0.0): [0.0, 0.2, 0.4, 0.6, 0.9],
        ("a vs b", 1.0): [1.0, 1.1, 1.5, 1.7, 1.99],
        ("a vs b", 2.0): [2.0, 2.5, 2.6, 2.9, 3.0],
        ("a vs c", 0.0): [0.1, 0.5, 0.7],
        ("a vs c", 1.0): [1.2, 1.3, 1.4, 1.6],
        ("a vs c", 2.0): [2.1, 2.2, 2.3, 3.0],
    }
    ids, deltas, pairs = [], [], []
    for (pair, _), values in layout.items():
        for v in values:
            ids.append(f"p{len(ids):02d}")
            deltas.append(v)
            pairs.append(pair)
    s = stratified_sample(ids, deltas, pairs, 16, bins=4, seed=0)
    assert len(s) == 16 == sum(x.sampled for x in s.strata)
    got = {(x.generator_pair, x.low): (x.available, x.sampled) for x in s.strata}
    assert {k: a for k, (a, _) in got.items()} == {k: len(v) for k, v in layout.items()}
    # 16 over 7 strata: 2 each, the 1-row stratum gives 1 back, 3 left over 6 open strata: a
    # seeded draw gives 3 of them one more.
    assert got[("a vs b", -1.0)][1] == 1
    rest = sorted(k for k, (_, n) in got.items() if k != ("a vs b", -1.0))
    assert sorted(got[k][1] for k in rest) == [2, 2, 2, 3, 3, 3]
    picked = Counter((pairs[i], float(min(int(deltas[i] + 1), 3) - 1)) for i in s.indices)
    assert picked == {k: n for k, (_, n) in got.items()}


def test_sample_is_deterministic_and_order_free() -> None:
    ids, deltas, pairs = _data()
    a = stratified_sample(ids, deltas, pairs, 20, seed=3)
    b = stratified_sample(ids, deltas, pairs, 20, seed=3)
    assert a == b
    order = list(range(len(ids)))
    random.Random(9).shuffle(order)
    shuffled = stratified_sample(
        [ids[i] for i in order], [deltas[i] for i in order], [pairs[i] for i in order], 20, seed=3
    )
    assert {ids[order[i]] for i in shuffled.indices} == {ids[i] for i in a.indices}
    other = stratified_sample(ids, deltas, pairs, 20, seed=4)
    assert {ids[i] for i in other.indices} != {ids[i] for i in a.indices}


def test_sample_takes_everything_when_n_is_large_and_skips_missing() -> None:
    ids, deltas, pairs = _data(10)
    with_gaps: list[float | None] = list(deltas)
    with_gaps[0] = None
    with_gaps[1] = float("nan")
    s = stratified_sample(ids, with_gaps, pairs, 500, unscored=False)
    assert s.missing == 2
    assert s.indices == list(range(2, 10))
    with pytest.raises(ValueError):
        stratified_sample(ids, deltas, pairs, 0)


def test_pairs_without_a_score_are_a_stratum_per_generator_pair() -> None:
    ids = [f"p{i}" for i in range(12)]
    pairs = ["a vs b"] * 6 + ["a vs c"] * 6
    deltas: list[float | None] = [None, None, None, 1.0, 2.0, 3.0] + [None] * 6
    s = stratified_sample(ids, deltas, pairs, 6, bins=1, seed=0)
    got = {(x.generator_pair, x.label): (x.available, x.sampled) for x in s.strata}
    # three strata of 3, 3 and 6 rows share 6 draws equally
    assert got == {
        ("a vs b", "no score"): (3, 2),
        ("a vs b", "[+1.00, +3.00]"): (3, 2),
        ("a vs c", "no score"): (6, 2),
    }
    assert s.missing == 9 and s.unscored and len(s) == 6
    # a build whose judge scored nothing can still be reviewed, by generator pair alone
    none = stratified_sample(ids, [None] * 12, pairs, 4, seed=0)
    assert [(x.generator_pair, x.label, x.sampled) for x in none.strata] == [
        ("a vs b", "no score", 2),
        ("a vs c", "no score", 2),
    ]
    assert len(stratified_sample(ids, [None] * 12, pairs, 4, unscored=False)) == 0


def test_generator_preference_counts_overall_answers_per_pair() -> None:
    rows = [
        {"generator_pair": "a vs b", "overall": "chosen"},
        {"generator_pair": "a vs b", "overall": "chosen"},
        {"generator_pair": "a vs b", "overall": "same"},
        {"generator_pair": "a vs c", "overall": "rejected"},
        {"generator_pair": "a vs c", "overall": None},  # not answered: not counted
    ]
    got = generator_preference(rows)
    assert got == [
        GeneratorPreference("a vs b", chosen=2, rejected=0, tie=1),
        GeneratorPreference("a vs c", chosen=0, rejected=1, tie=0),
    ]
    assert got[0].n == 3 and got[0].chosen_share == pytest.approx(2 / 3)
    assert generator_preference([]) == []


def test_sample_pairs_on_a_dataset() -> None:
    import datasets

    from prefdelta.review.sample import sample_pairs

    ids, deltas, pairs = _data(30)
    ds = datasets.Dataset.from_dict(
        {
            "pair_id": ids,
            "delta": [0.0] * 30,
            "delta_step_coherence": deltas,
            "chosen_generator": [p.split(" vs ")[0] for p in pairs],
            "rejected_generator": [p.split(" vs ")[1] for p in pairs],
        }
    )
    picked, s = sample_pairs(ds, 10, dimension="step_coherence", seed=1)
    assert s.column == "delta_step_coherence"
    assert len(picked) == 10 and picked["pair_id"] == [ids[i] for i in s.indices]
    assert {x.generator_pair for x in s.strata} == {"a vs b", "a vs c"}
