"""The inference-endpoints backend: a Hugging Face Inference Endpoint or any TGI server,
called on its chat route."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from distilabel.models.llms import InferenceEndpointsLLM
from distilabel.models.llms.utils import prepare_output
from pydantic import Field, PrivateAttr

from prefdelta.builders.judge.structured import TOP_LOGPROBS, chat_choice_tokens, digit_tokens
from prefdelta.builders.llms.common import BoundedConcurrency

__all__ = ["BoundedInferenceEndpointsLLM"]


class BoundedInferenceEndpointsLLM(BoundedConcurrency, InferenceEndpointsLLM):
    """``InferenceEndpointsLLM`` with at most ``max_concurrency`` requests in flight, each
    waiting at most ``request_timeout`` seconds.

    Every request goes to TGI's chat route here, not through distilabel's ``agenerate``,
    which turns any failed request into an empty output and drops its reason: a failure
    then fails its own row with the reason
    (:class:`~prefdelta.builders.llms.common.BoundedConcurrency`). For the judge,
    ``json_schema`` goes to TGI's grammar (``response_format`` of type ``json``) and
    ``logprobs`` asks for each token's alternatives; such outputs carry ``token_logprobs``.
    """

    max_concurrency: int = Field(8, gt=0)
    request_timeout: float | None = Field(None, gt=0)
    json_schema: dict[str, Any] | None = None
    logprobs: bool = False

    _bound: tuple[Any, asyncio.Semaphore] | None = PrivateAttr(default=None)

    def load(self) -> None:
        super().load()
        self._aclient.timeout = self.request_timeout  # type: ignore[union-attr]

    async def agenerate(  # type: ignore[override]
        self,
        input: Any,
        max_new_tokens: int = 128,
        frequency_penalty: float | None = None,
        logit_bias: list[float] | None = None,
        logprobs: bool = False,
        presence_penalty: float | None = None,
        seed: int | None = None,
        stop_sequences: list[str] | None = None,
        temperature: float = 1.0,
        tool_choice: dict[str, str] | Literal["auto"] | None = None,
        tool_prompt: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        top_logprobs: int | None = None,
        top_n_tokens: int | None = None,
        top_p: float | None = None,
        do_sample: bool = False,
        repetition_penalty: float | None = None,
        return_full_text: bool = False,
        top_k: int | None = None,
        typical_p: float | None = None,
        watermark: bool = False,
        num_generations: int = 1,
    ) -> Any:
        extra: dict[str, Any] = {}
        if self.json_schema is not None:
            extra["response_format"] = {"type": "json", "value": self.json_schema}
        if self.logprobs:
            extra |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        completion = await self._aclient.chat_completion(  # type: ignore[union-attr]
            messages=input,
            max_tokens=max_new_tokens,
            seed=seed,
            stop=stop_sequences,
            temperature=temperature,
            top_p=top_p,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            **extra,
        )  # a failure fails this row only (see BoundedConcurrency), with its reason
        choice = completion.choices[0]
        text = choice.message.content or ""  # the call succeeded: no content is empty
        tokens, usage = chat_choice_tokens(choice), completion.usage
        output = prepare_output(
            [text],
            input_tokens=[usage.prompt_tokens] if usage else None,
            output_tokens=[usage.completion_tokens] if usage else None,
        )
        output["token_logprobs"] = [  # type: ignore[typeddict-unknown-key]
            None if tokens is None else digit_tokens(tokens, text)
        ]
        return output
