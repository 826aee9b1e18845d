"""Answer checking with math-verify, where the prompts carry reference answers."""

from __future__ import annotations

from math_verify import parse, verify


def is_correct(trace: str, reference: str) -> bool:
    """Whether the trace's final answer matches the reference (symbolically, not by text).

    A reference without delimiters (``42``) is wrapped as ``$42$`` so that math-verify
    reads it as math; a trace with no answer it can extract is simply not correct.
    """
    gold = parse(reference)
    if not gold:
        gold = parse(f"${reference}$")
    answer = parse(trace)
    if not gold or not answer:
        return False
    return bool(verify(gold, answer))
