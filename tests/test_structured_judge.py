"""The structured judge: the schema, its enforcement on each backend, and expected scores.

The tiny random model never writes valid JSON on its own; under the grammar it must, on
both local paths (transformers and gguf). The OpenAI-compatible path runs against the
loopback server here (a server that ignores the schema, one that refuses a dialect) and
against a real llama.cpp server in tests/test_llamacpp_judge.py.
"""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from prefdelta.builders.judge.reader import AnswerReader
from prefdelta.builders.judge.spec import JudgeSpec
from prefdelta.builders.judge.structured import (
    digit_tokens,
    expected_score,
    response_format,
    schema_problem,
    score_distributions,
)
from prefdelta.builders.llms.vllm import StructuredvLLM
from prefdelta.recipe import JudgeConfig, RecipeError, parse_recipe
from prefdelta.recipe.judgment import (
    MIN_RATIONALE_CHARS,
    judgment_schema,
    min_structured_tokens,
    rationale_max_chars,
)
from prefdelta.recipe.rubrics import DEFAULT_DIMENSIONS
from support.model_fixtures import (  # noqa: F401
    ChatServer,
    chat_server,
    loaded_judge,
    tiny_gguf,
    tiny_model_dir,
)

DIMS = list(DEFAULT_DIMENSIONS)
SCALE = (1, 5)


def judgment(scores: list[int], rationale: str = "fine") -> str:
    return json.dumps(
        {d: {"rationale": rationale, "score": s} for d, s in zip(DIMS, scores, strict=True)}
    )


def tokenize(text: str, top: dict[str, float] | None = None) -> list[tuple[str, float, list]]:
    """Digits as their own tokens, everything else in runs; each digit gets ``top``."""
    import re

    alternatives = [(t, math.log(p)) for t, p in (top or {}).items()]
    return [
        (m.group(), -0.05, alternatives if m.group().isdigit() else [])
        for m in re.finditer(r"\d|\D+", text)
    ]


# --------------------------------------------------------------------------- schema


def test_schema_is_strict_and_bounded_by_the_budget() -> None:
    schema = judgment_schema(DIMS, SCALE, 1024)
    assert schema["required"] == DIMS and schema["additionalProperties"] is False
    assert list(schema["properties"]) == DIMS  # recipe order: decoders emit in this order
    for entry in schema["properties"].values():
        assert entry["required"] == ["rationale", "score"]
        assert entry["additionalProperties"] is False
        assert list(entry["properties"]) == ["rationale", "score"]  # why, then the number
        assert entry["properties"]["score"] == {"type": "integer", "enum": [1, 2, 3, 4, 5]}
    bound = schema["properties"]["factuality"]["properties"]["rationale"]["maxLength"]
    # the longest answer the schema allows fits the budget at one token per character
    longest = judgment([5] * 5, rationale="x" * bound)
    assert bound == rationale_max_chars(DIMS, SCALE, 1024) and len(longest) <= 1024 - 5 * 4
    assert schema_problem(longest, schema) is None
    assert (
        min_structured_tokens(DIMS, SCALE) - len(judgment([5] * 5, "")) >= 5 * MIN_RATIONALE_CHARS
    )


def test_a_budget_too_small_for_the_schema_is_a_recipe_error(tmp_path: Path) -> None:
    need = min_structured_tokens(DIMS, SCALE)
    with pytest.raises(ValueError, match=f"at least {need}"):
        judgment_schema(DIMS, SCALE, need - 1)
    text = (
        "name: t\nprompts: {path: p.jsonl}\n"
        "generators:\n  a: {model: m, backend: transformers}\n  b: {model: m, backend: transformers}\n"
        "pairing: {chosen: a, rejected: [b]}\n"
        "judge: {model: m, backend: transformers, generation: {max_new_tokens: 160}}\n"
    )
    (tmp_path / "p.jsonl").write_text('{"problem": "1+1?"}\n')
    with pytest.raises(RecipeError) as err:
        parse_recipe(text, "r.yaml", tmp_path)
    assert f"give at least {need}" in str(err.value) and "structured: off" in str(err.value)
    off = text.replace("max_new_tokens: 160}", "max_new_tokens: 160}, structured: off")
    assert parse_recipe(off, "r.yaml", tmp_path).judge.structured == "off"


