"""Asking each backend for a schema-enforced judgment, and reading it: validation, and
scores weighted by their probabilities.

Validation: a server may accept a schema and ignore it (vLLM answers 200 to the removed
``guided_*`` fields; some OpenAI-compatible servers drop ``response_format``). So every
answer is checked against the very schema that was sent, and one that does not conform is a
``schema_violation``, kept with its raw text, never read leniently into scores.

Expected scores (G-Eval): a greedy judge that hesitates between 3 and 4 writes 4 every time;
the probabilities it gave each allowed score say more. At the token that carries each
dimension's score, the probabilities of the allowed score tokens are renormalised and their
expectation becomes the score, a float on the scale. Renormalising over the allowed tokens
that appear is what makes servers whose top log-probs come from before the grammar's mask
(llama.cpp's do) usable; where none appears, the row keeps the sampled integer and says so.

Backends report log-probs as :class:`TokenLogprobs` for the generated tokens that contain a
digit only (a score is always among them), each with its character offset in the answer:
the table can then re-read an answer without keeping every token's alternatives.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from json.decoder import scanstring
from typing import Any, Literal, TypedDict

__all__ = [
    "TOP_LOGPROBS",
    "Alternative",
    "ResponseFormatDialect",
    "TokenLogprobs",
    "chat_choice_tokens",
    "digit_tokens",
    "expected_score",
    "rejects_field",
    "response_format",
    "schema_problem",
    "score_distributions",
    "vllm_output_tokens",
    "vllm_structured_outputs",
]

TOP_LOGPROBS = 20
"""Alternatives asked for per token: OpenAI's maximum, and more than any 1-digit scale."""


class Alternative(TypedDict):
    token: str
    logprob: float


class TokenLogprobs(TypedDict):
    """One generated token that contains a digit, with its alternatives (any order)."""

    offset: int  # character offset of the token in the answer text
    token: str
    logprob: float
    top: list[Alternative]


def digit_tokens(
    tokens: Iterable[tuple[str, float, Sequence[tuple[str, float]]]], text: str
) -> list[TokenLogprobs] | None:
    """The digit-bearing tokens of ``tokens`` (text, logprob, alternatives), with offsets.

    Offsets are the running length of the token texts, so they must spell ``text``; when
    they do not (a tokenizer that splits characters into bytes, a server that trims the
    answer), None: the answer's scores then stay as sampled.
    """
    tokens = list(tokens)
    if "".join(t for t, _, _ in tokens) != text:
        return None
    out: list[TokenLogprobs] = []
    offset = 0
    for token, logprob, top in tokens:
        if any(c.isdigit() for c in token):
            out.append(
                {
                    "offset": offset,
                    "token": token,
                    "logprob": float(logprob),
                    "top": [{"token": str(t), "logprob": float(lp)} for t, lp in top],
                }
            )
        offset += len(token)
    return out


@lru_cache(maxsize=64)
def _checker(schema_json: str) -> Any:
    """jsonschema-rs's validator of the schema (None: one it cannot compile): the check of
    every answer, in a step as it arrives and again when the build writes its tables.
    jsonschema's own check cost 60-90 us an answer, a tenth of a judge request's CPU."""
    import jsonschema_rs

    try:
        return jsonschema_rs.Draft202012Validator(json.loads(schema_json))
    except (ValueError, jsonschema_rs.ReferencingError):  # jsonschema then checks alone
        return None


