"""Reasoning judges: whether the judge thinks before it answers, and how long it may.

A reasoning model (DeepSeek-R1 and its distills, QwQ, Qwen3, GPT-OSS) writes its reasoning
before the answer. Under a grammar that applies from the first token it never reasons, and
may judge worse than the same model left to think; so with ``judge.reasoning`` on, the
schema applies only after the reasoning (each backend by its own means, see
:mod:`prefdelta.builders.judge.thinking`), and the reasoning gets its own token budget,
added to ``generation.max_new_tokens`` (which stays the answer's budget: the schema's
rationale bound is computed from it).

``auto`` (the default) turns reasoning on for a model whose id names a family in
:data:`REASONING_FAMILIES`, and off otherwise. The rule reads the model id only: a
fine-tune renamed beyond recognition needs ``reasoning: on``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_REASONING_BUDGET",
    "REASONING_FAMILIES",
    "THINK_TAG_PARSERS",
    "THINK_TAG_TOKENS",
    "Reasoning",
    "ReasoningMode",
    "reasoning_family",
    "resolve_reasoning",
]

ReasoningMode = Literal["auto", "on", "off"]

DEFAULT_REASONING_BUDGET = 2048
"""Tokens a judge may reason for when the recipe gives no ``reasoning_budget``."""

THINK_TAG_TOKENS = 16
"""Room for the ``<think>`` and ``</think>`` tags around a local model's reasoning (15
characters, so at most 15 tokens), beyond the budget."""


THINK_TAG_PARSERS = frozenset({"deepseek_r1", "qwen3"})
"""vLLM reasoning parsers whose models reason between ``<think>`` and ``</think>``: vLLM can
end such a reasoning at a token budget (``thinking_token_budget``)."""


@dataclass(frozen=True)
class Family:
    """A family of reasoning models: what its ids contain, and vLLM's parser for it."""

    name: str
    markers: tuple[str, ...]  # any of these in the lowercased model id
    vllm_parser: str
    unless: tuple[str, ...] = ()  # ids that contain one of these are not in the family


REASONING_FAMILIES: tuple[Family, ...] = (
    Family("DeepSeek-R1", ("deepseek-r1", "r1-distill"), "deepseek_r1"),
    Family("QwQ", ("qwq",), "deepseek_r1"),
    Family("Qwen3", ("qwen3",), "qwen3", unless=("instruct",)),
    Family("GPT-OSS", ("gpt-oss",), "openai_gptoss"),
)
"""The families ``reasoning: auto`` recognises (Qwen3's ``-Instruct`` releases do not
think, so they are left out)."""


def reasoning_family(model: str) -> Family | None:
    """The family ``model`` (a Hub id, path or file name) belongs to, or None."""
    name = model.lower()
    for family in REASONING_FAMILIES:
        if any(m in name for m in family.markers) and not any(u in name for u in family.unless):
            return family
    return None


@dataclass(frozen=True)
class Reasoning:
    """A judge's reasoning, resolved: its budget in tokens, vLLM's reasoning parser (for
    backend vllm) and why it is on (``on``, or ``auto: <family>``)."""

    budget: int
    parser: str | None
    why: str

    @property
    def extra_tokens(self) -> int:
        """Tokens added to the answer's ``max_new_tokens`` for the reasoning."""
        return self.budget + THINK_TAG_TOKENS


def resolve_reasoning(
    model: str,
    mode: ReasoningMode | None,
    budget: int | None,
    parser: str | None,
) -> Reasoning | None:
    """The judge's reasoning, or None when it answers at once (``mode`` None is ``auto``)."""
    family = reasoning_family(model)
    if mode == "off" or (mode in (None, "auto") and family is None):
        return None
    why = "on" if mode == "on" else f"auto: {family.name if family else '?'}"
    return Reasoning(
        budget=budget or DEFAULT_REASONING_BUDGET,
        parser=parser or (family.vllm_parser if family else None),
        why=why,
    )
