"""Recipe endpoints become distilabel LLMs: transformers, gguf, vllm, openai, inference-endpoints.

Why here: a recipe names a backend and our own decoding parameters; distilabel's LLM
classes each spell those parameters differently, and some need care the recipe should
not have to know about (a GGUF must be converted before transformers loads it fast; the
CUDA device must be chosen in the step's worker process, not in the parent; API keys are
read from the environment only when the LLM is built).

Concurrency for API backends: distilabel 1.5.3's ``AsyncLLM.generate`` runs a whole input
batch with one ``asyncio.gather`` over ``agenerate`` calls (``AsyncLLM._agenerate``), so
every row of a batch is in flight at once, and the OpenAI and Inference Endpoints classes
offer no limit (only ``MistralLLM`` has ``max_concurrent_requests``). The ``Bounded*``
subclasses below replace ``_agenerate`` with the same gather behind an
``asyncio.Semaphore(max_concurrency)``; ``agenerate`` and its signature are untouched, so
distilabel's check of generation parameters still works. The bound holds per LLM instance,
that is per step replica; batches of one step run one after another.

Why one module of this size: it is the one map from a recipe endpoint to a distilabel LLM;
each backend's class is a thin subclass of distilabel's, and splitting them apart would
scatter the rules (seeds, schema dialects, per-row failures) that must read the same for
every backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import openai
from distilabel.models.llms import InferenceEndpointsLLM, OpenAILLM, TransformersLLM, vLLM
from distilabel.models.llms.base import LLM, merge_responses
from distilabel.models.llms.utils import prepare_output
from pydantic import Field, PrivateAttr

from prefdelta.builders.judge.constrained import row_seed
from prefdelta.builders.judge.structured import (
    TOP_LOGPROBS,
    ResponseFormatDialect,
    chat_choice_tokens,
    digit_tokens,
    rejects_field,
    response_format,
    vllm_output_tokens,
    vllm_structured_outputs,
)
from prefdelta.errors import PrefdeltaError
from prefdelta.local_models import gguf_to_pretrained
from prefdelta.recipe import (
    Backend,
    GenerationParams,
    ModelEndpoint,
    RecipeError,
    locate_model_file,
    request_timeout_s,
    resolve_path,
    resolve_secret,
)

# OpenAI-compatible servers without auth (a local vLLM, TGI) still need a non-empty key.
NO_AUTH_KEY = "EMPTY"


class BackendUnavailableError(PrefdeltaError, RuntimeError):
    """A backend whose optional package is not installed; the message says what to install."""


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
    Callers that name their rows pass ``seeds`` instead (:func:`takes_row_seeds`): each
    sampled row then draws from its own stream, whatever shares its batch or its model.
    """

    per_row_seeds: ClassVar[bool] = True
    batch_size: int = Field(8, gt=0)
    cpu_threads: int | None = Field(None, gt=0)
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    logprobs: bool = False

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
            self._grammars.get(self.json_schema)  # a schema xgrammar rejects fails at load

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
        grammar = None if self.json_schema is None else self._grammars.get(self.json_schema)
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


def takes_row_seeds(llm: LLM) -> bool:
    """Whether ``llm``'s ``generate_outputs`` takes ``seeds``, one per input, that make each
    row's sample its own (the LLMs built here do, except vLLM; others may not)."""
    return bool(getattr(llm, "per_row_seeds", False))


class NotJSONResponse(ValueError):
    """A request answered 200 whose body is not JSON (a proxy's page, a misrouted URL)."""

    def __init__(self, body: str) -> None:
        shown = " ".join(body.split())[:80]
        super().__init__(f"the server answered 200 with a body that is not JSON: {shown!r}")


def describe_error(exc: BaseException) -> str:
    """One line for a failed request: the HTTP status and the server's message, if any."""
    if isinstance(exc, NotJSONResponse):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):  # a JSON content type over a body that is not
        return str(NotJSONResponse(exc.doc))
    status = getattr(exc, "status_code", None)  # openai's errors
    if status is None:  # huggingface_hub's and httpx's carry the response
        status = getattr(getattr(exc, "response", None), "status_code", None)
    message = " ".join(str(getattr(exc, "message", None) or exc).split())[:300]
    return f"HTTP {status}: {message}" if status else f"{type(exc).__name__}: {message}"


