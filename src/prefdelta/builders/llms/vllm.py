"""The vllm backend: distilabel's ``vLLM``, with vLLM 0.33's sampling parameters built here."""

from __future__ import annotations

from typing import Any

from distilabel.models.llms import vLLM
from pydantic import PrivateAttr

from prefdelta.builders.judge.structured import (
    TOP_LOGPROBS,
    digit_tokens,
    vllm_output_tokens,
    vllm_structured_outputs,
)
from prefdelta.builders.judge.thinking import THINK_CLOSE, THINK_OPEN
from prefdelta.recipe.reasoning import THINK_TAG_PARSERS

__all__ = ["StructuredvLLM"]


class StructuredvLLM(vLLM):
    """distilabel's ``vLLM`` with the judge's schema (``StructuredOutputsParams``) and token
    log-probs; such outputs carry ``token_logprobs``. Importing distilabel's class needs no
    vLLM; using it does.

    ``generate`` builds vLLM's ``SamplingParams`` itself: distilabel 1.5.3's always passes
    ``logits_processors=``, a field vLLM 0.33 (the release the pins resolve to) no longer
    has, so its ``generate`` fails on the first batch. Everything else (the engine, the
    chat template, token counts, log-probs) stays distilabel's.

    A reasoning judge: ``extra_kwargs["reasoning_parser"]`` goes to ``vllm.LLM``, whose
    structured outputs then start the schema where the parser sees the reasoning end (its
    ``enable_in_reasoning`` stays off). For a parser whose models reason between
    ``<think>`` and ``</think>`` the engine also gets a ``ReasoningConfig`` naming those
    tags, and ``thinking_budget`` goes out as ``thinking_token_budget``, which ends the
    reasoning after that many tokens (vLLM refuses the budget without such a config); for
    others (gpt-oss) only ``max_tokens`` bounds it. The text comes back whole (the offline
    ``LLM`` does not split it): the judge cuts the reasoning off
    (:mod:`prefdelta.builders.judge.thinking`). gpt-oss marks its final answer with special
    tokens, which are then kept in the text.
    """

    json_schema: dict[str, Any] | None = None
    logprobs: bool = False
    thinking_budget: int | None = None

    _tokens: list[Any] = PrivateAttr(default_factory=list)

    def load(self) -> None:
        if self.thinking_budget is not None and self._think_tags:
            from vllm.config import ReasoningConfig

            self.extra_kwargs = {
                **(self.extra_kwargs or {}),
                "reasoning_config": ReasoningConfig(
                    reasoning_parser=self._parser,
                    reasoning_start_str=THINK_OPEN,
                    reasoning_end_str=THINK_CLOSE,
                ),
            }
        super().load()

    @property
    def _parser(self) -> str | None:
        return (self.extra_kwargs or {}).get("reasoning_parser")

    @property
    def _think_tags(self) -> bool:
        return self._parser in THINK_TAG_PARSERS

    def generate(  # type: ignore[override]
        self,
        inputs: list[Any],
        num_generations: int = 1,
        max_new_tokens: int = 128,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repetition_penalty: float = 1.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        min_p: float = 0.0,
        logprobs: int | None = None,
        stop: list[str] | None = None,
        stop_token_ids: list[int] | None = None,
        include_stop_str_in_output: bool = False,
        skip_special_tokens: bool = True,
        logits_processors: Any = None,
        extra_sampling_params: dict[str, Any] | None = None,
        echo: bool = False,
    ) -> list[Any]:
        from distilabel.models.llms.utils import prepare_output
        from vllm import SamplingParams

        if logits_processors:
            raise ValueError(
                "vLLM 0.33 takes no per-request logits_processors; use structured_outputs"
            )
        extra = dict(extra_sampling_params or {})
        if self.json_schema is not None:
            extra["structured_outputs"] = vllm_structured_outputs(self.json_schema)
        if self.thinking_budget is not None and self._think_tags:
            extra["thinking_token_budget"] = self.thinking_budget
        if self.thinking_budget is not None and self._parser == "openai_gptoss":
            skip_special_tokens = False  # its final-channel marker is a special token
        n_logprobs = TOP_LOGPROBS if self.logprobs else logprobs
        params = SamplingParams(
            n=num_generations,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            repetition_penalty=repetition_penalty,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            max_tokens=max_new_tokens,
            prompt_logprobs=n_logprobs if echo else None,
            logprobs=n_logprobs,
            stop=stop,
            stop_token_ids=stop_token_ids,
            include_stop_str_in_output=include_stop_str_in_output,
            skip_special_tokens=skip_special_tokens,
            **extra,
        )
        prompts = [self.prepare_input(i) for i in inputs]
        self._tokens = []
        generations = []
        answered = self._model.generate(prompts=prompts, sampling_params=params, use_tqdm=False)
        for prompt, request in zip(prompts, answered, strict=True):
            prompt_logprobs = (
                self._get_llm_logprobs(request.prompt_logprobs)
                if request.prompt_logprobs is not None
                else []
            )
            texts, statistics, outputs_logprobs = self._process_outputs(
                prompt, request, prompt_logprobs, echo
            )
            generation = prepare_output(
                generations=texts,
                input_tokens=statistics["input_tokens"],
                output_tokens=statistics["output_tokens"],
                logprobs=outputs_logprobs,
            )
            generation["token_logprobs"] = self._tokens[-1]  # type: ignore[typeddict-unknown-key]
            generations.append(generation)
        return generations

    def _process_outputs(
        self, input: str, outputs: Any, prompt_logprobs: Any, echo: bool = False
    ) -> Any:
        self._tokens.append(
            [
                None
                if (tokens := vllm_output_tokens(out)) is None
                else digit_tokens(tokens, out.text)
                for out in outputs.outputs
            ]
        )
        return super()._process_outputs(input, outputs, prompt_logprobs, echo)
