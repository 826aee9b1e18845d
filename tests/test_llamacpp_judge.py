"""The judge's OpenAI-compatible path against a real server running a real model.

llama-cpp-python's server (tests/support/llamacpp_fixtures.py) serves SmolLM2-135M-Instruct on
loopback. It refuses ``response_format: json_schema`` with a 500 and enforces the same
schema as ``json_object``: the judge finds that out on its first request and keeps to it.
Its top log-probs come from before the grammar's mask; the expected scores renormalise
over the allowed scores that appear.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from prefdelta.builders.judge.spec import JudgeSpec
from prefdelta.builders.judge.structured import expected_score, schema_problem
from prefdelta.builders.judge.task import judge_from_spec
from prefdelta.builders.llms import make_llm
from prefdelta.recipe import JudgeConfig
from support.llamacpp_fixtures import LlamaCppServer, llamacpp_server  # noqa: F401

PROBLEMS = [
    ("What is 12 + 30?", "12 + 30 = 42. The answer is \\boxed{42}."),
    ("What is 7 squared?", "7 squared is 7 * 7 = 49, so \\boxed{49}."),
    ("Solve 3x + 5 = 20.", "x is 100."),
]


@pytest.mark.slow
def test_real_server_judgments_are_schema_valid_with_expected_scores(
    llamacpp_server: LlamaCppServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = JudgeConfig(
        model=llamacpp_server.model,
        backend="openai",
        base_url=llamacpp_server.base_url,
        concurrency=2,
        max_retries=0,
        generation={"temperature": 0.0, "max_new_tokens": 400},
    )
    spec = JudgeSpec.resolve(config)
    schema = spec.schema
    llm = make_llm(
        config,
        config.generation,
        Path("."),
        json_schema=schema,
        logprobs=True,
        schema_dialect=config.response_format,
    )
    judge = judge_from_spec(spec, llm, name="judge")
    judge.load()
    with caplog.at_level(logging.WARNING):
        rows = next(judge.process([{"instruction": p, "generation": t} for p, t in PROBLEMS]))
    assert [r["judge_status"] for r in rows] == ["ok"] * 3, [r["judge_problem"] for r in rows]
    assert "refused response_format json_schema" in caplog.text  # the fallback, said once
    assert caplog.text.count("refused response_format") == 1
    for row in rows:
        assert schema_problem(row["judge_raw"][0], schema or {}) is None
        assert row["score_kind"] == "expected", row["score_fallback"]
        for dim, probs in row["score_probs"].items():
            assert sum(probs) == pytest.approx(1.0)
            assert row["scores"][dim] == pytest.approx(expected_score(probs, (1, 5)))
        # what the build stores is enough to read the same scores again
        assert spec.reader.outputs(row["judge_answers"])["scores"] == row["scores"]