def test_response_format_only_for_openai() -> None:
    with pytest.raises(ValueError, match="response_format applies to backend 'openai'"):
        JudgeConfig(model="m", backend="vllm", response_format="json_object")


def test_schema_problems_name_the_field() -> None:
    schema = judgment_schema(DIMS, SCALE, 600)
    ok = judgment([3, 3, 3, 3, 3])
    assert schema_problem(ok, schema) is None
    assert "not valid JSON" in (schema_problem("Factuality: 4", schema) or "")
    missing = json.loads(ok)
    del missing["signal_to_noise"]
    assert "'signal_to_noise' is a required property" in schema_problem(json.dumps(missing), schema)
    off_scale = json.loads(ok)
    off_scale["factuality"]["score"] = 7
    assert schema_problem(json.dumps(off_scale), schema).startswith("factuality.score: 7")
    extra = json.loads(ok)
    extra["factuality"]["confidence"] = 1
    assert "Additional properties" in schema_problem(json.dumps(extra), schema)
    long = judgment([3] * 5, rationale="y" * 500)
    assert "is too long" in schema_problem(long, schema)


_BOUND = rationale_max_chars(DIMS, SCALE, 600)
_scores = (
    st.integers(-1, 7)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
    | st.text(max_size=2)
    | st.sampled_from([4.0, 2**70])
)
_rationales = st.text(max_size=3) | st.just("x" * _BOUND) | st.just("\U0001f600" * (_BOUND + 1))
_valid = st.fixed_dictionaries(
    {
        d: st.fixed_dictionaries(
            {
                "rationale": _rationales.filter(lambda r: len(r) <= _BOUND),
                "score": st.integers(1, 5),
            }
        )
        for d in DIMS
    }
)
# (key, field, value): a change to an answer; field None: the key's whole value (None
# deletes the key); value None: delete the field
_edits = st.tuples(
    st.sampled_from([*DIMS, "other"]),
    st.sampled_from(["rationale", "score", "confidence", None]),
    _scores | _rationales,
)


def _edited(answer: dict[str, Any], edits: list[tuple[str, str | None, Any]]) -> dict[str, Any]:
    for key, field, value in edits:
        if field is None and value is None:
            answer.pop(key, None)
        elif field is None:
            answer[key] = value
        elif not isinstance(answer.get(key), dict):
            answer[key] = {} if value is None else {field: value}
        elif value is None:
            answer[key].pop(field, None)
        else:
            answer[key][field] = value
    return answer


# valid answers, some changed (no change: valid), and values of any other shape
_answers = st.builds(_edited, _valid, st.lists(_edits, max_size=3)) | st.one_of(
    st.lists(st.integers(), max_size=2), st.integers(), st.none(), st.text(max_size=3)
)


@settings(max_examples=400, deadline=None)
@given(value=_answers)
def test_the_quick_schema_check_agrees_with_jsonschema(value: Any) -> None:
    """Answers are checked by jsonschema-rs and only those it refuses go to jsonschema, for
    the words: the verdict on every answer must be jsonschema's, at the edges too (a score
    of True, 4.0, NaN, 2**70; a rationale one character too long, in characters that take
    four bytes; a field too many or missing)."""
    schema = judgment_schema(DIMS, SCALE, 600)
    valid = Draft202012Validator(schema).is_valid(value)
    assert (schema_problem(json.dumps(value), schema) is None) == valid


# --------------------------------------------------------------------------- expected


def test_expected_score_by_hand() -> None:
    """At the score token the judge gave 2: 0.1, 3: 0.3, 4: 0.5 and 0.1 to a non-score.

    Renormalised over the allowed scores (0.9): 1/9, 3/9, 5/9; expected
    (2*1 + 3*3 + 4*5) / 9 = 31/9 = 3.444...
    """
    text = judgment([4, 4, 4, 4, 4])
    top = {"2": 0.1, "3": 0.3, "4": 0.5, "x": 0.1}
    tokens = digit_tokens(
        [(t, math.log(0.5) if t == "4" else lp, alt) for t, lp, alt in tokenize(text, top)], text
    )
    assert tokens is not None and len(tokens) == 5
    probs, why = score_distributions(text, tokens, DIMS, SCALE)
    assert why is None and probs is not None
    assert probs["factuality"] == pytest.approx([0, 1 / 9, 3 / 9, 5 / 9, 0])
    assert expected_score(probs["factuality"], SCALE) == pytest.approx(31 / 9)
    assert expected_score([0.2] * 5, SCALE) == pytest.approx(3.0)


