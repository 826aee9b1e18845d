"""Pairing strategies and delta arithmetic, with every number worked out by hand."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from prefdelta.builders.deltas import aggregate, generator_gap, generator_means
from prefdelta.builders.pairs import make_pairs
from prefdelta.recipe import BuildRecipe, parse_recipe

DIMS = ["factuality", "step_coherence"]

RECIPE: dict[str, Any] = {
    "name": "hand",
    "prompts": {"dataset": "org/problems"},
    "generators": {
        g: {"model": f"org/{g}", "backend": "transformers"} for g in ("strong", "weak", "weaker")
    },
    "pairing": {"chosen": "strong", "rejected": ["weak", "weaker"]},
    "judge": {"model": "org/judge", "backend": "transformers", "dimensions": DIMS},
}


def recipe(**overrides: Any) -> BuildRecipe:
    data = copy.deepcopy(RECIPE)
    for key, value in overrides.items():
        data[key] = value
    return parse_recipe(yaml.safe_dump(data))


def trace(prompt: str, gen: str, f: float | None, s: float | None, correct: bool) -> dict[str, Any]:
    ok = f is not None
    return {
        "prompt_id": f"id-{prompt}",
        "prompt": prompt,
        "generator": gen,
        "model": f"org/{gen}",
        "sample": 0,
        "trace_key": f"{prompt}-{gen}",
        "trace": f"{gen} answers {prompt}",
        "scores": {"factuality": f, "step_coherence": s} if ok else {},
        "judge_status": "ok" if ok else "parse_error",
        "correct": correct,
    }


TRACES = [
    # p1: strong 4.5, weak 2.5, weaker 1.0 (means of the two dimensions)
    trace("p1", "strong", 5, 4, True),
    trace("p1", "weak", 3, 2, False),
    trace("p1", "weaker", 1, 1, False),
    # p2: strong 3.0, weak 3.0 (a tie), weaker unparseable
    trace("p2", "strong", 3, 3, True),
    trace("p2", "weak", 4, 2, True),
    trace("p2", "weaker", None, None, False),
]


def gaps_for(r: BuildRecipe) -> dict[tuple[str, str], Any]:
    means = generator_means(TRACES, DIMS, r.delta)
    names = list(r.generators)
    return {(a, b): generator_gap(means, a, b) for a in names for b in names}


def test_generator_means_and_gaps() -> None:
    r = recipe()
    means = generator_means(TRACES, DIMS, r.delta)
    assert means["strong"] == (pytest.approx(3.75), 1.0, 2)  # (4.5 + 3) / 2
    assert means["weak"] == (pytest.approx(2.75), 0.5, 2)  # (2.5 + 3) / 2
    assert means["weaker"] == (pytest.approx(1.0), 0.0, 1)  # its p2 trace was not judged
    gap = generator_gap(means, "strong", "weaker")
    assert gap.score_gap == pytest.approx(2.75)
    assert gap.accuracy_gap == pytest.approx(1.0)
    assert (gap.chosen_traces, gap.rejected_traces) == (2, 1)


def test_generator_pairing_keeps_ties_by_default_and_counts_failures() -> None:
    r = recipe()
    report = make_pairs(TRACES, r, gaps_for(r))
    got = [
        (
            p["prompt_id"],
            p["rejected_generator"],
            p["delta_factuality"],
            p["delta_step_coherence"],
            p["delta"],
        )
        for p in report.pairs
    ]
    assert got == [
        ("id-p1", "weak", 2.0, 2.0, 2.0),
        ("id-p1", "weaker", 4.0, 3.0, 3.5),
        ("id-p2", "weak", -1.0, 1.0, 0.0),  # a tie, kept with delta 0
        ("id-p2", "weaker", None, None, None),  # weaker's trace was not judged: no deltas
    ]
    assert report.ties_kept == 1 and report.ties_dropped == 0
    assert dict(report.unjudged) == {"parse_error": 1} and report.unjudged_kept == 1
    unjudged = report.pairs[3]
    assert (unjudged["chosen_judge_status"], unjudged["rejected_judge_status"]) == (
        "ok",
        "parse_error",
    )
    assert unjudged["chosen_scores"] == {"factuality": 3.0, "step_coherence": 3.0}
    assert unjudged["rejected_scores"] == {"factuality": None, "step_coherence": None}
    assert unjudged["generator_delta"] == pytest.approx(2.75)  # still a generator-level pair
    first = report.pairs[0]
    assert first["generator_delta"] == pytest.approx(1.0)  # 3.75 - 2.75
    assert first["generator_accuracy_delta"] == pytest.approx(0.5)
    assert report.pairs[1]["generator_delta"] == pytest.approx(2.75)
    assert first["chosen"] == [{"role": "assistant", "content": "strong answers p1"}]
    assert first["prompt"] == [{"role": "user", "content": "p1"}]
    assert first["chosen_scores"] == {"factuality": 5.0, "step_coherence": 4.0}
    assert (first["chosen_correct"], first["rejected_correct"]) == (True, False)
    assert first["chosen_model"] == "org/strong" and first["judge_model"] == "org/judge"


def test_generator_pairing_drops_ties_and_unjudged_pairs_when_asked() -> None:
    r = recipe(
        pairing={
            "chosen": "strong",
            "rejected": ["weak", "weaker"],
            "ties": "drop",
            "unjudged": "drop",
        }
    )
    report = make_pairs(TRACES, r, gaps_for(r))
    assert [p["delta"] for p in report.pairs] == [2.0, 3.5]
    assert report.ties_dropped == 1
    assert dict(report.unjudged) == {"parse_error": 1} and report.unjudged_kept == 0
    assert report.prompts_without_pair == 1  # p2 lost its tie and its unjudged pair


def test_weighted_aggregate() -> None:
    r = recipe(delta={"weights": {"factuality": 3, "step_coherence": 1}})
    assert aggregate({"factuality": 5, "step_coherence": 4}, DIMS, r.delta) == pytest.approx(4.75)
    report = make_pairs(TRACES, r, gaps_for(r))
    # p1 strong vs weaker: (3 * 4 + 1 * 3) / 4
    assert report.pairs[1]["delta"] == pytest.approx(3.75)
    # p2 strong vs weak: (3*3 + 3) / 4 - (3*4 + 2) / 4 = 3 - 3.5
    assert report.pairs[2]["delta"] == pytest.approx(-0.5)


def test_best_vs_worst_within_a_pool() -> None:
    r = recipe(pairing={"strategy": "best-vs-worst", "pool": ["strong", "weak", "weaker"]})
    report = make_pairs(TRACES, r, gaps_for(r))
    assert [(p["chosen_generator"], p["rejected_generator"], p["delta"]) for p in report.pairs] == [
        ("strong", "weaker", 3.5)
    ]
    # p2: strong and weak both 3.0 -> a tie, dropped by default for best-vs-worst
    assert report.ties_dropped == 1
    assert report.prompts_without_pair == 1
    assert dict(report.unjudged_traces) == {"parse_error": 1} and not report.unjudged


def test_best_vs_worst_samples_of_one_generator() -> None:
    r = recipe(pairing={"strategy": "best-vs-worst", "pool": ["strong"]})
    samples = [
        {**trace("p1", "strong", 2, 2, False), "sample": 0, "trace_key": "k0"},
        {**trace("p1", "strong", 5, 5, True), "sample": 1, "trace_key": "k1"},
        {**trace("p1", "strong", 3, 4, False), "sample": 2, "trace_key": "k2"},
    ]
    means = generator_means(samples, DIMS, r.delta)
    report = make_pairs(
        samples, r, {("strong", "strong"): generator_gap(means, "strong", "strong")}
    )
    (pair,) = report.pairs
    assert (pair["chosen_trace_key"], pair["rejected_trace_key"]) == ("k1", "k0")
    assert pair["delta"] == 3.0
    assert pair["generator_delta"] == 0.0
