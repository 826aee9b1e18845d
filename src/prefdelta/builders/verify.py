"""Answer checking where the prompts carry reference answers: math-verify for math, the
option letter for multiple-choice sets (MMLU-Pro style)."""

from __future__ import annotations

import re


def is_correct(trace: str, reference: str) -> bool:
    """Whether the trace's final answer matches the reference (symbolically, not by text).

    A reference without delimiters (``42``) is wrapped as ``$42$`` so that math-verify
    reads it as math; a trace with no answer it can extract is simply not correct.
    """
    # imported here: half a second of CPU that a build without references never needs
    from math_verify import parse, verify

    gold = parse(reference)
    if not gold:
        gold = parse(f"${reference}$")
    answer = parse(trace)
    if not gold or not answer:
        return False
    return bool(verify(gold, answer))


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# how a final option letter is written: \boxed{B}, \boxed{\text{(B)}}, "the answer is
# (B)", "Answer: B." -- the last such mention wins; a bare capital inside prose ("the
# answer is A prime") is not a letter
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_BOXED_LETTER = re.compile(r"^\(?([A-Z])\)?(?:[.:)\s].*)?$", re.DOTALL)
_STATED = re.compile(
    r"(?i:answer)\s*(?:(?i:is)\s*)?:?\s*(?:\(([A-Z])\)|([A-Z])(?=[.,;:!]|\s*$|\s*\n))",
    re.MULTILINE,
)
_ALONE = re.compile(r"^\s*\(?([A-Z])\)?[.:]?\s*$")


def choice_letter(trace: str, n_options: int = 10) -> str | None:
    """The option letter a trace gives as its final answer (``A`` ... up to ``n_options``),
    or None when it gives none: a boxed letter first, then "the answer is X", then a trace
    that is only a letter."""
    valid = LETTERS[:n_options]
    boxed = []
    for m in _BOXED.finditer(trace):
        inner = re.sub(r"\\text\{([^{}]*)\}", r"\1", m.group(1)).strip()
        letter = _BOXED_LETTER.match(inner)
        if letter:
            boxed.append(letter.group(1))
    stated = [a or b for a, b in _STATED.findall(trace)]
    alone = _ALONE.match(trace)
    for found in (boxed, stated, [alone.group(1)] if alone else []):
        found = [f for f in found if f in valid]
        if found:
            return found[-1]
    return None


def is_choice_correct(trace: str, reference: str, n_options: int = 10) -> bool:
    """Whether the trace's option letter is the reference letter."""
    return choice_letter(trace, n_options) == reference.strip().upper()