def test_scores_are_found_inside_merged_tokens_and_after_rationales_with_digits() -> None:
    """A tokenizer may merge the digit with what surrounds it (` 4}` ); an alternative with
    the same surroundings is that score. Digits in a rationale are never taken for scores."""
    text = '{"a": {"rationale": "2+2 is 4", "score": 4}, "b": {"rationale": "", "score": 2}}'
    tokens = [
        ('{"a": {"rationale": "', -0.1, []),
        ("2", -0.1, [("5", -1.0)]),  # a digit of the rationale
        ("+", -0.1, []),
        ("2 is 4", -0.1, []),
        ('", "score":', -0.1, []),
        (" 4}", math.log(0.6), [(" 3}", math.log(0.2)), (" 4", math.log(0.1)), (" 5}", -9.0)]),
        (', "b": {"rationale": "", "score": ', -0.1, []),
        ("2", math.log(0.5), [("1", math.log(0.5)), ("}", -1.0)]),
        ("}}", -0.1, []),
    ]
    found = digit_tokens(tokens, text)
    assert found is not None and [t["token"] for t in found] == ["2", "2 is 4", " 4}", "2"]
    probs, why = score_distributions(text, found, ["a", "b"], SCALE)
    assert why is None and probs is not None
    total = 0.6 + 0.2 + math.exp(-9.0)
    assert probs["a"] == pytest.approx([0, 0, 0.2 / total, 0.6 / total, math.exp(-9.0) / total])
    assert probs["b"] == pytest.approx([0.5, 0.5, 0, 0, 0])


def test_pre_mask_probabilities_are_renormalised_over_the_scores_that_appear() -> None:
    """llama.cpp's top log-probs come from before the grammar's mask: prose tokens lead."""
    text = judgment([4, 4, 4, 4, 4])
    top = {"The": 0.4, "I": 0.2, "4": 0.05, "5": 0.05}
    found = digit_tokens(tokenize(text, top), text)
    probs, _ = score_distributions(text, found or [], DIMS, SCALE)
    assert probs is not None and probs["step_coherence"] == pytest.approx([0, 0, 0, 0.5, 0.5])


def test_when_no_probability_is_known_the_row_keeps_the_written_integer() -> None:
    text = judgment([5, 4, 3, 2, 1])
    assert digit_tokens(tokenize(text)[:-1], text) is None  # tokens must spell the answer
    spanning = '{"a": {"rationale": "", "score": 5}}'
    reader = AnswerReader(("a",), SCALE, judgment_schema(["a"], SCALE, 200))
    tokens = [('{"a": {"rationale": "", "score": ', -0.1, []), ("5", -0.1, []), ("}}", -0.1, [])]
    row = reader.outputs(
        [[{"text": spanning, "tokens": 9, "logprobs": digit_tokens(tokens, spanning)}]]
    )
    assert row["score_kind"] == "expected" and row["scores"] == {"a": 5.0}  # only 5 appears
    row = reader.outputs([[{"text": spanning, "tokens": 9, "logprobs": None}]])
    assert row["judge_status"] == "ok" and row["score_kind"] == "sampled"
    assert row["scores"] == {"a": 5.0} and row["score_probs"] == {"a": None}
    assert row["score_fallback"] == "the backend returned no token probabilities"
    wide = AnswerReader(("a",), (0, 10), judgment_schema(["a"], (0, 10), 200))
    ten = '{"a": {"rationale": "", "score": 10}}'
    split = [
        ('{"a": {"rationale": "", "score": ', -0.1, []),
        ("1", -0.1, []),
        ("0", -0.1, []),
        ("}}", -0.1, []),
    ]
    row = wide.outputs([[{"text": ten, "tokens": 9, "logprobs": digit_tokens(split, ten)}]])
    assert row["scores"] == {"a": 10.0} and "spans several tokens" in row["score_fallback"]


