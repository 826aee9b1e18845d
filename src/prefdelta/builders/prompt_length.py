"""Prompts too long for a local generator are refused one by one, before any model call.

Why: a local model handed a prompt beyond its context does not fail that prompt alone. It
tries to allocate attention for the whole padded batch (a 200 kB prompt asked a tiny model
for 40 GB) and takes the batch's other prompts, and every other generator's, down with
it. Each local generator's bound is its model's context less its ``max_new_tokens``, or
``prompts.max_tokens`` where that is lower, counted in the model's own tokens with the
chat the generator sends. A refused prompt is left out of the whole build (a pair needs
every generator's trace) and named, with its id and its count, in the summary.

API generators are not counted here: their tokenizers are not at hand, and a server
refuses an over-long request itself, which fails that row only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefdelta.backends import is_local
from prefdelta.builders.llms import local_model_path
from prefdelta.builders.prompts import Prompt
from prefdelta.builders.traces import chat_for
from prefdelta.recipe import GeneratorConfig, PromptsConfig, RecipeError

__all__ = [
    "RefusedPrompt",
    "chat_token_counts",
    "model_tokenizer",
    "prompt_token_counts",
    "refuse_long_prompts",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefusedPrompt:
    """A prompt over a generator's bound: what the summary and the terminal name."""

    prompt_id: str
    generator: str
    tokens: int
    bound: int
    why: str  # how the bound came about, e.g. "context 8192 - max_new_tokens 512"

    def describe(self) -> str:
        return (
            f"prompt {self.prompt_id[:12]}: {self.tokens} tokens for generator "
            f"{self.generator!r}, over its bound of {self.bound} ({self.why})"
        )


def refuse_long_prompts(
    prompts: list[Prompt],
    generators: dict[str, GeneratorConfig],
    config: PromptsConfig,
    base_dir: Path,
) -> tuple[list[Prompt], list[RefusedPrompt]]:
    """The prompts every local generator can take, and the others with the reason."""
    refused: dict[str, RefusedPrompt] = {}
    for name, generator in generators.items():
        if not is_local(generator.backend):
            continue
        tokenizer, context = _tokenizer_and_context(generator, base_dir)
        bound, why = _bound(name, generator, context, config.max_tokens)
        if bound is None:
            continue
        todo = [p for p in prompts if p.prompt_id not in refused]
        for prompt, tokens in zip(todo, _count(tokenizer, generator, todo), strict=True):
            if tokens > bound:
                refused[prompt.prompt_id] = RefusedPrompt(
                    prompt.prompt_id, name, tokens, bound, why
                )
    kept = [p for p in prompts if p.prompt_id not in refused]
    if prompts and not kept:
        first = next(iter(refused.values()))
        raise RecipeError(
            [f"prompts: every prompt is too long for its generators; first, {first.describe()}"]
        )
    return kept, list(refused.values())


def prompt_token_counts(
    generator: GeneratorConfig, prompts: Sequence[Prompt], base_dir: Path
) -> list[int] | None:
    """Each prompt's tokens as a local generator sends it (its chat template included);
    None for an API generator, whose tokenizer is not at hand, or a local one whose
    tokenizer cannot be loaded here (a Hub model not downloaded, offline): an estimate
    then counts characters, it never fails."""
    if not is_local(generator.backend):
        return None
    try:
        tokenizer, _ = _tokenizer_and_context(generator, base_dir)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        logger.info("no tokenizer for %s (%s): counting characters", generator.model, exc)
        return None
    return _count(tokenizer, generator, prompts)


def _bound(
    name: str, generator: GeneratorConfig, context: int | None, max_tokens: int | None
) -> tuple[int | None, str]:
    budget = generator.generation.max_new_tokens
    bounds: list[tuple[int, str]] = []
    if context is not None:
        if budget >= context:
            raise RecipeError(
                [
                    f"generators.{name}.generation.max_new_tokens: {budget} leaves no room for "
                    f"a prompt in the model's context of {context} tokens"
                ]
            )
        bounds.append((context - budget, f"context {context} - max_new_tokens {budget}"))
    if max_tokens is not None:
        bounds.append((max_tokens, "prompts.max_tokens"))
    if not bounds:
        return None, ""
    return min(bounds)


def _tokenizer_and_context(generator: GeneratorConfig, base_dir: Path) -> tuple[Any, int | None]:
    """The generator's tokenizer and its model's context length (None when unknown)."""
    return model_tokenizer(local_model_path(generator, base_dir))


def model_tokenizer(model: str) -> tuple[Any, int | None]:
    """The tokenizer of ``model`` (a folder or a Hub id) and its context length (None
    when unknown); the judge's reads are counted with it too."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    context = None
    try:
        config = AutoConfig.from_pretrained(model).get_text_config()
        context = getattr(config, "max_position_embeddings", None)
    except (OSError, ValueError):
        pass
    if context is None and 0 < tokenizer.model_max_length < 10**8:
        context = tokenizer.model_max_length
    return tokenizer, context


def _count(tokenizer: Any, generator: GeneratorConfig, prompts: Sequence[Prompt]) -> list[int]:
    """Tokens of each prompt as the generator sends it."""
    return chat_token_counts(tokenizer, [chat_for(generator, p.prompt) for p in prompts])


def chat_token_counts(tokenizer: Any, chats: Sequence[list[dict[str, str]]]) -> list[int]:
    """Tokens of each chat as a model is sent it (distilabel's ``prepare_input``: the chat
    template with a generation prompt, or the first message's text without one)."""
    if tokenizer.chat_template is None:
        texts = [chat[0]["content"] for chat in chats]
    else:
        texts = [
            tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            for chat in chats
        ]
    # one at a time: a batch would start the tokenizer's thread pool in the build's parent,
    # which distilabel then forks
    return [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
