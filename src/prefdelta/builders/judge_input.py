"""What the judge reads of each trace (``judge.reads``), and the traces too long for it.

Why: R1-style traces open with a ``<think>`` block that can run far past what a judge
should, or can, read. :class:`JudgeInput` applies the recipe's choice (the whole trace,
the reasoning, the final answer, the reasoning cut to a token budget) and, where the
judge's context is known, measures each judge prompt in the judge's own tokens (with its
chat template, as :mod:`prefdelta.builders.prompt_length` measures a generator's): a prompt
over the bound is cut to fit or refused, as the recipe says, before any call. A refused
trace stays in the tables (``judge_status`` ``over_context``), named and counted in the
summary, never sent to fail.

Without ``reads`` the judge reads the whole trace and the check still runs wherever the
context is known (a local or vLLM judge: its model's config), refusing what does not fit;
an API judge's context is known only from ``reads.context_tokens``, so without it its
traces are sent unmeasured, as the server will take them or fail them. Unset, a judge
tokenizer that cannot be loaded here (vLLM not installed, a Hub model out of reach)
leaves the context unknown too, logged: the judge's own load then says what is wrong. The text read is
the trace itself either way, so no judgment's key changes. Counting is a chat template
and one tokenizer pass per trace (about a millisecond for a demo trace): no character
count bounds a tokenizer's tokens soundly, so every trace is counted.

The bound is the context less the judge's ``max_new_tokens`` and, when it may re-ask,
room for the re-ask (its previous answer and a line of request).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefdelta.backends import is_api
from prefdelta.builders.judge.parsing import EMPTY_PART, OVER_CONTEXT
from prefdelta.builders.judge.prompt import judge_prompt
from prefdelta.builders.judge.spec import JudgeSpec
from prefdelta.builders.llms import local_model_path
from prefdelta.builders.prompt_length import chat_token_counts, model_tokenizer
from prefdelta.recipe import RecipeError, resolve_path
from prefdelta.recipe.reads import JudgeReads

__all__ = ["JudgeInput", "Read", "read_chars", "reads_summary", "split_think"]

logger = logging.getLogger(__name__)

REASK_TOKENS = 64  # a re-ask's request line, beyond the previous answer it shows back
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_think(trace: str) -> tuple[str, str, str, str]:
    """``(head, reasoning, tail, answer)`` of a trace: ``head + reasoning + tail`` is the
    trace, ``reasoning`` the inside of its ``<think>`` block, ``answer`` the text after
    ``</think>``. No ``<think>`` before a ``</think>``: the reasoning starts the trace (a
    chat template may have opened the block). A block never closed (the trace stopped at
    its budget): no answer. No block at all: the trace is all reasoning and all answer."""
    close = trace.find(THINK_CLOSE)
    start = trace.find(THINK_OPEN)
    if close == -1 and start == -1:
        return "", trace, "", trace
    begin = start + len(THINK_OPEN) if start != -1 and (close == -1 or start < close) else 0
    if close == -1:
        return trace[:begin], trace[begin:], "", ""
    return trace[:begin], trace[begin:close], trace[close:], trace[close + len(THINK_CLOSE) :]


def read_chars(reads: JudgeReads | None, trace: str, chars_per_token: int) -> int:
    """About how many characters of ``trace`` the judge reads (an estimate needs no
    tokenizer: a cut reasoning counts ``max_tokens`` at ``chars_per_token``)."""
    if reads is None:
        return len(trace)
    head, reasoning, tail, answer = split_think(trace)
    if reads.part == "answer":
        return len(answer.strip())
    if reads.max_tokens is not None:
        reasoning = reasoning[: reads.max_tokens * chars_per_token]
    return len(reasoning.strip()) if reads.part == "reasoning" else len(head + reasoning + tail)


@dataclass(frozen=True)
class Read:
    """What the judge reads of one trace. ``text`` None: not sent (``status`` says why)."""

    text: str | None
    status: str | None = None  # over_context | empty_part; None: sent
    problem: str | None = None
    cut: int = 0  # tokens of reasoning cut
    tokens: int | None = None  # the judge prompt's tokens, where counted


@dataclass(frozen=True)
class Refused:
    """A trace the judge was not sent because it does not fit: what the summary names."""

    trace_key: str
    prompt_id: str
    generator: str
    sample: int
    tokens: int
    bound: int


class JudgeInput:
    """A recipe's ``judge.reads`` resolved once per build: its tokenizer loaded (where it
    counts), the judge's context and bound found."""

    def __init__(self, spec: JudgeSpec, base_dir: Path) -> None:
        self.spec = spec
        self.stated: JudgeReads | None = spec.config.reads  # None: the recipe says nothing
        # unset: the whole trace, refused where it does not fit the judge's known context
        self.reads: JudgeReads = spec.config.reads or JudgeReads()
        self.tokenizer: Any = None
        self.context: int | None = None
        self.bound: int | None = None
        self.why = ""
        reads = self.reads
        judge = spec.config
        wants_context = reads.context_tokens is not None or not is_api(judge.backend)
        if reads.max_tokens is None and not wants_context:
            return  # an API judge without a context stated: nothing to count
        source = reads.tokenizer or judge.model
        try:
            if reads.tokenizer is not None:
                folder = resolve_path(reads.tokenizer, base_dir)
                source = str(folder) if folder.exists() else reads.tokenizer
            else:  # the model the build loads (an API judge without one: refused by the recipe)
                source = local_model_path(judge, base_dir)
            self.tokenizer, model_context = model_tokenizer(source)
        except (OSError, ValueError) as exc:
            if self.stated is None:  # unset: the judge's own load says what is wrong with it
                logger.warning(
                    "judge: no tokenizer from %r (%s): its context is unknown, traces are "
                    "sent unmeasured",
                    source,
                    exc,
                )
                return
            raise RecipeError(
                [
                    f"judge: cannot load the tokenizer {source!r} to measure the judge's "
                    f"prompts against its context ({type(exc).__name__}: {str(exc)[:200]}); "
                    "give judge.reads.tokenizer (a Hub id or a folder)"
                ]
            ) from None
        self.context = reads.context_tokens or (
            model_context if not is_api(judge.backend) else None
        )
        if self.context is None:
            return
        budget = judge.generation.max_new_tokens
        reask = budget + REASK_TOKENS if judge.max_retries else 0
        self.bound = self.context - budget - reask
        self.why = f"context {self.context} - max_new_tokens {budget}" + (
            f" - a re-ask's {reask}" if reask else ""
        )
        frame = self._prompt_tokens("", "")
        if self.bound <= frame:
            raise RecipeError(
                [
                    f"judge: the judge's prompt alone takes {frame} tokens, over its "
                    f"bound of {self.bound} ({self.why}): raise judge.reads.context_tokens, "
                    "or lower judge.generation.max_new_tokens or max_retries"
                ]
            )

    def judged(self, prompt: str, trace: str, reference: str | None) -> tuple[Read, str | None]:
        """What the judge reads of ``trace``, and the store key of its judgment of that
        (None: it is not sent); the build and its count of stored work key alike."""
        read = self.read(prompt, trace)
        return read, None if read.text is None else self.spec.key(prompt, read.text, reference)

    def read(self, prompt: str, trace: str) -> Read:
        """What the judge reads of ``trace``, cut or refused as the recipe says."""
        reads = self.reads
        head, reasoning, tail, answer = split_think(trace)
        if reads.part == "answer":
            if not answer.strip():
                why = "no final answer (no text after </think>) and judge.reads is 'answer'"
                return Read(None, EMPTY_PART, f"not judged: the trace has {why}")
            return self._fit(prompt, lambda _: answer.strip(), None)
        if reads.part == "reasoning" and not reasoning.strip():
            why = "an empty <think> block and judge.reads is 'reasoning'"
            return Read(None, EMPTY_PART, f"not judged: the trace has {why}")

        def compose(kept: str) -> str:
            return kept.strip() if reads.part == "reasoning" else head + kept + tail

        return self._fit(prompt, compose, reasoning)

    def _fit(self, prompt: str, compose: Callable[[str], str], reasoning: str | None) -> Read:
        """``compose(reasoning kept)``, with the reasoning cut to ``max_tokens``, then
        measured against the bound and cut further or refused. The reasoning is tokenized
        only where it may be cut."""
        reads = self.reads
        offsets: list[tuple[int, int]] = []
        keep = None
        if reasoning is not None and self.tokenizer is not None and reads.max_tokens is not None:
            offsets = self._offsets(reasoning)
            if len(offsets) > reads.max_tokens:
                keep = reads.max_tokens
        text = compose(self._cut(reasoning, offsets, keep) if reasoning is not None else "")
        if self.bound is None:
            return Read(text, cut=0 if keep is None else len(offsets) - keep)
        tokens = self._prompt_tokens(prompt, text)
        for _ in range(8):  # each round removes what was over (tokenizing is not additive)
            if tokens <= self.bound:
                return Read(text, cut=0 if keep is None else len(offsets) - keep, tokens=tokens)
            if reads.over_context == "refuse" or reasoning is None:
                break
            offsets = offsets or self._offsets(reasoning)
            marker = 0 if keep is not None else self._tokens(reads.marker.format(cut=0)) + 4
            keep = (len(offsets) if keep is None else keep) - (tokens - self.bound) - marker
            if keep <= 0:
                break
            text = compose(self._cut(reasoning, offsets, keep))
            tokens = self._prompt_tokens(prompt, text)
        return Read(
            None,
            OVER_CONTEXT,
            f"not judged: its judge prompt takes {tokens} tokens, over the judge's bound "
            f"of {self.bound} ({self.why})"
            + ("" if reads.over_context == "refuse" else ", even with its reasoning cut"),
            tokens=tokens,
        )

    def _cut(self, reasoning: str, offsets: list[tuple[int, int]], keep: int | None) -> str:
        """``reasoning`` with its first and last ``keep / 2`` tokens kept and the marker
        between them (``keep`` None: whole)."""
        if keep is None or keep >= len(offsets):
            return reasoning
        reads = self.reads
        first = keep // 2
        last = keep - first
        end = offsets[first - 1][1] if first else 0
        begin = offsets[len(offsets) - last][0] if last else len(reasoning)
        marker = reads.marker.format(cut=len(offsets) - keep)
        return reasoning[:end] + marker + reasoning[begin:]

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        """Each token's character span in ``text``: where a cut may fall."""
        if getattr(self.tokenizer, "is_fast", False):
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            return [tuple(o) for o in enc["offset_mapping"]]  # type: ignore[misc]
        # a slow tokenizer: spans from the decoded tokens, one after another
        spans, at = [], 0
        for token in self.tokenizer(text, add_special_tokens=False)["input_ids"]:
            piece = self.tokenizer.decode([token])
            found = text.find(piece, at) if piece else -1
            end = at + len(piece) if found == -1 else found + len(piece)
            spans.append((at, end))
            at = end
        return spans

    def _tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt_tokens(self, prompt: str, text: str) -> int:
        return chat_token_counts(self.tokenizer, [judge_prompt(self.spec, prompt, text)])[0]


def reads_summary(
    judge_input: JudgeInput,
    reads: Iterable[tuple[str, str, str, int, Read]],
) -> dict[str, Any]:
    """What ``summary.json`` records of the judge's reads. ``reads``: (generator, trace
    key, prompt id, sample, its read) of every trace with text."""
    cut: Counter[str] = Counter()
    empty: Counter[str] = Counter()
    refused: list[Refused] = []
    for generator, key, prompt_id, sample, read in reads:
        cut[generator] += read.cut > 0
        empty[generator] += read.status == EMPTY_PART
        if read.status == OVER_CONTEXT:
            refused.append(
                Refused(key, prompt_id, generator, sample, read.tokens or 0, judge_input.bound or 0)
            )
    config = judge_input.stated
    return {
        "reads": None if config is None else config.model_dump(mode="json"),
        "context_tokens": judge_input.context,
        "bound": judge_input.bound,
        "bound_why": judge_input.why or None,
        "cut": {g: n for g, n in cut.items() if n},
        "empty_part": {g: n for g, n in empty.items() if n},
        "over_context": dict(Counter(r.generator for r in refused)),
        "over_context_traces": [asdict(r) for r in refused],
    }
