"""A reasoning judge's output: the reasoning apart from the answer, on every backend.

How each backend lets the judge think before the schema applies
(:mod:`prefdelta.recipe.reasoning` says when it does):

- local models (transformers, gguf): :func:`think_grammar`, a grammar that allows a
  ``<think>…</think>`` block of at most the budget's characters before the JSON schema
  (at most that many tokens of ASCII text; the block cannot hold ``<``, so that it can
  only end at ``</think>``);
- vLLM: its reasoning parser (``LLM(reasoning_parser=...)``) starts the grammar where the
  reasoning ends, and ``thinking_token_budget`` bounds it;
- OpenAI-compatible servers: the reasoning comes back beside the constrained answer, in the
  message's ``reasoning_content`` (or ``reasoning``) field, and is kept.

Where the reasoning comes back inside the text (local models, vLLM, a server without a
reasoning field), :func:`split_reasoning` cuts it off, and :func:`answer_logprobs` moves the
score tokens' offsets onto the answer: a digit inside the reasoning never enters an
expected score. Token counts stay the whole generation's: the reasoning costs tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from prefdelta.builders.judge.structured import TokenLogprobs

__all__ = [
    "THINK_CLOSE",
    "THINK_OPEN",
    "Split",
    "answer_logprobs",
    "message_reasoning",
    "split_answer",
    "split_reasoning",
    "think_grammar",
]

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# gpt-oss (harmony) answers after its final channel marker, and may end on a marker
_HARMONY_FINAL = "<|channel|>final<|message|>"
_HARMONY_END = re.compile(r"(?:<\|(?:return|end|call)\|>)+\s*$")
_HARMONY_MARKS = re.compile(r"<\|start\|>assistant|<\|channel\|>\w+<\|message\|>|<\|end\|>")
_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_CLOSE = re.compile(r"</(think|thinking|reasoning)>", re.IGNORECASE)


class Split(NamedTuple):
    """A judge's output cut in two. ``reasoning`` None: there was no reasoning block;
    ``start``: where the answer starts in the output; ``closed`` False: the reasoning never
    ended (the answer is then empty)."""

    reasoning: str | None
    answer: str
    start: int
    closed: bool = True


def split_reasoning(text: str) -> Split:
    """The reasoning and the answer of one output (the answer is the text after the last
    ``</think>``, or after gpt-oss's final channel marker)."""
    if _HARMONY_FINAL in text:
        at = text.rindex(_HARMONY_FINAL)
        start = at + len(_HARMONY_FINAL)
        answer = _HARMONY_END.sub("", text[start:])
        return Split(_HARMONY_MARKS.sub("", text[:at]).strip(), answer, start)
    closes = list(_CLOSE.finditer(text))
    if closes:
        end = closes[-1]
        return Split(
            _OPEN.sub("", text[: end.start()], count=1).strip(), text[end.end() :], end.end()
        )
    opened = _OPEN.search(text)
    if opened is not None:
        return Split(text[opened.end() :].strip(), "", len(text), closed=False)
    return Split(None, text, 0)


def answer_logprobs(
    tokens: Sequence[TokenLogprobs] | None, start: int, answer: str
) -> list[TokenLogprobs] | None:
    """The digit tokens of an output's answer, their offsets counted from ``start`` (where
    the answer begins); tokens of the reasoning before it are dropped."""
    if tokens is None:
        return None
    out: list[TokenLogprobs] = []
    for t in tokens:
        offset = t["offset"] - start
        if offset >= 0 and answer[offset : offset + len(t["token"])] == t["token"]:
            out.append({**t, "offset": offset})
    return out


def message_reasoning(message: Mapping[str, Any]) -> str | None:
    """The reasoning an OpenAI-compatible server returned beside the answer (the message
    as the JSON answer's dict): vLLM and DeepSeek's API call it ``reasoning_content``,
    newer vLLM ``reasoning``."""
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if isinstance(value, str):
            return value
    return None


def think_grammar(schema: dict[str, Any], max_chars: int) -> Any:
    """xgrammar's grammar for ``<think>`` at most ``max_chars`` characters ``</think>``
    followed by the compact JSON of ``schema``."""
    import xgrammar as xgr

    think = xgr.Grammar.from_ebnf(f'root ::= "{THINK_OPEN}" [^<]{{0,{max_chars}}} "{THINK_CLOSE}"')
    answer = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
    return xgr.Grammar.concat(think, answer)


def split_answer(
    text: str | None, logprobs: Sequence[TokenLogprobs] | None, reasoning: str | None
) -> tuple[str | None, list[TokenLogprobs] | None, str | None]:
    """One generation of a reasoning judge as (answer, its digit tokens, reasoning).

    ``reasoning``: what the backend returned apart (an OpenAI-compatible server's field);
    without it, the reasoning is cut off the text. An answer that never left its
    reasoning is empty (the reader then calls it truncated or empty)."""
    if text is None or reasoning is not None:
        return text, None if logprobs is None else list(logprobs), reasoning
    split = split_reasoning(text)
    if split.reasoning is None:
        return text, None if logprobs is None else list(logprobs), None
    return split.answer, answer_logprobs(logprobs, split.start, split.answer), split.reasoning
