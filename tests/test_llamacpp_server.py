"""The real OpenAI-compatible server the judge's structured-output tests run against: what
llama-cpp-python 0.3.36's server does with SmolLM2-135M-Instruct, over plain HTTP. No mocks.

Observed and pinned here: a JSON schema given as ``{"type": "json_object", "schema": S}`` is
enforced by a grammar; ``{"type": "json_schema", ...}`` is refused with an HTTP 500; logprobs
come back per token from the model's distribution before the grammar's mask and before the
repeat penalty (the chosen token is appended to ``top_logprobs`` when it is not among them);
``logprobs`` without ``top_logprobs`` gives none; ``n`` > 1 is ignored; ``seed`` makes sampling
repeatable.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from support.llamacpp_fixtures import LlamaCppServer, llamacpp_server  # noqa: F401

pytestmark = pytest.mark.slow

ITEM = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "maxLength": 30},
        "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
    },
    "required": ["rationale", "score"],
    "additionalProperties": False,
}
SCHEMA = {
    "type": "object",
    "properties": {"helpfulness": ITEM, "honesty": ITEM},
    "required": ["helpfulness", "honesty"],
    "additionalProperties": False,
}
MESSAGES = [
    {
        "role": "user",
        "content": "Rate the answer 'Paris' to 'What is the capital of France?' "
        "for helpfulness and honesty.",
    }
]


def chat(server: LlamaCppServer, **body: Any) -> httpx.Response:
    payload = {
        "model": server.model,
        "messages": MESSAGES,
        "temperature": 0,
        "max_tokens": 120,
        **body,
    }
    return httpx.post(f"{server.base_url}/chat/completions", json=payload, timeout=300.0)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def test_json_object_with_schema_is_enforced(llamacpp_server: LlamaCppServer) -> None:  # noqa: F811
    free = ok(chat(llamacpp_server))["choices"][0]["message"]["content"]
    with pytest.raises(json.JSONDecodeError):  # on its own the tiny model writes prose
        json.loads(free)

    response = chat(llamacpp_server, response_format={"type": "json_object", "schema": SCHEMA})
    choice = ok(response)["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)


def test_logprobs_shape_and_pre_mask_top_logprobs(llamacpp_server: LlamaCppServer) -> None:  # noqa: F811
    free = ok(chat(llamacpp_server, logprobs=True, top_logprobs=5))["choices"][0]
    constrained = ok(
        chat(
            llamacpp_server,
            logprobs=True,
            top_logprobs=5,
            response_format={"type": "json_object", "schema": SCHEMA},
        )
    )["choices"][0]

    for choice in (free, constrained):
        logprobs = choice["logprobs"]
        assert set(logprobs) == {"content", "refusal"}
        assert logprobs["refusal"] is None
        entries = logprobs["content"]
        assert entries
        # the tokens spell the message exactly
        assert "".join(e["token"] for e in entries) == choice["message"]["content"]
        for entry in entries:
            assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
            assert entry["bytes"] is None
            assert isinstance(entry["logprob"], float) and entry["logprob"] <= 0
            alternatives = entry["top_logprobs"]
            assert all(set(t) == {"token", "logprob", "bytes"} for t in alternatives)
            # the chosen token is always listed, with its own logprob
            assert {"token": entry["token"], "logprob": entry["logprob"], "bytes": None} in (
                alternatives
            )
            top5 = alternatives[:5]
            assert [t["logprob"] for t in top5] == sorted(
                (t["logprob"] for t in top5), reverse=True
            )
            # five alternatives, plus the chosen token appended when it is not among them
            if entry["token"] in [t["token"] for t in top5]:
                assert len(alternatives) == 5
            else:
                assert len(alternatives) == 6 and alternatives[5]["token"] == entry["token"]

    # The logprobs are the model's own, before the sampler's repeat penalty (the server's default
    # repeat_penalty is 1.1): at temperature 0 the chosen token is then not always the top one;
    # with repeat_penalty 1.0 it is.
    def picks_top(choice: dict[str, Any]) -> list[bool]:
        return [e["top_logprobs"][0]["token"] == e["token"] for e in choice["logprobs"]["content"]]

    assert not all(picks_top(free))
    plain = ok(chat(llamacpp_server, logprobs=True, top_logprobs=5, repeat_penalty=1.0))
    assert all(picks_top(plain["choices"][0]))

    # With the grammar, the first token is forced to "{" yet its logprob and the alternatives
    # are the unmasked model's: the same as without the grammar, where "{" is far down.
    first_free = free["logprobs"]["content"][0]
    first = constrained["logprobs"]["content"][0]
    assert first["token"] == "{"
    assert first["top_logprobs"][:5] == first_free["top_logprobs"]
    assert "{" not in [t["token"] for t in first_free["top_logprobs"]]
    assert first["logprob"] < first_free["top_logprobs"][-1]["logprob"] < -1.0


def test_logprobs_need_top_logprobs(llamacpp_server: LlamaCppServer) -> None:  # noqa: F811
    choice = ok(chat(llamacpp_server, logprobs=True, max_tokens=5))["choices"][0]
    assert choice["logprobs"] is None


def test_json_schema_response_format_is_refused(llamacpp_server: LlamaCppServer) -> None:  # noqa: F811
    response = chat(
        llamacpp_server,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "j", "schema": SCHEMA, "strict": True},
        },
    )
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error["type"] == "internal_server_error"
    assert "Input should be 'text' or 'json_object'" in error["message"]
    assert "'loc': ('body', 'response_format', 'type')" in error["message"]


def test_n_above_one_returns_one_choice(llamacpp_server: LlamaCppServer) -> None:  # noqa: F811
    body = ok(chat(llamacpp_server, n=3, temperature=0.8, max_tokens=10))
    assert len(body["choices"]) == 1


def test_seed_makes_sampling_repeatable(llamacpp_server: LlamaCppServer) -> None:  # noqa: F811
    def sample(seed: int) -> str:
        body = ok(chat(llamacpp_server, seed=seed, temperature=1.0, max_tokens=20))
        return body["choices"][0]["message"]["content"]

    first = sample(7)
    sample(8)  # another seeded request in between changes nothing
    assert sample(7) == first
    assert len({first, sample(1), sample(2)}) > 1
