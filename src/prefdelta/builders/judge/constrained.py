"""Batched ``generate`` for local models under a JSON-schema grammar, with token log-probs.

Why xgrammar: its transformers logits processor (``xgrammar.contrib.hf.LogitsProcessor``)
masks each step's logits to the tokens the schema allows, for every row of a batched,
left-padded ``generate``. With the pinned transformers it ran on CPU at about 2 ms of
grammar work per step and made a 135M model, which never writes valid JSON unprompted,
answer in schema; lm-format-enforcer and outlines were slower per step and let more
answers through invalid (``bench/structured_judge.py`` measures the cost against plain
``generate``).

Order of the logits processors, each step: mask to the grammar, record the distribution
that is left (at a score position, exactly the allowed scores, already renormalised: what
an expected score is computed from), then temperature and top-p. transformers would apply
its own warpers *before* a custom processor, so top-p could discard every token the
grammar allows; here they come after the mask instead.

torch, transformers and xgrammar are imported inside the functions: this module is
imported by the build's parent process, which must not start torch's thread pool before
distilabel forks its workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from prefdelta.builders.judge.structured import TOP_LOGPROBS, TokenLogprobs
from prefdelta.builders.keys import row_seed

__all__ = ["GrammarCache", "LocalGeneration", "generate_local"]


class GrammarCache:
    """Compiled grammars per schema for one tokenizer (compiling takes milliseconds to a
    second; a judge compiles its one schema once per loaded model)."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(info)
        self._compiled: dict[str, Any] = {}

    def get(self, schema: dict[str, Any], think_chars: int | None = None) -> Any:
        """The compiled grammar of ``schema``; ``think_chars``: a reasoning judge's
        ``<think>`` block of at most that many characters comes first
        (:func:`~prefdelta.builders.judge.thinking.think_grammar`)."""
        key = json.dumps([schema, think_chars], sort_keys=True)
        if key not in self._compiled:
            if think_chars is not None:
                from prefdelta.builders.judge.thinking import think_grammar

                grammar = think_grammar(schema, think_chars)
                self._compiled[key] = self._compiler.compile_grammar(grammar)
            else:
                # compact separators: the schema's length bound counts on no free whitespace
                self._compiled[key] = self._compiler.compile_json_schema(
                    json.dumps(schema), any_whitespace=False
                )
        return self._compiled[key]


@dataclass
class LocalGeneration:
    """One generated sequence: its text, token counts and its digit tokens' alternatives."""

    text: str
    input_tokens: int
    output_tokens: int
    token_logprobs: list[TokenLogprobs] | None = field(default=None)


def generate_local(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    num_generations: int,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    batch_size: int,
    grammar: Any | None = None,
    logprobs: bool = False,
    seeds: list[int] | None = None,
) -> list[list[LocalGeneration]]:
    """``num_generations`` sequences per prompt (chat templates already applied).

    ``grammar``: a compiled grammar (:class:`GrammarCache`) every sequence must follow;
    ``logprobs``: report the alternatives of each digit-bearing token (what the grammar
    allowed, at temperature 1); ``seeds``: one per prompt, so that a sampled sequence
    depends on its prompt's seed only, never on which prompts share its batch (a resumed
    build then samples what the uninterrupted one did; see :class:`_RowSampler`).
    Prompts run ``batch_size`` at a time, each batch with a fresh grammar matcher (xgrammar's
    processor serves a single ``generate`` call).
    """
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        results: list[list[LocalGeneration]] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            recorder = _Recorder(TOP_LOGPROBS) if logprobs else None
            processors = _processors(recorder, grammar, do_sample, temperature, top_p)
            sampler_draws = do_sample
            if do_sample and seeds is not None:
                chunk_seeds = seeds[start : start + batch_size]
                processors.append(_RowSampler(chunk_seeds, num_generations))
                sampler_draws = False  # the row sampler draws; generate takes its argmax
            # transformers' own warpers stay neutral (they would run before the mask)
            neutral = {"temperature": 1.0, "top_p": 1.0, "top_k": 0} if sampler_draws else {}
            with torch.inference_mode():
                sequences = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=sampler_draws,
                    num_return_sequences=num_generations,
                    repetition_penalty=1.0,
                    logits_processor=processors,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=_stop_ids(model, tokenizer),
                    **neutral,
                )
            new = sequences[:, enc["input_ids"].shape[1] :].tolist()
            if recorder is not None:
                recorder.finish(new)
            stops = set(_stop_ids(model, tokenizer))
            prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
            rows = [_sequence(tokenizer, ids, stops, recorder, r) for r, ids in enumerate(new)]
            for r, row in enumerate(rows):
                row.input_tokens = int(prompt_tokens[r // num_generations])
            for i in range(len(chunk)):
                results.append(rows[i * num_generations : (i + 1) * num_generations])
        return results
    finally:
        tokenizer.padding_side = side


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _processors(
    recorder: Any, grammar: Any, do_sample: bool, temperature: float, top_p: float
) -> Any:
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    processors: list[Any] = []
    if grammar is not None:
        import xgrammar as xgr

        processors.append(xgr.contrib.hf.LogitsProcessor(grammar))
    if recorder is not None:
        processors.append(recorder)
    if do_sample:
        if temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p))
    return LogitsProcessorList(processors)


