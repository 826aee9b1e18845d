"""The transformers backend, and the gguf one: a GGUF file is converted once to a
transformers folder (:func:`prefdelta.builders.llms.local_model_path`), which this class
loads like any other."""

from __future__ import annotations

from typing import Any, ClassVar

from distilabel.models.llms import TransformersLLM
from pydantic import Field, PrivateAttr

__all__ = ["LocalTransformersLLM"]


class LocalTransformersLLM(TransformersLLM):
    """``TransformersLLM`` that picks its device when loaded, in the step's own process.

    Probing CUDA in the parent before distilabel forks a process per step can break CUDA in
    the children, so ``device=None`` means "cuda if available, else cpu", decided in
    ``load``. The text-generation pipeline runs ``batch_size`` prompts per forward pass
    (distilabel leaves it at one): same greedy text, and SmolLM2 on 2 CPU cores, 8 prompts,
    went from 12 to 35 tok/s. ``cpu_threads`` caps torch's intra-op threads on CPU:
    distilabel runs each step in its own process, and more threads than free cores make
    each one crawl (same test, one prompt at a time, cores busy with other work: 6 tok/s
    with 2 threads, 11 with 1; idle cores: 12 and 11). ``seed`` seeds the step's process:
    forked from one parent, every step would otherwise sample from the same random stream.
    Callers that name their rows pass ``seeds`` instead
    (:func:`~prefdelta.builders.llms.takes_row_seeds`): each sampled row then draws from its
    own stream, whatever shares its batch or its model. ``think_chars`` (a reasoning judge):
    the grammar lets a ``<think>`` block of at most that many characters come before the
    schema.
    """

    per_row_seeds: ClassVar[bool] = True
    batch_size: int = Field(8, gt=0)
    cpu_threads: int | None = Field(None, gt=0)
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    logprobs: bool = False
    think_chars: int | None = Field(None, gt=0)

    _streams: dict[int, tuple[Any, Any]] = PrivateAttr(default_factory=dict)
    _grammars: Any = PrivateAttr(default=None)

    def load(self) -> None:
        import torch
        from transformers import set_seed

        if self.seed is not None:
            set_seed(self.seed)
        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu" and self.cpu_threads is not None:
            torch.set_num_threads(self.cpu_threads)
        super().load()
        self._pipeline._batch_size = self.batch_size  # type: ignore[union-attr]
        if self.json_schema is not None:
            from prefdelta.builders.judge.constrained import GrammarCache

            model = self._pipeline.model  # type: ignore[union-attr]
            self._grammars = GrammarCache(
                self._pipeline.tokenizer,  # type: ignore[union-attr]
                vocab_size=model.config.get_text_config().vocab_size,
            )
            # a schema xgrammar rejects fails at load
            self._grammars.get(self.json_schema, self.think_chars)

    def generate(  # type: ignore[override]
        self,
        inputs: list[Any],
        num_generations: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 0.1,
        repetition_penalty: float = 1.1,
        top_p: float = 1.0,
        top_k: int = 0,
        do_sample: bool = True,
        seeds: list[int] | None = None,
    ) -> list[Any]:
        """distilabel's pipeline path, unless a schema, log-probs or per-row ``seeds`` (for
        sampling) are asked for: then batched ``generate`` (:mod:`prefdelta.builders.
        constrained`), whose outputs carry ``token_logprobs`` beside the usual generations."""
        row_seeded = do_sample and seeds is not None
        if self.json_schema is None and not self.logprobs and not row_seeded:
            return super().generate(
                inputs,
                num_generations=num_generations,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                repetition_penalty=repetition_penalty,
                top_p=top_p,
                top_k=top_k,
                do_sample=do_sample,
            )
        if repetition_penalty != 1.0 or top_k != 0:
            raise ValueError("constrained decoding supports temperature and top_p only")
        from prefdelta.builders.judge.constrained import generate_local

        pipeline = self._pipeline
        assert pipeline is not None
        grammar = None
        if self.json_schema is not None:
            grammar = self._grammars.get(self.json_schema, self.think_chars)
        generated = generate_local(
            pipeline.model,
            pipeline.tokenizer,
            [self.prepare_input(i) for i in inputs],
            num_generations=num_generations,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            batch_size=self.batch_size,
            grammar=grammar,
            logprobs=self.logprobs,
            seeds=seeds if row_seeded else None,
        )
        return [
            {
                "generations": [g.text for g in row],
                "statistics": {
                    "input_tokens": [g.input_tokens for g in row],
                    "output_tokens": [g.output_tokens for g in row],
                },
                "token_logprobs": [g.token_logprobs for g in row],
            }
            for row in generated
        ]
