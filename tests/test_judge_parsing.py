"""parse_judgment against the answers judges really give, and properties that must hold
for any text: it never raises, and "ok" always means every dimension in range."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefdelta.builders.judge.parsing import JUDGE_STATUSES, Judgment, _parse, parse_judgment
from prefdelta.recipe.rubrics import DEFAULT_DIMENSIONS

DIMS = list(DEFAULT_DIMENSIONS)  # factuality, strategy_coherence, step_coherence, ...
S43 = (4.0, 3.0, 5.0, 2.0, 4.0)  # the scores most cases below encode, in DIMS order


def _nested(scores: tuple[float, ...] = S43) -> str:
    return json.dumps(
        {d: {"score": s, "rationale": f"why {d}"} for d, s in zip(DIMS, scores, strict=True)},
        indent=2,
    )


CASES = [
    # ----------------------------------------------------------------- JSON, as asked
    pytest.param(_nested(), {}, "ok", S43, (), id="clean-nested-json"),
    pytest.param(
        "Here is my evaluation of the trace:\n\n```json\n" + _nested() + "\n```",
        {},
        "ok",
        S43,
        (),
        id="fenced-json-with-preamble",
    ),
    pytest.param("```\n" + _nested() + "\n```", {}, "ok", S43, (), id="fence-without-language"),
    pytest.param(
        _nested() + "\n\nOverall the trace is solid but the arithmetic in step 3 slips.",
        {},
        "ok",
        S43,
        (),
        id="json-then-trailing-prose",
    ),
    pytest.param(
        '{\n  "factuality": {"score": 4, "rationale": "Correct use of Vieta.",},\n'
        '  "strategy_coherence": {"score": 3, "rationale": "Switches approach once.",},\n'
        '  "step_coherence": {"score": 5, "rationale": "Each step follows.",},\n'
        '  "numerical_precision": {"score": 2, "rationale": "Sign error in step 4.",},\n'
        '  "signal_to_noise": {"score": 4, "rationale": "Some repetition.",},\n}',
        {},
        "ok",
        S43,
        (),
        id="trailing-commas",
    ),
    pytest.param(
        "{'factuality': {'score': 4, 'rationale': \"The trace's facts hold.\"}, "
        "'strategy_coherence': {'score': 3, 'rationale': 'Detours.'}, "
        "'step_coherence': {'score': 5, 'rationale': 'Valid.'}, "
        "'numerical_precision': {'score': 2, 'rationale': 'Slip.'}, "
        "'signal_to_noise': {'score': 4, 'rationale': 'Tight.'}}",
        {},
        "ok",
        S43,
        (),
        id="python-dict-single-quotes",
    ),
    pytest.param(
        '{"factuality": 4, "strategy_coherence": 3, "step_coherence": 5, '
        '"numerical_precision": 2, "signal_to_noise": 4}',
        {},
        "ok",
        S43,
        (),
        id="flat-json",
    ),
    pytest.param(
        '{"Factuality": {"score": 4}, "Strategy Coherence": {"score": 3}, '
        '"step-coherence": {"score": 5}, "Numerical Precision": {"score": 2}, '
        '"Signal-to-Noise": {"score": 4}}',
        {},
        "ok",
        S43,
        (),
        id="keys-in-other-cases-and-separators",
    ),
    pytest.param(
        '{"factuality": {"score": "4"}, "strategy_coherence": {"score": "3/5"}, '
        '"step_coherence": {"score": "5 out of 5"}, "numerical_precision": "2", '
        '"signal_to_noise": "4 - mostly focused"}',
        {},
        "ok",
        S43,
        (),
        id="scores-as-strings-and-fractions",
    ),
    pytest.param(
        '{"factuality": 4.5, "strategy_coherence": 3, "step_coherence": 5, '
        '"numerical_precision": 2.5, "signal_to_noise": 4}',
        {},
        "ok",
        (4.5, 3.0, 5.0, 2.5, 4.0),
        (),
        id="half-points",
    ),
    pytest.param(
        '{\n  "factuality": {"score": 4, "rationale": "The step "x = 2" is justified."},\n'
        '  "strategy_coherence": {"score": 3, "rationale": "ok"},\n'
        '  "step_coherence": {"score": 5, "rationale": "ok"},\n'
        '  "numerical_precision": {"score": 2, "rationale": "ok"},\n'
        '  "signal_to_noise": {"score": 4, "rationale": "ok"}\n}',
        {},
        "ok",
        S43,
        (),
        id="unescaped-quotes-in-rationale",
    ),
    pytest.param(
        '{\n  "factuality": 4, // facts are right\n  "strategy_coherence": 3,\n'
        '  "step_coherence": 5, // every step follows\n  "numerical_precision": 2,\n'
        '  "signal_to_noise": 4\n}',
        {},
        "ok",
        S43,
        (),
        id="js-comments",
    ),
    pytest.param(
        "{factuality: 4, strategy_coherence: 3, step_coherence: 5, numerical_precision: 2, "
        "signal_to_noise: 4}",
        {},
        "ok",
        S43,
        (),
        id="bare-keys",
    ),
    pytest.param(
        '{"scores": {"factuality": 4, "strategy_coherence": 3, "step_coherence": 5, '
        '"numerical_precision": 2, "signal_to_noise": 4}, "rationales": {"factuality": '
        '"Uses 2 + 2 = 4 correctly."}, "overall": 4}',
        {},
        "ok",
        S43,
        (),
        id="scores-and-rationales-wrappers",
    ),
    pytest.param(
        '{"evaluation": [{"dimension": "Factuality", "score": 4, "reason": "ok"}, '
        '{"dimension": "Strategy coherence", "score": 3}, {"dimension": "step_coherence", '
        '"rating": 5}, {"dimension": "numerical precision", "score": 2}, '
        '{"dimension": "signal_to_noise", "score": 4}]}',
        {},
        "ok",
        S43,
        (),
        id="list-of-dimension-records",
    ),
    pytest.param(
        '{"factuality_score": 4, "factuality_rationale": "ok", "strategy_coherence_score": 3, '
        '"step_coherence_score": 5, "numerical_precision_score": 2, "signal_to_noise_score": 4}',
        {},
        "ok",
        S43,
        (),
        id="suffixed-flat-keys",
    ),
    pytest.param(
        '{"factuality": {"score": 4, "rationale": "a"}}\n'
        '{"strategy_coherence": {"score": 3, "rationale": "b"}}\n'
        '{"step_coherence": {"score": 5, "rationale": "c"}}\n'
        '{"numerical_precision": {"score": 2, "rationale": "d"}}\n'
        '{"signal_to_noise": {"score": 4, "rationale": "e"}}',
        {},
        "ok",
        S43,
        (),
        id="one-object-per-line",
    ),
    pytest.param(
        '{"factuality": 4, "strategy_coherence": 3, "step_coherence": 5, '
        '"numerical_precision": 2, "signal_to_noise": 4, "overall": 3.6, "verdict": "good"}',
        {},
        "ok",
        S43,
        (),
        id="extra-keys-ignored",
    ),
    # ----------------------------------------------------------------- reasoning judges
    pytest.param(
        "<think>\nThe trace computes 3*4=12, fine. Factuality: maybe 3? Let me recheck...\n"
        "</think>\n\n" + _nested(),
        {},
        "ok",
        S43,
        (),
        id="think-block-then-json",
    ),
    pytest.param(
        "<|channel|>analysis<|message|>Need to grade. factuality: 2?<|end|><|start|>assistant"
        "<|channel|>final<|message|>" + _nested(),
        {},
        "ok",
        S43,
        (),
        id="gpt-oss-harmony-leak",
    ),
    pytest.param(
        "<think>\nLet me look at each step. Step 1 sets up the equation x^2 - 5x + 6 = 0, "
        "which is right. Step 2",
        {"truncated": True},
        "truncated",
        None,
        ("<think>",),
        id="unfinished-think-at-budget",
    ),
    # ----------------------------------------------------------------- prose formats
    pytest.param(
        "Factuality: 4\nStrategy coherence: 3\nStep coherence: 5\nNumerical precision: 2\n"
        "Signal to noise: 4",
        {},
        "ok",
        S43,
        (),
        id="dimension-colon-lines",
    ),
    pytest.param(
        "**Factuality**: 4/5 - The facts are right.\n"
        "**Strategy coherence**: 3/5 - One unexplained switch.\n"
        "**Step coherence:** 5/5\n**Numerical precision**: 2/5 — a sign error propagates.\n"
        "**Signal-to-noise**: 4/5",
        {},
        "ok",
        S43,
        (),
        id="markdown-bold-fractions",
    ),
    pytest.param(
        "## Evaluation\n\n### 1. Factuality\n**Score: 4**\nRationale: correct facts.\n\n"
        "### 2. Strategy Coherence\nScore: 3\n\n### 3. Step Coherence\nScore: 5/5\n\n"
        "### 4. Numerical Precision\nRating: 2\n\n### 5. Signal to Noise\nScore: 4\n",
        {},
        "ok",
        S43,
        (),
        id="markdown-headings-score-below",
    ),
    pytest.param(
        "| Dimension | Score | Rationale |\n|---|---|---|\n| Factuality | 4 | right |\n"
        "| Strategy coherence | 3 | detour |\n| Step coherence | 5 | valid |\n"
        "| Numerical precision | 2 | slip |\n| Signal-to-noise | 4 | tight |",
        {},
        "ok",
        S43,
        (),
        id="markdown-table",
    ),
    pytest.param(
        "1. Factuality (4/5): correct theorems.\n2. Strategy coherence (3/5): detours.\n"
        "3. Step coherence (5/5): valid.\n4. Numerical precision (2/5): arithmetic slip.\n"
        "5. Signal to noise (4/5): mostly focused.",
        {},
        "ok",
        S43,
        (),
        id="numbered-list-parenthesised",
    ),
    pytest.param(
        "- factuality - 4\n- strategy_coherence - 3\n- step_coherence - 5\n"
        "- numerical_precision - 2\n- signal_to_noise - 4",
        {},
        "ok",
        S43,
        (),
        id="snake-case-dash-bullets",
    ),
    pytest.param(
        "Factuality: The trace applies Vieta's formulas correctly. Score: 4\n"
        "Strategy coherence: Picks factoring, then switches. Score: 3\n"
        "Step coherence: Each step follows. Score: 5\n"
        "Numerical precision: 6*7 is given as 43. Score: 2\n"
        "Signal to noise: Little repetition. Score: 4",
        {},
        "ok",
        S43,
        (),
        id="rationale-then-score-on-line",
    ),
    pytest.param(
        "Factuality: 4 out of 5\nStrategy coherence: 3 out of 5\nStep coherence: 5 out of 5\n"
        "Numerical precision: 2 out of 5\nSignal to noise: 4 out of 5",
        {},
        "ok",
        S43,
        (),
        id="out-of-phrasing",
    ),
    pytest.param(
        '{"factuality": 8, "strategy_coherence": 6, "step_coherence": 10, '
        '"numerical_precision": 4, "signal_to_noise": "8/10"}',
        {"scale": (1, 10)},
        "ok",
        (8.0, 6.0, 10.0, 4.0, 8.0),
        (),
        id="ten-point-scale",
    ),
    # ----------------------------------------------------------------- explicit errors
    pytest.param(
        '{"factuality": 4, "strategy_coherence": 3, "step_coherence": 5, '
        '"numerical_precision": 7, "signal_to_noise": 4}',
        {},
        "parse_error",
        None,
        ("numerical_precision", "7", "outside"),
        id="above-scale",
    ),
    pytest.param(
        "Factuality: 0\nStrategy coherence: 3\nStep coherence: 5\nNumerical precision: 2\n"
        "Signal to noise: 4",
        {},
        "parse_error",
        None,
        ("factuality", "0"),
        id="below-scale-zero",
    ),
    pytest.param(
        '{"factuality": "8/10", "strategy_coherence": "6/10", "step_coherence": "10/10", '
        '"numerical_precision": "4/10", "signal_to_noise": "8/10"}',
        {},
        "parse_error",
        None,
        ("factuality", "8/10"),
        id="ten-point-fractions-on-five",
    ),
    pytest.param(
        "**Factuality**: 4/5\n**Strategy coherence**: 3/5\n**Step coherence**: 5/5\n"
        "**Numerical precision**: -1\n**Signal to noise**: 4/5",
        {},
        "parse_error",
        None,
        ("numerical_precision", "-1"),
        id="negative-score",
    ),
    pytest.param(
        '{"factuality": 4, "strategy_coherence": 3, "step_coherence": 5, "numerical_precision": 2}',
        {},
        "parse_error",
        None,
        ("missing", "signal_to_noise"),
        id="missing-dimension",
    ),
    pytest.param(
        '{"factuality": {"score": 4}, "strategy_coherence": {"score": 3}, '
        '"step_coherence": {"score": 5}, "numerical_precision": {"score": "N/A", '
        '"rationale": "no computation"}, "signal_to_noise": {"score": 4}}',
        {},
        "parse_error",
        None,
        ("numerical_precision", "N/A"),
        id="not-applicable-score",
    ),
    pytest.param(
        '{"factuality": null, "strategy_coherence": 3, "step_coherence": 5, '
        '"numerical_precision": 2, "signal_to_noise": 4}',
        {},
        "parse_error",
        None,
        ("factuality", "null"),
        id="null-score",
    ),
    pytest.param(
        '{"factuality": true, "strategy_coherence": 3, "step_coherence": 5, '
        '"numerical_precision": 2, "signal_to_noise": 4}',
        {},
        "parse_error",
        None,
        ("factuality", "true"),
        id="boolean-score",
    ),
    pytest.param(
        '{"factuality": {"score": <1-5>, "rationale": "..."}, "strategy_coherence": '
        '{"score": <1-5>, "rationale": "..."}, "step_coherence": {"score": <1-5>, '
        '"rationale": "..."}, "numerical_precision": {"score": <1-5>, "rationale": "..."}, '
        '"signal_to_noise": {"score": <1-5>, "rationale": "..."}}',
        {},
        "parse_error",
        None,
        ("factuality", "<1-5>"),
        id="echoed-template-skeleton",
    ),
    pytest.param(
        "The reasoning is generally sound, although it wanders in the middle. The final "
        "answer matches the expected result.",
        {},
        "parse_error",
        None,
        ("no score",),
        id="prose-without-scores",
    ),
    pytest.param("", {}, "parse_error", None, ("no text",), id="empty-output"),
    # ----------------------------------------------------------------- refusals
    pytest.param(
        "I'm sorry, but I can't provide numerical scores for this reasoning trace.",
        {},
        "refused",
        None,
        ("declined",),
        id="refusal-sorry",
    ),
    pytest.param(
        "As an AI language model, I cannot evaluate mathematical reasoning with scores.",
        {},
        "refused",
        None,
        (),
        id="refusal-as-an-ai",
    ),
    pytest.param(
        "I cannot verify the final answer independently, but here is my assessment:\n" + _nested(),
        {},
        "ok",
        S43,
        (),
        id="hedge-then-scores-is-not-a-refusal",
    ),
    # ----------------------------------------------------------------- truncation
    pytest.param(
        '{\n  "factuality": {"score": 4, "rationale": "The trace correctly states that the '
        "discriminant of x^2 - 5x + 6 is 1, and",
        {"truncated": True},
        "truncated",
        None,
        ("missing",),
        id="cut-mid-rationale-at-budget",
    ),
    pytest.param(
        '{\n  "factuality": {"score": 4, "rationale": "The trace correctly states that the '
        "discriminant of x^2 - 5x + 6 is 1, and",
        {},
        "parse_error",
        None,
        ("missing",),
        id="cut-mid-rationale-not-at-budget",
    ),
    pytest.param(
        '{"factuality": {"score": 4, "rationale": "a"}, "strategy_coherence": {"score": 3, '
        '"rationale": "b"}, "step_coherence": {"score": 5, "rationale": "c"}, '
        '"numerical_precision": {"score": 2, "rationale": "d"}, "signal_to_noise": '
        '{"score": 4, "rationale": "The trace repeats the quadratic formula tw',
        {"truncated": True},
        "ok",
        S43,
        (),
        id="cut-in-last-rationale-scores-complete",
    ),
    pytest.param("", {"truncated": True}, "truncated", None, (), id="empty-at-budget"),
]


@pytest.mark.parametrize(("text", "kwargs", "status", "scores", "problem_has"), CASES)
def test_realistic_outputs(
    text: str,
    kwargs: dict,
    status: str,
    scores: tuple[float, ...] | None,
    problem_has: tuple[str, ...],
) -> None:
    dims = kwargs.get("dims", DIMS)
    scale = kwargs.get("scale", (1, 5))
    judgment = parse_judgment(text, dims, scale, truncated=kwargs.get("truncated", False))
    assert judgment.status == status, judgment.problem
    if scores is None:
        assert judgment.scores == {}
        assert judgment.problem
    else:
        assert judgment.scores == dict(zip(dims, scores, strict=True))
        assert list(judgment.rationales) == dims
        assert judgment.problem is None
    for fragment in problem_has:
        assert fragment.lower() in (judgment.problem or "").lower()


def test_rationales_are_kept() -> None:
    j = parse_judgment(_nested(), DIMS, (1, 5))
    assert j.rationales == {d: f"why {d}" for d in DIMS}
    lines = parse_judgment("**Factuality**: 4/5 - The facts are right.", ["factuality"], (1, 5))
    assert lines.rationales == {"factuality": "The facts are right."}


def test_custom_dimensions_and_objects() -> None:
    class Dim:
        def __init__(self, name: str) -> None:
            self.name = name

    text = "Uses reference: 3\nClarity: 5"
    for dims in (["uses_reference", "clarity"], [Dim("uses_reference"), Dim("clarity")]):
        j = parse_judgment(text, dims, (1, 5))
        assert j.scores == {"uses_reference": 3.0, "clarity": 5.0}


def test_judgment_is_frozen() -> None:
    j = Judgment("ok", {"a": 1.0}, {"a": ""})
    with pytest.raises(AttributeError):
        j.status = "refused"  # type: ignore[misc]


# --------------------------------------------------------------------------- properties

_FRAGMENTS = [
    "{", "}", "[", "]", '"', "'", ":", ",", "\n", " ", "```json\n", "```", "**", "/5", "/",
    "score", "rationale", '"score": ', "4", "3.5", "-1", "7", "10", "null", "true",
    '"factuality"', "Factuality", "Step coherence", "signal-to-noise", "numerical_precision",
    "strategy_coherence", "<think>", "</think>", "I can't", "out of", "|", "#", "\\", "//",
    "<|channel|>final<|message|>", "N/A", "1e309", "NaN", "Infinity", "(", ")",
]  # fmt: skip

judge_like = st.lists(st.sampled_from(_FRAGMENTS), max_size=60).map("".join)
any_text = st.one_of(st.text(max_size=400), judge_like)
scales = st.tuples(st.integers(-5, 5), st.integers(1, 20)).map(lambda t: (t[0], t[0] + t[1]))


def _check_invariants(j: Judgment, dims: list[str], scale: tuple[int, int]) -> None:
    assert j.status in JUDGE_STATUSES
    if j.status == "ok":
        assert list(j.scores) == dims
        for value in j.scores.values():
            assert isinstance(value, float)
            assert math.isfinite(value)
            assert scale[0] <= value <= scale[1]
        assert j.problem is None
    else:
        assert j.scores == {}
        assert j.rationales == {}
        assert j.problem


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(text=any_text, scale=scales, truncated=st.booleans())
def test_never_raises_and_ok_means_in_range(
    text: str, scale: tuple[int, int], truncated: bool
) -> None:
    _check_invariants(parse_judgment(text, DIMS, scale, truncated=truncated), DIMS, scale)
    # the internals themselves must cope, not just the safety net around them
    j = _parse(text, DIMS, float(scale[0]), float(scale[1]), truncated)
    _check_invariants(j, DIMS, scale)


_FORMATS = {
    "nested": lambda s: json.dumps({d: {"score": v, "rationale": "r"} for d, v in s.items()}),
    "flat": lambda s: json.dumps(s),
    "fenced-single-quotes": lambda s: "```json\n" + str(s) + "\n```",
    "lines": lambda s: "\n".join(f"{d.replace('_', ' ').title()}: {v}" for d, v in s.items()),
    "bold-fraction": lambda s: "\n".join(f"**{d}**: {v}/5" for d, v in s.items()),
}


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(1, 5), min_size=5, max_size=5),
    fmt=st.sampled_from(sorted(_FORMATS)),
)
def test_in_range_scores_round_trip(values: list[int], fmt: str) -> None:
    scores = dict(zip(DIMS, values, strict=True))
    j = parse_judgment(_FORMATS[fmt](scores), DIMS, (1, 5))
    assert j.status == "ok", j.problem
    assert j.scores == {d: float(v) for d, v in scores.items()}


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(1, 5), min_size=5, max_size=5),
    bad=st.one_of(st.integers(-100, 0), st.integers(6, 1000)),
    where=st.integers(0, 4),
    fmt=st.sampled_from(["nested", "flat", "fenced-single-quotes", "lines"]),
)
def test_out_of_range_is_never_ok(values: list[int], bad: int, where: int, fmt: str) -> None:
    values[where] = bad
    scores = dict(zip(DIMS, values, strict=True))
    j = parse_judgment(_FORMATS[fmt](scores), DIMS, (1, 5))
    assert j.status == "parse_error"
    assert DIMS[where] in (j.problem or "")
    assert str(bad) in (j.problem or "")


def test_rationale_before_the_score_is_kept() -> None:
    text = "Factuality: The trace applies Vieta's formulas correctly. Score: 4"
    j = parse_judgment(text, ["factuality"], (1, 5))
    assert j.rationales == {"factuality": "The trace applies Vieta's formulas correctly."}


def test_percentages_are_out_of_scale_not_missing() -> None:
    j = parse_judgment("Factuality: 80%\nClarity: 4", ["factuality", "clarity"], (1, 5))
    assert j.status == "parse_error"
    assert "factuality" in (j.problem or "") and "80" in (j.problem or "")


@pytest.mark.parametrize(
    "text",
    [
        "Factuality: Factuality:\n" * 20_000,  # a small model looping until its budget
        "{" * 200_000,
        '{"a":' * 5_000 + "1" + "}" * 5_000,  # deeper than json's recursion limit
        '{"factuality": {"score": 4, "rationale": "' + "and then " * 30_000,
        ("**Factuality**: see below\n| Step coherence | " + "{'a': [1, 2, ") * 5_000,
    ],
    ids=["looping-labels", "braces", "deep-nesting", "endless-rationale", "mixed-junk"],
)
def test_degenerate_outputs_are_fast_and_never_ok(text: str) -> None:
    import time

    start = time.perf_counter()
    j = _parse(text, DIMS, 1.0, 5.0, True)
    assert time.perf_counter() - start < 5
    assert j.status == "truncated"