@lru_cache(maxsize=64)
def _explainer(schema_json: str) -> Any:
    """jsonschema's validator of the schema: the verdict, and the words, on an answer the
    quick check refused (or could not check)."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_json))


# The schema text of each schema object a judge reads with, by identity: the judge's schema
# is one dict, and serialising it for every answer cost more than checking the answer.
# The dict is held with its text, so its id is not reused while cached.
_BY_IDENTITY: dict[int, tuple[dict[str, Any], str]] = {}


def _schema_json(schema: dict[str, Any]) -> str:
    held = _BY_IDENTITY.get(id(schema))
    if held is not None and held[0] is schema:
        return held[1]
    text = json.dumps(schema, sort_keys=True)
    if len(_BY_IDENTITY) >= 64:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[id(schema)] = (schema, text)
    return text


def schema_problem(text: str, schema: dict[str, Any]) -> str | None:
    """Why ``text`` does not conform to ``schema`` (the first problem, one line), or None.

    An answer jsonschema-rs finds valid is; any other is judged, and described, by
    jsonschema (the two agree on the judge's schemas: ``tests/test_structured_judge.py``),
    so the words of a problem are jsonschema's."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"not valid JSON ({exc.msg} at character {exc.pos})"
    schema_json = _schema_json(schema)
    checker = _checker(schema_json)
    try:
        if checker is not None and checker.is_valid(value):
            return None
    except (ValueError, TypeError, OverflowError):  # a value it cannot take: jsonschema's turn
        pass
    validator = _explainer(schema_json)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    first = errors[0]
    where = ".".join(str(p) for p in first.absolute_path) or "the answer"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    message = " ".join(first.message.split())
    if len(message) > 160:  # jsonschema quotes the whole value; its verdict comes last
        message = message[:90] + " ... " + message[-60:]
    return f"{where}: {message}{more}"


def expected_score(probs: Sequence[float], scale: tuple[int, int]) -> float:
    """Σ value · p over the scale's values, ``probs`` aligned with ``low..high``."""
    low = scale[0]
    return math.fsum((low + i) * p for i, p in enumerate(probs))


def score_distributions(
    text: str,
    tokens: Sequence[TokenLogprobs],
    dimensions: Sequence[str],
    scale: tuple[int, int],
) -> tuple[dict[str, list[float]] | None, str | None]:
    """Each dimension's renormalised probabilities over ``low..high``, or (None, why not).

    ``text`` must be a schema-valid judgment; the score of each dimension is located by
    its character span in the answer, and the token spanning it (for example ``4`` or
    `` 4``) gives the alternatives: an alternative with the same text around the digits
    and an allowed score in their place is that score's probability.
    """
    low, high = scale
    try:
        spans = _scalar_spans(text)
    except (ValueError, IndexError) as exc:
        return None, f"cannot locate the scores in the answer ({exc})"
    by_offset = sorted(tokens, key=lambda t: t["offset"])
    out: dict[str, list[float]] = {}
    for dim in dimensions:
        span = spans.get((dim, "score"))
        if span is None:
            return None, f"{dim}: no score in the answer"
        start, end = span
        token = next(
            (t for t in by_offset if t["offset"] <= start and t["offset"] + len(t["token"]) >= end),
            None,
        )
        if token is None:
            return None, f"{dim}: the score {text[start:end]} spans several tokens"
        prefix = token["token"][: start - token["offset"]]
        suffix = token["token"][end - token["offset"] :]
        found: dict[int, float] = {}
        for alt, logprob in [
            *((a["token"], a["logprob"]) for a in token["top"]),
            (token["token"], token["logprob"]),
        ]:
            if not (alt.startswith(prefix) and alt.endswith(suffix)):
                continue
            middle = alt[len(prefix) : len(alt) - len(suffix)]
            if _INTEGER.fullmatch(middle) and low <= int(middle) <= high:
                found.setdefault(int(middle), math.exp(logprob))
        total = math.fsum(found.values())
        if not found or not math.isfinite(total) or total <= 0:
            return None, f"{dim}: no probability for any allowed score"
        out[dim] = [found.get(v, 0.0) / total for v in range(low, high + 1)]
    return out, None


_INTEGER = re.compile(r"-?\d+")
_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _scalar_spans(text: str) -> dict[tuple[str | int, ...], tuple[int, int]]:
    """Character span of every scalar in a JSON text, by its key path."""
    spans: dict[tuple[str | int, ...], tuple[int, int]] = {}

    def ws(i: int) -> int:
        return _WS.match(text, i).end()  # type: ignore[union-attr]

    def value(i: int, path: tuple[str | int, ...]) -> int:
        i = ws(i)
        c = text[i]
        if c == "{":
            i = ws(i + 1)
            if text[i] == "}":
                return i + 1
            while True:
                if text[i] != '"':
                    raise ValueError(f"expected a key at character {i}")
                key, i = scanstring(text, i + 1)
                i = ws(i)
                if text[i] != ":":
                    raise ValueError(f"expected ':' at character {i}")
                i = ws(value(i + 1, (*path, key)))
                if text[i] == "}":
                    return i + 1
                if text[i] != ",":
                    raise ValueError(f"expected ',' at character {i}")
                i = ws(i + 1)
        if c == "[":
            i, n = ws(i + 1), 0
            if text[i] == "]":
                return i + 1
            while True:
                i = ws(value(i, (*path, n)))
                n += 1
                if text[i] == "]":
                    return i + 1
                if text[i] != ",":
                    raise ValueError(f"expected ',' at character {i}")
                i += 1
        if c == '"':
            _, end = scanstring(text, i + 1)
            spans[path] = (i, end)
            return end
        for literal in ("true", "false", "null"):
            if text.startswith(literal, i):
                spans[path] = (i, i + len(literal))
                return i + len(literal)
        m = _NUMBER.match(text, i)
        if m is None:
            raise ValueError(f"unexpected {c!r} at character {i}")
        spans[path] = (m.start(), m.end())
        return m.end()

    value(0, ())
    return spans


# --------------------------------------------------------------------------- requests
# How each API backend is asked for the schema and the log-probs, and how its token
# log-probs come back; the LLM classes in ``generators`` call these.

ResponseFormatDialect = Literal["json_schema", "json_object"]


def response_format(dialect: ResponseFormatDialect, schema: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` for an OpenAI-compatible server in one of the two dialects.

    ``json_schema`` is OpenAI's (and vLLM's) strict form; ``json_object`` with a ``schema``
    is what llama-cpp-python's server enforces (it refuses ``json_schema`` with a 500).
    """
    if dialect == "json_schema":
        name = str(schema.get("title") or "judgment")
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        }
    return {"type": "json_object", "schema": schema}


def rejects_field(error: Exception, field: str) -> bool:
    """Whether an API error says the server refused ``field`` (a 4xx/5xx naming it)."""
    status = getattr(error, "status_code", None)
    if not isinstance(status, int) or status < 400 or status == 429:
        return False
    return field in str(getattr(error, "message", "") or error) or field in str(
        getattr(error, "body", "") or ""
    )


def chat_choice_tokens(
    choice: Mapping[str, Any],
) -> list[tuple[str, float, list[tuple[str, float]]]] | None:
    """(token, logprob, alternatives) per generated token of an OpenAI-style chat choice,
    read as the JSON answer's dict (huggingface_hub's answer types are dicts too)."""
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    return [
        (
            entry["token"],
            float(entry["logprob"]),
            [(alt["token"], float(alt["logprob"])) for alt in (entry.get("top_logprobs") or [])],
        )
        for entry in content
    ]


def vllm_structured_outputs(schema: dict[str, Any]) -> Any:
    """vLLM's ``StructuredOutputsParams`` for the schema, for ``SamplingParams``.

    Not the ``guided_*`` fields: vLLM removed them in v0.12, and newer servers ignore them
    while still answering 200.
    """
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(json=schema)


def vllm_output_tokens(output: Any) -> list[tuple[str, float, list[tuple[str, float]]]] | None:
    """(token, logprob, alternatives) per generated token of a vLLM ``CompletionOutput``."""
    if output.logprobs is None:
        return None
    tokens = []
    for token_id, alternatives in zip(output.token_ids, output.logprobs, strict=False):
        chosen = alternatives[token_id]
        tokens.append(
            (
                chosen.decoded_token or "",
                float(chosen.logprob),
                [(lp.decoded_token or "", float(lp.logprob)) for lp in alternatives.values()],
            )
        )
    return tokens
