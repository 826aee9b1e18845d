"""What the judge reads of a trace: ``judge.reads`` in a recipe.

Why: a reasoning model's trace (DeepSeek-R1's, say) opens with a ``<think>`` block that
can run to many thousand tokens before the final answer. A recipe chooses what the judge
is shown: the whole trace, the reasoning only, the final answer only, or the reasoning
cut to a token budget (its head and tail kept, a stated marker where it was cut). A trace
whose judge prompt would not fit the judge's context is never sent to fail: it is cut to
fit, or refused with its id and counted, as ``over_context`` says. Unset, ``reads`` is
its defaults (the whole trace; refuse), so the check runs wherever the context is known:
a local or vLLM judge's model config, or an API judge's ``context_tokens``.

The judgment's cache key hashes the very text the judge reads (see
:func:`prefdelta.builders.keys.judge_fingerprint`), so a choice that changes what the
judge reads re-judges exactly the traces it changes, and nothing else.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from prefdelta.recipe.base import StrictModel
from prefdelta.recipe.identity import content

__all__ = ["DEFAULT_MARKER", "JudgeReads", "ReadPart", "describe_reads"]

ReadPart = Literal["whole", "reasoning", "answer"]
DEFAULT_MARKER = "\n[... {cut} tokens of reasoning cut here ...]\n"

_PART_WORDS = {
    "whole": "the whole trace",
    "reasoning": "the reasoning only (the `<think>` block)",
    "answer": "the final answer only (the text after `</think>`)",
}


class JudgeReads(StrictModel):
    """What the judge reads of each trace, and what happens to one too long for it."""

    part: ReadPart = content(
        "whole",
        description="whole: the trace as written; reasoning: the text inside its "
        "`<think>...</think>` block; answer: the text after `</think>` (a trace without a "
        "think block is all reasoning and all answer)",
    )
    max_tokens: int | None = content(
        None,
        gt=0,
        le=10_000_000,
        description="cut the reasoning to this many tokens of the judge's tokenizer, its "
        "first and last halves kept and `marker` between them (part whole or reasoning)",
    )
    marker: str = content(
        DEFAULT_MARKER,
        min_length=1,
        description="the text put where reasoning was cut; {cut} is replaced by the number "
        "of tokens cut",
    )
    over_context: Literal["refuse", "cut"] = content(
        "refuse",
        description="a trace whose judge prompt would not fit the judge's context (less its "
        "max_new_tokens, and room for a re-ask): refuse: not sent, kept with judge_status "
        "over_context and counted; cut: its reasoning cut further, with `marker`, to fit",
    )
    context_tokens: int | None = content(
        None,
        gt=0,
        le=100_000_000,
        description="the judge's context in tokens; default: its model's config (local and "
        "vllm judges). An API judge is checked only when this is given (else its traces are "
        "sent unmeasured)",
    )
    tokenizer: str | None = content(
        None,
        min_length=1,
        description="a tokenizer (Hub id or folder, relative to the recipe) to count the "
        "judge's tokens with; default: the judge's model. An API judge needs one for "
        "max_tokens and context_tokens",
    )

    @model_validator(mode="before")
    @classmethod
    def _part_alone(cls, v: Any) -> Any:
        """``reads: reasoning`` is ``reads: {part: reasoning}``."""
        return {"part": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self) -> JudgeReads:
        if self.max_tokens is not None and self.part == "answer":
            raise ValueError(
                "max_tokens cuts the reasoning, and part 'answer' reads none: give part "
                "'reasoning' or 'whole', or remove max_tokens"
            )
        if self.over_context == "cut" and self.part == "answer":
            raise ValueError(
                "over_context 'cut' cuts the reasoning, and part 'answer' reads none: use "
                "over_context 'refuse'"
            )
        try:
            self.marker.format(cut=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"marker may hold {{cut}} and no other placeholder ({exc!r}); write a "
                "literal brace as {{ or }}"
            ) from None
        return self

    def describe(self, bound: str | None = None) -> str:
        """What the judge reads, in the words of the card and the terminal."""
        words = _PART_WORDS[self.part]
        if self.max_tokens is not None:
            words += (
                f", its reasoning cut to {self.max_tokens:,} tokens (first and last halves "
                f"kept, marked {self.marker.strip()!r})"
            )
        fate = (
            "refused (judge_status over_context)"
            if self.over_context == "refuse"
            else f"cut to fit (marked {self.marker.strip()!r})"
        )
        where = f" ({bound})" if bound else ""
        return f"{words}; a trace too long for the judge's context{where} is {fate}"


def describe_reads(reads: JudgeReads | None) -> str:
    """What a judge with ``reads`` (None: unset) is shown, for the card and inspect."""
    if reads is None:  # and no context known: an API judge without reads.context_tokens
        return "the whole trace, as written, unmeasured (the judge's context was not known)"
    return reads.describe()
