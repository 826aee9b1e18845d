"""The openai backend: any OpenAI-compatible chat server (OpenAI's, vLLM's, llama.cpp's,
TGI's), with the judge's schema sent in the JSON-schema dialect the server takes."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import openai
from distilabel.models.llms import OpenAILLM
from distilabel.models.llms.utils import prepare_output
from pydantic import Field, PrivateAttr

from prefdelta.builders.judge.structured import (
    TOP_LOGPROBS,
    ResponseFormatDialect,
    chat_choice_tokens,
    digit_tokens,
    rejects_field,
    response_format,
)
from prefdelta.builders.judge.thinking import answer_logprobs, message_reasoning
from prefdelta.builders.llms.common import BoundedConcurrency, NotJSONResponse

__all__ = ["BoundedOpenAILLM"]


class BoundedOpenAILLM(BoundedConcurrency, OpenAILLM):
    """``OpenAILLM`` with at most ``max_concurrency`` requests in flight
    (:mod:`prefdelta.builders.llms.common`).

    For the judge, ``json_schema`` is sent as ``response_format`` in ``schema_dialect``
    (``auto``: ``json_schema`` first; a server that refuses it, as llama-cpp-python's does
    with a 500 naming the field, is asked in ``json_object`` from then on, with a logged
    note) and ``logprobs`` asks for the alternatives of each token (dropped, with a note,
    by a server that refuses them). Such outputs carry ``token_logprobs``. ``reasoning`` (a
    reasoning judge): the message's ``reasoning_content`` (or ``reasoning``) field is kept,
    as the output's ``reasoning``, beside the constrained answer.
    """

    max_concurrency: int = Field(8, gt=0)
    json_schema: dict[str, Any] | None = None
    schema_dialect: Literal["auto", "json_schema", "json_object"] = "auto"
    logprobs: bool = False
    reasoning: bool = False

    _dialect: ResponseFormatDialect | None = PrivateAttr(default=None)
    _logprobs_refused: bool = PrivateAttr(default=False)
    _probe: tuple[Any, asyncio.Lock] | None = PrivateAttr(default=None)
    _bound: tuple[Any, asyncio.Semaphore] | None = PrivateAttr(default=None)

    async def agenerate(  # type: ignore[override]
        self,
        input: Any,
        num_generations: int = 1,
        max_new_tokens: int = 128,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        echo: bool = False,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: str | list[str] | None = None,
        response_format: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> Any:
        if seed is not None:  # distilabel's request has no seed field; the body takes it
            extra_body = {**(extra_body or {}), "seed": seed}
        if self.json_schema is None and not self.logprobs and not self.reasoning:
            return await super().agenerate(
                input=input,
                num_generations=num_generations,
                max_new_tokens=max_new_tokens,
                logprobs=logprobs,
                top_logprobs=top_logprobs,
                echo=echo,
                frequency_penalty=frequency_penalty,
                presence_penalty=presence_penalty,
                temperature=temperature,
                top_p=top_p,
                stop=stop,
                response_format=response_format,
                extra_body=extra_body,
            )
        request = {
            "messages": input,
            "model": self.model,
            "max_tokens": max_new_tokens,
            "n": num_generations,
            "frequency_penalty": frequency_penalty,
            "presence_penalty": presence_penalty,
            "temperature": temperature,
            "top_p": top_p,
            "stop": stop,
            "extra_body": extra_body,
        }
        completion = await self._structured_completion(request)
        generations, token_logprobs, reasoning = [], [], []
        for choice in completion.choices:
            text = choice.message.content or ""  # the call succeeded: no content is empty
            tokens = chat_choice_tokens(choice)
            generations.append(text)
            token_logprobs.append(None if tokens is None else _answer_digit_tokens(tokens, text))
            reasoning.append(message_reasoning(choice.message) if self.reasoning else None)
        stats = self._get_llm_statistics(completion)
        output = prepare_output(
            generations, input_tokens=stats["input_tokens"], output_tokens=stats["output_tokens"]
        )
        output["token_logprobs"] = token_logprobs  # type: ignore[typeddict-unknown-key]
        if self.reasoning:
            output["reasoning"] = reasoning  # type: ignore[typeddict-unknown-key]
        return output

    async def _structured_completion(self, request: dict[str, Any]) -> Any:
        """The completion, the schema sent in the dialect this server takes."""
        if self.json_schema is None:
            return await self._send(request, None)
        fixed = self._dialect or (None if self.schema_dialect == "auto" else self.schema_dialect)
        if fixed is not None:
            return await self._send(request, fixed)  # type: ignore[arg-type]
        async with self._probe_lock():  # the first request finds the dialect; others wait
            found = self._dialect
            if found is None:
                return await self._find_dialect(request)
        return await self._send(request, found)  # outside the lock: in parallel

    async def _find_dialect(self, request: dict[str, Any]) -> Any:
        """Send ``request`` with the schema as ``json_schema``; a server that refuses it
        is asked in ``json_object`` from then on."""
        try:
            completion = await self._send(request, "json_schema", retries=False)
        except openai.APIError as exc:
            if not (rejects_field(exc, "response_format") or rejects_field(exc, "json_schema")):
                return await self._send(request, "json_schema")  # an ordinary failure
            self._logger.warning(  # type: ignore[attr-defined]
                f"{self.base_url} refused response_format json_schema "
                f"({getattr(exc, 'status_code', '?')}); sending the judge's schema as "
                "json_object from now on (set judge.response_format to choose)"
            )
            self._dialect = "json_object"
            return await self._send(request, "json_object")
        self._dialect = "json_schema"
        return completion

    async def _send(
        self, request: dict[str, Any], dialect: ResponseFormatDialect | None, retries: bool = True
    ) -> Any:
        body = dict(request)
        if dialect is not None and self.json_schema is not None:
            body["response_format"] = response_format(dialect, self.json_schema)
        if self.logprobs and not self._logprobs_refused:
            body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        client = self._aclient if retries else self._aclient.with_options(max_retries=0)  # type: ignore[union-attr]
        try:
            return _parsed(await client.chat.completions.create(**body))
        except openai.APIError as exc:
            if "logprobs" not in body or not rejects_field(exc, "logprobs"):
                raise
        self._logprobs_refused = True
        self._logger.warning(  # type: ignore[attr-defined]
            f"{self.base_url} refused logprobs; its judgments keep the sampled scores"
        )
        return await self._send(request, dialect, retries)

    def _generations_from_openai_completion(self, completion: Any) -> Any:
        """distilabel's reading of a completion, which the client hands over as the body's
        text when that is not JSON: then a :class:`NotJSONResponse`, not an AttributeError."""
        return super()._generations_from_openai_completion(_parsed(completion))

    def _probe_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._probe is None or self._probe[0] is not loop:  # distilabel runs a loop per batch
            self._probe = (loop, asyncio.Lock())
        return self._probe[1]


def _answer_digit_tokens(tokens: list[Any], text: str) -> Any:
    """The answer's digit tokens; a server whose log-probs also cover the reasoning before
    the answer (vLLM's do) has them counted from where the answer starts."""
    joined = "".join(t for t, _, _ in tokens)
    if joined == text or not text or not joined.endswith(text):
        return digit_tokens(tokens, text)
    start = len(joined) - len(text)
    return answer_logprobs(digit_tokens(tokens, joined), start, text)


def _parsed(completion: Any) -> Any:
    """The completion; openai's client returns the body's text when it is not JSON."""
    if isinstance(completion, str):
        raise NotJSONResponse(completion)
    return completion