class _BoundedConcurrency:
    """Replaces ``AsyncLLM._agenerate``: the same gather, at most ``max_concurrency`` in
    flight, and a request that still fails after the client's retries fails only its own
    row (its outputs are None, with the reason under ``errors``), never the whole batch.
    ``seeds`` (one per input) go out as each request's ``seed``, which servers that sample
    reproducibly (OpenAI's, llama.cpp's, TGI) honour per request."""

    per_row_seeds: ClassVar[bool] = True
    max_concurrency: int
    _num_generations_param_supported: bool

    async def _agenerate(
        self,
        inputs: list[Any],
        num_generations: int = 1,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def one(input: Any, **call_kwargs: Any) -> Any:
            async with semaphore:
                try:
                    return await self.agenerate(input=input, **call_kwargs)  # type: ignore[attr-defined]
                except Exception as exc:  # after the client's own retries: this row only
                    n = call_kwargs.get("num_generations", 1)
                    error = describe_error(exc)
                    self._logger.warning(f"request failed: {error}")  # type: ignore[attr-defined]
                    return {
                        "generations": [None] * n,
                        "statistics": {"input_tokens": [0] * n, "output_tokens": [0] * n},
                        "errors": [error] * n,
                    }

        def seed(i: int, k: int = 0) -> dict[str, Any]:
            return {} if seeds is None else {"seed": row_seed(str(seeds[i]), k) >> 32}

        if self._num_generations_param_supported:
            calls = [
                one(x, num_generations=num_generations, **kwargs, **seed(i))
                for i, x in enumerate(inputs)
            ]
            return _same_keys(list(await asyncio.gather(*calls)))
        calls = [
            one(x, **kwargs, **seed(i, k))
            for i, x in enumerate(inputs)
            for k in range(num_generations)
        ]
        return merge_responses(_same_keys(list(await asyncio.gather(*calls))), n=num_generations)


def _same_keys(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every output the extra keys any has (failed rows lack ``token_logprobs``, the
    others ``errors``): distilabel's merge reads the first output's keys from all."""
    keys = {k for o in outputs for k in o} - {"generations", "statistics"}
    for output in outputs:
        for key in keys:
            output.setdefault(key, [None] * len(output["generations"]))
    return outputs


class BoundedOpenAILLM(_BoundedConcurrency, OpenAILLM):
    """``OpenAILLM`` with at most ``max_concurrency`` requests in flight (module docstring).

    For the judge, ``json_schema`` is sent as ``response_format`` in ``schema_dialect``
    (``auto``: ``json_schema`` first; a server that refuses it, as llama-cpp-python's does
    with a 500 naming the field, is asked in ``json_object`` from then on, with a logged
    note) and ``logprobs`` asks for the alternatives of each token (dropped, with a note,
    by a server that refuses them). Such outputs carry ``token_logprobs``.
    """

    max_concurrency: int = Field(8, gt=0)
    json_schema: dict[str, Any] | None = None
    schema_dialect: Literal["auto", "json_schema", "json_object"] = "auto"
    logprobs: bool = False

    _dialect: ResponseFormatDialect | None = PrivateAttr(default=None)
    _logprobs_refused: bool = PrivateAttr(default=False)
    _probe: tuple[Any, asyncio.Lock] | None = PrivateAttr(default=None)

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
        if self.json_schema is None and not self.logprobs:
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
        generations, token_logprobs = [], []
        for choice in completion.choices:
            text = choice.message.content or ""  # the call succeeded: no content is empty
            tokens = chat_choice_tokens(choice)
            generations.append(text)
            token_logprobs.append(None if tokens is None else digit_tokens(tokens, text))
        stats = self._get_llm_statistics(completion)
        output = prepare_output(
            generations, input_tokens=stats["input_tokens"], output_tokens=stats["output_tokens"]
        )
        output["token_logprobs"] = token_logprobs  # type: ignore[typeddict-unknown-key]
        return output

    async def _structured_completion(self, request: dict[str, Any]) -> Any:
        """The completion, the schema sent in the dialect this server takes."""
        if self.json_schema is None:
            return await self._send(request, None)
        fixed = self._dialect or (None if self.schema_dialect == "auto" else self.schema_dialect)
        if fixed is not None:
            return await self._send(request, fixed)  # type: ignore[arg-type]
        async with self._probe_lock():  # the first request finds the dialect; others wait
            if self._dialect is not None:
                return await self._send(request, self._dialect)
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


def _parsed(completion: Any) -> Any:
    """The completion; openai's client returns the body's text when it is not JSON."""
    if isinstance(completion, str):
        raise NotJSONResponse(completion)
    return completion


class BoundedInferenceEndpointsLLM(_BoundedConcurrency, InferenceEndpointsLLM):
    """``InferenceEndpointsLLM`` with at most ``max_concurrency`` requests in flight, each
    waiting at most ``request_timeout`` seconds.

    Every request goes to TGI's chat route here, not through distilabel's ``agenerate``,
    which turns any failed request into an empty output and drops its reason: a failure
    then fails its own row with the reason (:class:`_BoundedConcurrency`). For the judge,
    ``json_schema`` goes to TGI's grammar (``response_format`` of type ``json``) and
    ``logprobs`` asks for each token's alternatives; such outputs carry ``token_logprobs``.
    """

    max_concurrency: int = Field(8, gt=0)
    request_timeout: float | None = Field(None, gt=0)
    json_schema: dict[str, Any] | None = None
    logprobs: bool = False

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
        )  # a failure fails this row only (see _BoundedConcurrency), with its reason
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


class StructuredvLLM(vLLM):
    """distilabel's ``vLLM`` with the judge's schema (``StructuredOutputsParams``) and token
    log-probs; such outputs carry ``token_logprobs``. Importing distilabel's class needs no
    vLLM; using it does.

    ``generate`` builds vLLM's ``SamplingParams`` itself: distilabel 1.5.3's always passes
    ``logits_processors=``, a field vLLM 0.33 (the release the pins resolve to) no longer
    has, so its ``generate`` fails on the first batch. Everything else (the engine, the
    chat template, token counts, log-probs) stays distilabel's.
    """

    json_schema: dict[str, Any] | None = None
    logprobs: bool = False

    _tokens: list[Any] = PrivateAttr(default_factory=list)

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


def generation_kwargs(backend: Backend, generation: GenerationParams) -> dict[str, Any]:
    """Our decoding parameters in the names each distilabel LLM's ``generate`` takes.

    Every distilabel LLM calls the budget ``max_new_tokens`` (OpenAILLM sends it as
    ``max_tokens``). Temperature 0 means greedy: transformers needs ``do_sample=False``
    (and neutral temperature/top_p, which it would otherwise warn about); vLLM and OpenAI
    take temperature 0 as greedy; TGI's chat route turns temperature 0 into greedy and its
    text route reads ``do_sample``. transformers gets ``repetition_penalty=1.0`` and
    ``top_k=0`` so it decodes like the other backends (distilabel's defaults are 1.1 and
    0). TGI rejects ``top_p=1.0``, so 1.0 is sent there as "not set".
    """
    t, p, n = generation.temperature, generation.top_p, generation.max_new_tokens
    if backend in ("transformers", "gguf"):
        sample = t > 0
        return {
            "max_new_tokens": n,
            "do_sample": sample,
            "temperature": t if sample else 1.0,
            "top_p": p if sample else 1.0,
            "top_k": 0,
            "repetition_penalty": 1.0,
        }
    if backend in ("vllm", "openai"):
        return {"max_new_tokens": n, "temperature": t, "top_p": p}
    if backend == "inference-endpoints":
        kwargs: dict[str, Any] = {"max_new_tokens": n, "temperature": t, "do_sample": t > 0}
        if p < 1.0:
            kwargs["top_p"] = p
        return kwargs
    raise ValueError(f"unknown backend {backend!r}")


def make_llm(
    endpoint: ModelEndpoint,
    generation: GenerationParams,
    base_dir: Path,
    *,
    cpu_threads: int | None = None,
    json_schema: dict[str, Any] | None = None,
    logprobs: bool = False,
    schema_dialect: Literal["auto", "json_schema", "json_object"] = "auto",
) -> LLM:
    """The distilabel LLM for one generator or the judge, not yet loaded.

    Local paths in ``endpoint.model`` resolve against ``base_dir`` (the recipe's folder); a
    name that is not an existing path is taken as a Hub id. API keys: the recipe's
    ``${ENV}`` reference, resolved now; without one, a server at ``base_url`` is called
    without auth, api.openai.com needs ``OPENAI_API_KEY``, and Inference Endpoints get
    ``HF_TOKEN`` when set (what distilabel would send). A GGUF file is converted here,
    once, in the parent process (cached; see :func:`gguf_to_pretrained`), so step replicas
    only load the converted folder. ``cpu_threads`` (local backends on CPU): torch threads
    per step process; pass ``cores // local steps running at once`` when several run side
    by side (default: torch's own choice, all cores). ``json_schema``: every answer is
    decoded under it, by each backend's own means; ``logprobs``: outputs carry the
    alternatives of each digit token (``token_logprobs``); ``schema_dialect``: how an
    OpenAI-compatible server is sent the schema.
    """
    kwargs = generation_kwargs(endpoint.backend, generation)
    dtype = endpoint.dtype
    if endpoint.backend in ("transformers", "gguf"):
        # Imported once here, in the parent: every step process distilabel forks inherits
        # it instead of importing torch and the pipelines again (~5 s each on 2 cores).
        # Importing starts no torch thread pool, so the forked steps stay safe (run_build).
        import transformers.pipelines  # noqa: F401

        return LocalTransformersLLM(
            model=local_model_path(endpoint, base_dir),
            torch_dtype=dtype,
            batch_size=endpoint.batch_size,
            cpu_threads=cpu_threads,
            seed=sampling_seed(endpoint, generation),
            generation_kwargs=kwargs,
            json_schema=json_schema,
            logprobs=logprobs,
        )
    if endpoint.backend == "vllm":
        if not _installed("vllm"):
            raise BackendUnavailableError(
                f"backend 'vllm' for {endpoint.model!r} needs vLLM, which is not installed: "
                "pip install vllm (on a CUDA machine)"
            )
        return StructuredvLLM(
            model=_local_or_hub(endpoint.model, base_dir),
            dtype=dtype,
            extra_kwargs={"tensor_parallel_size": endpoint.tensor_parallel_size},
            generation_kwargs=kwargs,
            json_schema=json_schema,
            logprobs=logprobs,
        )
    if endpoint.backend == "openai":
        key = _api_key(endpoint)
        if key is None:
            key = NO_AUTH_KEY if endpoint.base_url else _api_key_from("${OPENAI_API_KEY}", endpoint)
        extra: dict[str, Any] = {"base_url": endpoint.base_url} if endpoint.base_url else {}
        return BoundedOpenAILLM(
            model=endpoint.model,
            api_key=key,
            max_retries=endpoint.request_retries,
            timeout=request_timeout_s(endpoint, generation),
            max_concurrency=endpoint.concurrency,
            generation_kwargs=kwargs,
            json_schema=json_schema,
            schema_dialect=schema_dialect,
            logprobs=logprobs,
            **extra,
        )
    if endpoint.backend == "inference-endpoints":
        # base_url= only: model_id= is broken in distilabel (its issue #1140)
        key = _api_key(endpoint) or os.environ.get("HF_TOKEN") or NO_AUTH_KEY
        return BoundedInferenceEndpointsLLM(
            base_url=endpoint.base_url,
            model_display_name=endpoint.model,
            api_key=key,
            max_concurrency=endpoint.concurrency,
            request_timeout=request_timeout_s(endpoint, generation),
            generation_kwargs=kwargs,
            json_schema=json_schema,
            logprobs=logprobs,
        )
    raise ValueError(f"unknown backend {endpoint.backend!r}")


def sampling_seed(endpoint: ModelEndpoint, generation: GenerationParams) -> int:
    """Reproducible per configuration, different between differently configured models.

    ``endpoint`` is the whole generator config (prompt template included), so two
    generators that differ in anything sample differently.
    """
    blob = json.dumps(
        [endpoint.model_dump(mode="json"), generation.model_dump(mode="json")], sort_keys=True
    )
    return int(hashlib.sha256(blob.encode()).hexdigest()[:8], 16)


def local_model_path(endpoint: ModelEndpoint, base_dir: Path) -> str:
    """What transformers loads for a local backend: a GGUF's converted folder (converted
    once, cached), a folder relative to the recipe, or else a Hub id."""
    if endpoint.backend == "gguf":
        return str(gguf_to_pretrained(locate_model_file(endpoint.model, base_dir)))
    return _local_or_hub(endpoint.model, base_dir)


def _local_or_hub(model: str, base_dir: Path) -> str:
    path = resolve_path(model, base_dir)
    return str(path) if path.exists() else model


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _api_key(endpoint: ModelEndpoint) -> str | None:
    return _api_key_from(endpoint.api_key, endpoint) if endpoint.api_key else None


def _api_key_from(reference: str, endpoint: ModelEndpoint) -> str:
    """The secret behind ``reference``, or a one-line error naming the model that needs it."""
    try:
        value = resolve_secret(reference)
    except RecipeError:
        name = reference[2:-1]
        raise RecipeError(
            [
                f"{endpoint.backend} model {endpoint.model!r}: api_key: environment variable "
                f"{name} is not set"
            ]
        ) from None
    assert value is not None
    return value