class _RowSampler:
    """The last logits processor: adds Gumbel noise from each row's own generator to the
    row's log-probabilities, so that ``generate``'s argmax is an exact sample of the
    (masked, warped) distribution (the Gumbel-max trick).

    transformers samples a whole batch from the one global stream, so a row's text
    depends on the rows beside it and on how many ran before; here each row draws from a
    generator seeded by :func:`~prefdelta.builders.keys.row_seed`, one vector per step,
    whatever its batch.
    """

    def __init__(self, seeds: list[int], num_generations: int) -> None:
        self.seeds = [row_seed(str(s), k) for s in seeds for k in range(num_generations)]
        self._generators: list[Any] | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._generators is None:
            self._generators = [
                torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds
            ]
        width = scores.shape[-1]
        uniform = torch.stack(
            [torch.rand(width, generator=g, device=scores.device) for g in self._generators]
        )
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20, max=1.0 - 1e-7)))
        return torch.log_softmax(scores.float(), dim=-1) + gumbel


class _Recorder:
    """A logits processor that changes nothing and keeps, per step and row, the top-k
    alternatives and (one step later, once it is known) the chosen token's log-prob."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.top: list[tuple[Any, Any]] = []  # per step: (logprobs [B, k], ids [B, k])
        self.chosen: list[list[float]] = []  # per step: chosen token's logprob per row
        self._previous: Any = None  # last step's full log-probs [B, V]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._previous is not None:
            last = input_ids[:, -1:]
            self.chosen.append(self._previous.gather(1, last).squeeze(1).tolist())
        logp = torch.log_softmax(scores.float(), dim=-1)
        values, ids = logp.topk(min(self.k, logp.shape[-1]), dim=-1)
        self.top.append((values.tolist(), ids.tolist()))
        self._previous = logp
        return scores

    def finish(self, new_tokens: list[list[int]]) -> None:
        """The last step's chosen tokens are only known from the finished sequences."""
        if self._previous is None or len(self.chosen) == len(self.top):
            return
        step = len(self.top) - 1
        self.chosen.append(
            [float(self._previous[r, row[step]]) for r, row in enumerate(new_tokens)]
        )
        self._previous = None


def _sequence(
    tokenizer: Any,
    ids: list[int],
    stops: set[int],
    recorder: _Recorder | None,
    row: int,
) -> LocalGeneration:
    end = next((i for i, t in enumerate(ids) if t in stops), None)
    kept = ids if end is None else ids[:end]
    text = tokenizer.decode(kept, skip_special_tokens=True)
    token_logprobs = None
    if recorder is not None:
        token_logprobs = _digit_tokens(tokenizer, kept, text, recorder, row)
    return LocalGeneration(text, 0, len(kept), token_logprobs)


def _digit_tokens(
    tokenizer: Any, ids: list[int], text: str, recorder: _Recorder, row: int
) -> list[TokenLogprobs]:
    pieces = [tokenizer.decode([t], skip_special_tokens=True) for t in ids]
    spelled = "".join(pieces) == text
    out: list[TokenLogprobs] = []
    offset = 0
    for step, piece in enumerate(pieces):
        if any(c.isdigit() for c in piece):
            # a byte-level tokenizer may split a character; then offsets come from decoding
            # the prefix, and a token whose text is not where it should be is left out
            at = offset if spelled else len(tokenizer.decode(ids[:step], skip_special_tokens=True))
            if text[at : at + len(piece)] == piece:
                values, alt_ids = recorder.top[step]
                out.append(
                    {
                        "offset": at,
                        "token": piece,
                        "logprob": recorder.chosen[step][row],
                        "top": [
                            {"token": tokenizer.decode([a], skip_special_tokens=True), "logprob": v}
                            for a, v in zip(alt_ids[row], values[row], strict=True)
                            if v > float("-inf")  # masked out by the grammar
                        ],
                    }
                )
        offset += len(piece)
    return out
