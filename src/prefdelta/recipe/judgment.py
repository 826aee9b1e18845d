"""The judge's answer as a JSON schema: the contract between the prompt, the decoder and the
reader of scores.

Why a schema: asked in prose for JSON, judges answer in prose, fence their JSON, rename
keys or run out of tokens mid-rationale; a decoder that enforces a schema cannot. Every
backend prefdelta drives can enforce one (a grammar in ``generate`` for local models,
vLLM's structured outputs, ``response_format`` on OpenAI-compatible servers, TGI's
grammar), so the schema is built once here, from the recipe's dimensions, scale and
token budget, and every backend receives the same object.

Shape: one object per dimension, in recipe order, holding a ``rationale`` (first, so the
judge writes why before it commits to a number) and an integer ``score`` from the scale.
It is "strict" in OpenAI's sense: every property required, ``additionalProperties: false``.

Why the rationale is bounded: a judgment that runs out of tokens is lost. Its length is
capped so that the whole answer fits ``max_new_tokens`` even at one token per character,
the worst case of a byte-level tokenizer on ASCII text (a grammar may force its literal
keys out one character at a time); the budget left after the JSON skeleton is shared
equally among the dimensions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = [
    "MIN_RATIONALE_CHARS",
    "SCHEMA_TITLE",
    "judgment_schema",
    "min_structured_tokens",
    "rationale_max_chars",
]

SCHEMA_TITLE = "judgment"
MIN_RATIONALE_CHARS = 12
"""Below this a rationale cannot say anything; a budget that leaves less is refused."""

# Whitespace a server's grammar may add beyond compact ", "/": " separators (llama.cpp's
# JSON grammar allows a newline and indentation between members), and the end token.
_SLACK_PER_DIMENSION = 4
_SLACK_FIXED = 8


def _skeleton_chars(dimensions: Sequence[str], scale: tuple[int, int]) -> int:
    """Characters of the answer with every rationale empty and the widest score."""
    widest = max(scale, key=lambda v: len(str(v)))
    skeleton = {d: {"rationale": "", "score": widest} for d in dimensions}
    return len(json.dumps(skeleton)) + _SLACK_PER_DIMENSION * len(dimensions) + _SLACK_FIXED


def rationale_max_chars(
    dimensions: Sequence[str], scale: tuple[int, int], max_new_tokens: int
) -> int:
    """The longest rationale, in characters, that keeps every answer within the budget."""
    return (max_new_tokens - _skeleton_chars(dimensions, scale)) // max(1, len(dimensions))


def min_structured_tokens(dimensions: Sequence[str], scale: tuple[int, int]) -> int:
    """The smallest ``max_new_tokens`` that leaves each rationale ``MIN_RATIONALE_CHARS``."""
    return _skeleton_chars(dimensions, scale) + MIN_RATIONALE_CHARS * len(dimensions)


def judgment_schema(
    dimensions: Sequence[str], scale: tuple[int, int], max_new_tokens: int
) -> dict[str, Any]:
    """The strict JSON schema of one judgment (see the module docstring).

    Raises ValueError when ``max_new_tokens`` cannot hold a judgment with rationales of
    ``MIN_RATIONALE_CHARS``; recipes are checked for this when they load.
    """
    low, high = scale
    chars = rationale_max_chars(dimensions, scale, max_new_tokens)
    if chars < MIN_RATIONALE_CHARS:
        raise ValueError(
            f"max_new_tokens {max_new_tokens} cannot hold a structured judgment of "
            f"{len(dimensions)} dimensions; it needs at least "
            f"{min_structured_tokens(dimensions, scale)}"
        )
    entry = {
        "type": "object",
        "properties": {
            "rationale": {"type": "string", "maxLength": chars},
            "score": {"type": "integer", "enum": list(range(low, high + 1))},
        },
        "required": ["rationale", "score"],
        "additionalProperties": False,
    }
    return {
        "title": SCHEMA_TITLE,
        "type": "object",
        "properties": {d: entry for d in dimensions},
        "required": list(dimensions),
        "additionalProperties": False,
    }