def test_samples_average_expected_scores_and_never_mix_kinds() -> None:
    reader = AnswerReader(tuple(DIMS), SCALE, judgment_schema(DIMS, SCALE, 600))
    text = judgment([4, 4, 4, 4, 4])
    with_probs = digit_tokens(tokenize(text, {"3": 0.5, "4": 0.5}), text)
    a = {"text": text, "tokens": 50, "logprobs": with_probs}
    row = reader.outputs([[a], [a]])
    assert row["score_kind"] == "expected" and row["judge_samples"] == 2
    assert row["scores"]["factuality"] == pytest.approx(3.5)
    assert row["score_probs"]["factuality"] == pytest.approx([0, 0, 0.5, 0.5, 0])
    other = judgment([2, 2, 2, 2, 2])
    mixed = reader.outputs([[a], [{"text": other, "tokens": 50, "logprobs": None}]])
    assert mixed["score_kind"] == "sampled"  # the integers written, for both samples
    assert mixed["scores"]["factuality"] == pytest.approx(3.0)
    assert mixed["score_spread"]["factuality"] == pytest.approx(1.0)


def test_an_answer_off_the_schema_is_a_schema_violation_kept_with_its_text() -> None:
    reader = AnswerReader(tuple(DIMS), SCALE, judgment_schema(DIMS, SCALE, 600), budget=600)
    prose = "**Factuality**: 4\n**Step coherence**: 3"
    row = reader.outputs([[{"text": prose, "tokens": 12}]])
    assert row["judge_status"] == "schema_violation"
    assert row["judge_raw"] == [prose] and row["scores"] == dict.fromkeys(DIMS)
    assert row["judge_problem"].startswith("answer does not match the schema: not valid JSON")
    # the lenient parser would have read the same prose: structured mode does not guess
    lenient = AnswerReader(tuple(DIMS), SCALE, None).outputs([[{"text": prose, "tokens": 12}]])
    assert lenient["judge_status"] == "parse_error"  # 3 dimensions missing
    cut = judgment([3] * 5)[:-30]
    assert reader.outputs([[{"text": cut, "tokens": 600}]])["judge_status"] == "truncated"


# --------------------------------------------------------------------------- local models


def _judge_rows(model: str, backend: str, structured: str) -> list[dict[str, Any]]:
    config = JudgeConfig(
        model=model,
        backend=backend,
        batch_size=4,
        max_retries=0,
        structured=structured,
        generation={"temperature": 0.0, "max_new_tokens": 420},
    )
    judge = loaded_judge(config)
    rows = [
        {"instruction": f"What is {i} + {i}?", "generation": f"{i} + {i} = {2 * i}."}
        for i in range(6)
    ]
    return next(judge.process(rows))


