"""The openai backend: any OpenAI-compatible chat server (OpenAI's, vLLM's, llama.cpp's,
TGI's), with the judge's schema sent in the JSON-schema dialect the server takes.

Requests go out through :class:`.chat_http.ChatClient` (aiohttp, the answer read as a
dict), not the openai SDK's client, whose CPU per request alone passed what a trace may
cost at paper scale; the SDK's retry policy is kept there."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from distilabel.models.base_clients.openai import OpenAIBaseClient
from distilabel.models.llms import OpenAILLM
from distilabel.models.llms.base import AsyncLLM
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
from prefdelta.builders.llms.chat_http import ChatClient, ChatHTTPError
from prefdelta.builders.llms.common import BoundedConcurrency

__all__ = ["BoundedOpenAILLM"]


class BoundedOpenAILLM(BoundedConcurrency, OpenAILLM):
    """``OpenAILLM`` with at most ``max_concurrency`` requests in flight
    (:mod:`prefdelta.builders.llms.common`), each posted to ``{base_url}/chat/completions``
    by a :class:`~.chat_http.ChatClient` with ``max_retries`` retries and ``timeout``.

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
    _http: ChatClient | None = PrivateAttr(default=None)

    def load(self) -> None:
        """distilabel's load without its SDK clients (importing ``openai`` alone cost a
        step process over a second of CPU): its check of the API key, then the client the
        chat requests go through. distilabel's own ``structured_output`` (instructor),
        which prefdelta never sets, needs the SDK's client: then its load as is."""
        if self.structured_output:
            super().load()
        else:
            AsyncLLM.load(self)
        if self.api_key is None:  # distilabel's check, in its words
            raise ValueError(
                f"To use `{type(self).__name__}` an API key must be provided via `api_key`"
                " attribute or runtime parameter, or set the environment variable"
                f" `{self._api_key_env_var}`."
            )
        self._http = ChatClient(
            str(self.base_url),
            api_key=self.api_key.get_secret_value(),
            timeout_s=float(self.timeout),
            max_retries=int(self.max_retries),
            headers=self.default_headers,
        )

    def unload(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        super().unload()

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
        if not isinstance(input, list):  # a text prompt, a structured-output tuple
            if self._aclient is None:  # distilabel's own path, through the SDK's client
                OpenAIBaseClient.load(self)
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
        request: dict[str, Any] = {
            "messages": input,
            "model": self.model,
            "max_tokens": max_new_tokens,
            "n": num_generations,
            "frequency_penalty": frequency_penalty,
            "presence_penalty": presence_penalty,
            "temperature": temperature,
            "top_p": top_p,
        }
        if stop is not None and not _has_parts(input):  # distilabel drops it for parts
            request["stop"] = stop
        if logprobs:
            request["logprobs"] = True
            if top_logprobs is not None:
                request["top_logprobs"] = top_logprobs
        if response_format is not None:
            request["response_format"] = response_format
        request |= extra_body or {}
        completion = await self._structured_completion(request)
        choices = _choices(completion)
        if self.json_schema is None and not self.logprobs and not self.reasoning:
            return self._plain_output(choices, completion)
        generations, token_logprobs, reasoning = [], [], []
        for choice in choices:
            message = choice.get("message") or {}
            text = message.get("content") or ""  # the call succeeded: no content is empty
            tokens = chat_choice_tokens(choice)
            generations.append(text)
            token_logprobs.append(None if tokens is None else _answer_digit_tokens(tokens, text))
            reasoning.append(message_reasoning(message) if self.reasoning else None)
        output = prepare_output(generations, **_usage(completion))
        output["token_logprobs"] = token_logprobs  # type: ignore[typeddict-unknown-key]
        if self.reasoning:
            output["reasoning"] = reasoning  # type: ignore[typeddict-unknown-key]
        return output

    def _plain_output(self, choices: list[dict[str, Any]], completion: dict[str, Any]) -> Any:
        """A generator's output as distilabel reads a completion: no content is None."""
        generations = []
        for choice in choices:
            content = (choice.get("message") or {}).get("content")
            if content is None:
                self._logger.warning(  # type: ignore[attr-defined]
                    f"Received no response from {self.base_url} (model: '{self.model}')."
                    f" Finish reason was: {choice.get('finish_reason')}"
                )
            generations.append(content)
        return prepare_output(generations, **_usage(completion))

    async def _structured_completion(self, request: dict[str, Any]) -> dict[str, Any]:
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

    async def _find_dialect(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send ``request`` with the schema as ``json_schema``; a server that refuses it
        is asked in ``json_object`` from then on."""
        try:
            completion = await self._send(request, "json_schema", retries=False)
        except ChatHTTPError as exc:
            if not (rejects_field(exc, "response_format") or rejects_field(exc, "json_schema")):
                return await self._send(request, "json_schema")  # an ordinary failure
            self._logger.warning(  # type: ignore[attr-defined]
                f"{self.base_url} refused response_format json_schema "
                f"({exc.status_code or '?'}); sending the judge's schema as "
                "json_object from now on (set judge.response_format to choose)"
            )
            self._dialect = "json_object"
            return await self._send(request, "json_object")
        self._dialect = "json_schema"
        return completion

    async def _send(
        self, request: dict[str, Any], dialect: ResponseFormatDialect | None, retries: bool = True
    ) -> dict[str, Any]:
        body = dict(request)
        if dialect is not None and self.json_schema is not None:
            body["response_format"] = response_format(dialect, self.json_schema)
        if self.logprobs and not self._logprobs_refused:
            body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        if self._http is None:
            raise RuntimeError(f"{type(self).__name__} is not loaded: call load() first")
        try:
            return await self._http.post("chat/completions", body, retries=retries)
        except ChatHTTPError as exc:
            if "logprobs" not in body or not rejects_field(exc, "logprobs"):
                raise
        self._logprobs_refused = True
        self._logger.warning(  # type: ignore[attr-defined]
            f"{self.base_url} refused logprobs; its judgments keep the sampled scores"
        )
        return await self._send(request, dialect, retries)

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


def _has_parts(messages: list[Any]) -> bool:
    """Whether the first user message is a list of parts (text, images)."""
    user = next((m for m in messages if m.get("role") == "user"), None)
    return user is not None and isinstance(user.get("content"), list)


def _choices(completion: dict[str, Any]) -> list[dict[str, Any]]:
    choices = completion.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        shown = " ".join(str(completion).split())[:80]
        raise ValueError(f"the server's answer has no list of choices: {shown!r}")
    return choices


def _usage(completion: dict[str, Any]) -> dict[str, list[int]]:
    """distilabel's statistics: the usage's prompt and completion tokens (0 without)."""
    usage = completion.get("usage") or {}
    return {
        "input_tokens": [int(usage.get("prompt_tokens") or 0)],
        "output_tokens": [int(usage.get("completion_tokens") or 0)],
    }