@pytest.mark.parametrize("backend", ["transformers", "gguf"])
def test_tiny_random_model_answers_in_schema_only_under_the_grammar(
    backend: str,
    tiny_model_dir: Path,  # noqa: F811
    tiny_gguf: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFDELTA_CACHE", str(tmp_path / "cache"))
    model = str(tiny_model_dir if backend == "transformers" else tiny_gguf)
    schema = judgment_schema(DIMS, SCALE, 420)
    free = _judge_rows(model, backend, "off")
    assert not [r for r in free if r["judge_status"] == "ok"]
    assert all(schema_problem(r["judge_raw"][0], schema) for r in free)
    constrained = _judge_rows(model, backend, "auto")
    assert [r["judge_status"] for r in constrained] == ["ok"] * 6
    for row in constrained:
        assert schema_problem(row["judge_raw"][0], schema) is None
        assert row["score_kind"] == "expected"
        for dim in DIMS:
            probs = row["score_probs"][dim]
            assert len(probs) == 5 and sum(probs) == pytest.approx(1.0)
            assert 1.0 <= row["scores"][dim] <= 5.0
            assert row["scores"][dim] == pytest.approx(expected_score(probs, SCALE))
        # the table re-reads the stored answers to the same values
        assert (
            JudgeSpec.resolve(
                JudgeConfig(
                    model=model,
                    backend=backend,
                    generation={"temperature": 0.0, "max_new_tokens": 420},
                )
            ).reader.outputs(row["judge_answers"])["scores"]
            == row["scores"]
        )


# --------------------------------------------------------------------------- API backends


def _api_judge(server: ChatServer, backend: str = "openai", **config: Any) -> Any:
    """A loaded judge on the loopback server; TGI's client adds ``/v1`` itself."""
    base_url = server.url if backend == "openai" else server.url.removesuffix("/v1")
    cfg = JudgeConfig(
        model="served",
        backend=backend,
        base_url=base_url,
        max_retries=0,
        generation={"temperature": 0.0, "max_new_tokens": 600},
        **config,
    )
    return loaded_judge(cfg)


def test_openai_sends_a_strict_json_schema_and_asks_for_logprobs(chat_server: ChatServer) -> None:  # noqa: F811
    chat_server.state.content = judgment([4, 3, 4, 3, 4])
    judge = _api_judge(chat_server)
    [row] = next(judge.process([{"instruction": "p", "generation": "t"}]))
    body = chat_server.state.bodies[0]
    assert body["response_format"] == response_format("json_schema", judge.json_schema)
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert "guided_json" not in body
    assert row["judge_status"] == "ok" and row["score_kind"] == "sampled"  # no logprobs back
    assert row["scores"]["factuality"] == 4.0


def test_a_server_that_ignores_the_schema_yields_schema_violations(chat_server: ChatServer) -> None:  # noqa: F811
    """The loopback server answers 200 whatever response_format says: its prose answers
    must be counted as schema violations, not read leniently into scores."""
    judge = _api_judge(chat_server)
    rows = next(judge.process([{"instruction": "p", "generation": f"t{i}"} for i in range(3)]))
    assert [r["judge_status"] for r in rows] == ["schema_violation"] * 3
    assert all(r["judge_raw"][0].startswith("echo: ") for r in rows)


def test_auto_falls_back_once_to_json_object_when_json_schema_is_refused(
    chat_server: ChatServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    chat_server.state.refuse_types = {"json_schema"}  # as llama-cpp-python's server does
    chat_server.state.content = judgment([2, 2, 2, 2, 2])
    judge = _api_judge(chat_server)
    rows = next(judge.process([{"instruction": "p", "generation": f"t{i}"} for i in range(4)]))
    assert [r["judge_status"] for r in rows] == ["ok"] * 4
    kinds = [b.get("response_format", {}).get("type") for b in chat_server.state.bodies]
    assert kinds == ["json_schema"] + ["json_object"] * 4  # refused once, then never again
    assert chat_server.state.bodies[-1]["response_format"]["schema"] == judge.json_schema
    assert chat_server.state.refused == 1


def test_a_4xx_naming_response_format_also_switches_to_json_object(
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """A server that refuses the field with a 400 (as OpenAI's own API answers a field it
    does not take), not llama-cpp-python's 500: the judge asks in json_object too."""
    chat_server.state.refuse_types = {"json_schema"}
    chat_server.state.refuse_status = 400
    chat_server.state.content = judgment([3, 3, 3, 3, 3])
    judge = _api_judge(chat_server)
    rows = next(judge.process([{"instruction": "p", "generation": f"t{i}"} for i in range(3)]))
    assert [r["judge_status"] for r in rows] == ["ok"] * 3
    kinds = [b.get("response_format", {}).get("type") for b in chat_server.state.bodies]
    assert kinds == ["json_schema"] + ["json_object"] * 3 and chat_server.state.refused == 1


def test_a_fixed_dialect_is_sent_as_is(chat_server: ChatServer) -> None:  # noqa: F811
    chat_server.state.content = judgment([2, 2, 2, 2, 2])
    judge = _api_judge(chat_server, response_format="json_object", scoring="sampled")
    next(judge.process([{"instruction": "p", "generation": "t"}]))
    [body] = chat_server.state.bodies
    assert body["response_format"]["type"] == "json_object" and "logprobs" not in body


def test_structured_off_sends_no_schema(chat_server: ChatServer) -> None:  # noqa: F811
    chat_server.state.content = judgment([2, 2, 2, 2, 2])
    judge = _api_judge(chat_server, structured="off", scoring="sampled")
    [row] = next(judge.process([{"instruction": "p", "generation": "t"}]))
    assert "response_format" not in chat_server.state.bodies[0]
    assert row["judge_status"] == "ok"


def test_tgi_gets_its_grammar(chat_server: ChatServer) -> None:  # noqa: F811
    """TGI's chat route takes its grammar as ``response_format: {type: json, value}``."""
    chat_server.state.content = judgment([5, 5, 5, 5, 5])
    judge = _api_judge(chat_server, "inference-endpoints")
    [row] = next(judge.process([{"instruction": "p", "generation": "t"}]))
    body = chat_server.state.bodies[0]
    assert body["response_format"] == {"type": "json", "value": judge.json_schema}
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert row["judge_status"] == "ok" and row["scores"]["factuality"] == 5.0


def test_vllm_gets_structured_outputs_params(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: vLLM's classes are stood in for, and the SamplingParams that
    our generate builds are checked."""
    seen: dict[str, Any] = {}

    class SamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

    class StructuredOutputsParams:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = StructuredOutputsParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)

    schema = judgment_schema(DIMS, SCALE, 600)
    text = judgment([3, 3, 3, 3, 3])
    pieces = tokenize(text)
    ids = list(range(len(pieces)))

    def lp(token: str, logprob: float) -> Any:
        return types.SimpleNamespace(decoded_token=token, logprob=logprob)

    output = types.SimpleNamespace(
        text=text,
        token_ids=ids,
        logprobs=[
            {i: lp(tok, -0.1), 1000 + i: lp("4", math.log(0.25))}
            for i, (tok, _, _) in enumerate(pieces)
        ],
    )

    class Engine:
        def generate(self, prompts: list[str], sampling_params: Any, use_tqdm: bool) -> list[Any]:
            return [types.SimpleNamespace(prompt_logprobs=None, outputs=[output]) for _ in prompts]

    llm = StructuredvLLM(model="org/judge", json_schema=schema, logprobs=True)
    llm._model = Engine()
    llm._tokenizer = types.SimpleNamespace(
        encode=lambda text: text.split(),
        apply_chat_template=lambda chat, **_: chat[-1]["content"],
    )
    [out] = llm.generate([[{"role": "user", "content": "judge this"}]], max_new_tokens=600)
    params = seen["structured_outputs"]
    assert isinstance(params, StructuredOutputsParams) and params.kwargs == {"json": schema}
    assert seen["logprobs"] == 20 and seen["max_tokens"] == 600
    assert not any(k.startswith("guided") for k in seen)
    assert "logits_processors" not in seen  # vLLM 0.33's SamplingParams has no such field
    reader = AnswerReader(tuple(DIMS), SCALE, schema)
    row = reader.outputs(
        [[{"text": out["generations"][0], "tokens": 60, "logprobs": out["token_logprobs"][0]}]]
    )
    assert row["score_kind"] == "expected"
    # chosen 3 at e^-0.1, alternative 4 at 0.25: renormalised
    p3 = math.exp(-0.1) / (math.exp(-0.1) + 0.25)
    assert row["scores"]["factuality"] == pytest.approx(3 * p3 + 4 * (1 - p3))


def test_one_failing_request_fails_only_its_own_row(chat_server: ChatServer) -> None:  # noqa: F811
    """400 and 500 on chosen rows, an empty and a null answer on others: the rest are
    judged in the same batch, and each failed row says why."""
    chat_server.state.content = judgment([4, 4, 4, 4, 4])
    chat_server.state.fail_when = {"trace-400": 400, "trace-500": 500}
    chat_server.state.blank_when = {"trace-empty": "", "trace-null": None}
    judge = _api_judge(chat_server)
    judge.llm.max_retries = 1  # the client retries a 500 itself; one retry keeps this short
    judge.llm.load()
    names = ["trace-ok", "trace-400", "trace-500", "trace-empty", "trace-null", "trace-ok2"]
    rows = next(judge.process([{"instruction": "p", "generation": n} for n in names]))
    status = {n: r["judge_status"] for n, r in zip(names, rows, strict=True)}
    assert status == {
        "trace-ok": "ok",
        "trace-400": "failed",
        "trace-500": "failed",
        "trace-empty": "empty",
        "trace-null": "empty",
        "trace-ok2": "ok",
    }
    assert rows[1]["judge_problem"].startswith("HTTP 400: ")
    assert rows[2]["judge_problem"].startswith("HTTP 500: ")
    assert rows[3]["judge_raw"] == [""] and rows[0]["scores"]["factuality"] == 4.0


def test_a_failing_tgi_request_fails_only_its_row_with_its_status(chat_server: ChatServer) -> None:  # noqa: F811
    chat_server.state.content = judgment([3, 3, 3, 3, 3])
    chat_server.state.fail_when = {"trace-400": 400}
    judge = _api_judge(chat_server, "inference-endpoints")
    rows = next(
        judge.process([{"instruction": "p", "generation": g} for g in ("trace-ok", "trace-400")])
    )
    assert [r["judge_status"] for r in rows] == ["ok", "failed"]
    assert rows[1]["judge_problem"].startswith("HTTP 400: ")
