"""Recipe endpoints become distilabel LLMs: one module per backend.

What is where:

- here: :func:`make_llm` (a recipe endpoint to its LLM, not yet loaded),
  :func:`generation_kwargs` (our decoding parameters in each LLM's names),
  :func:`sampling_seed`, :func:`local_model_path`, :func:`takes_row_seeds`;
- :mod:`.transformers`: ``LocalTransformersLLM``, for transformers and gguf (a GGUF is
  converted once to a transformers folder);
- :mod:`.vllm`: ``StructuredvLLM``;
- :mod:`.openai`: ``BoundedOpenAILLM`` (the judge's schema in the dialect a server takes),
  its requests sent by :mod:`.chat_http` (aiohttp, with the openai SDK's retry policy);
- :mod:`.inference_endpoints`: ``BoundedInferenceEndpointsLLM`` (TGI's chat route);
- :mod:`.common`: what the API backends share (a bound on requests in flight, one failed
  request fails its own row).

What kind each backend is (local, API, ...): :data:`prefdelta.backends.TRAITS`.

Why here: a recipe names a backend and our own decoding parameters; distilabel's LLM
classes each spell those parameters differently, and some need care the recipe should
not have to know about (a GGUF must be converted before transformers loads it fast; the
CUDA device must be chosen in the step's worker process, not in the parent; API keys are
read from the environment only when the LLM is built).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Literal

from distilabel.models.llms.base import LLM

from prefdelta.backends import Backend, is_api, is_local
from prefdelta.builders.llms.common import BoundedConcurrency
from prefdelta.builders.llms.inference_endpoints import BoundedInferenceEndpointsLLM
from prefdelta.builders.llms.openai import BoundedOpenAILLM
from prefdelta.builders.llms.transformers import LocalTransformersLLM
from prefdelta.builders.llms.vllm import StructuredvLLM
from prefdelta.errors import PrefdeltaError
from prefdelta.local_models import gguf_to_pretrained
from prefdelta.recipe import (
    GenerationParams,
    ModelEndpoint,
    RecipeError,
    locate_model_file,
    request_timeout_s,
    resolve_path,
    resolve_secret,
)
from prefdelta.recipe.endpoints import GIVEN_FIELDS
from prefdelta.recipe.judge import REASONING_FIELDS
from prefdelta.recipe.reasoning import Reasoning

__all__ = [
    "NO_AUTH_KEY",
    "BackendUnavailableError",
    "generation_kwargs",
    "local_model_path",
    "make_llm",
    "sampling_seed",
    "step_batch_size",
    "streams_rows",
    "takes_row_seeds",
]

# OpenAI-compatible servers without auth (a local vLLM, TGI) still need a non-empty key.
NO_AUTH_KEY = "EMPTY"


class BackendUnavailableError(PrefdeltaError, RuntimeError):
    """A backend whose optional package is not installed; the message says what to install."""


def takes_row_seeds(llm: LLM) -> bool:
    """Whether ``llm``'s ``generate_outputs`` takes ``seeds``, one per input, that make each
    row's sample its own (the LLMs built here do, except vLLM; others may not)."""
    return bool(getattr(llm, "per_row_seeds", False))


# Rows per input batch of an API step, per request slot. Its rows run on their own
# (:func:`.common.run_rows`), so the slots only drain when a batch runs out: batches far
# larger than the concurrency keep them full (a batch of 64 rows at concurrency 64, with
# long-tailed latencies, used 13% of the slots). Rows carry prompts or keys, not traces.
ROWS_PER_SLOT = 256


def streams_rows(llm: LLM) -> bool:
    """Whether ``llm`` asks row by row under one bound (:func:`.common.run_rows`), so a
    step commits each row as it finishes instead of waiting for its batch."""
    return isinstance(llm, BoundedConcurrency)


def step_batch_size(endpoint: ModelEndpoint) -> int:
    """Rows per input batch of the step that calls ``endpoint``: ``batch_size`` for local
    models and vLLM (one batched call each), ``concurrency * ROWS_PER_SLOT`` or more for
    API backends, whose rows stream through the request slots."""
    if is_api(endpoint.backend):
        return max(endpoint.batch_size, endpoint.concurrency * ROWS_PER_SLOT)
    return endpoint.batch_size


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
    if is_local(backend):
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
    reasoning: Reasoning | None = None,
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
    OpenAI-compatible server is sent the schema. ``reasoning`` (a reasoning judge): its
    budget is added to ``max_new_tokens``, and each backend lets it reason before the
    schema applies (:mod:`prefdelta.builders.judge.thinking`).
    """
    kwargs = generation_kwargs(endpoint.backend, generation)
    timed = generation  # an API request's wait follows the whole budget, reasoning included
    if reasoning is not None:
        kwargs["max_new_tokens"] += reasoning.extra_tokens
        timed = generation.model_copy(update={"max_new_tokens": kwargs["max_new_tokens"]})
    dtype = endpoint.dtype
    if is_local(endpoint.backend):
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
            think_chars=None if reasoning is None else reasoning.budget,
        )
    if endpoint.backend == "vllm":
        if not _installed("vllm"):
            raise BackendUnavailableError(
                f"backend 'vllm' for {endpoint.model!r} needs vLLM, which is not installed: "
                "pip install vllm (on a CUDA machine)"
            )
        engine: dict[str, Any] = {"tensor_parallel_size": endpoint.tensor_parallel_size}
        if reasoning is not None:
            engine["reasoning_parser"] = reasoning.parser
        return StructuredvLLM(
            model=_local_or_hub(endpoint.model, base_dir),
            dtype=dtype,
            extra_kwargs=engine,
            generation_kwargs=kwargs,
            json_schema=json_schema,
            logprobs=logprobs,
            thinking_budget=None if reasoning is None else reasoning.budget,
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
            timeout=request_timeout_s(endpoint, timed),
            max_concurrency=endpoint.concurrency,
            generation_kwargs=kwargs,
            json_schema=json_schema,
            schema_dialect=schema_dialect,
            logprobs=logprobs,
            reasoning=reasoning is not None,
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
            request_timeout=request_timeout_s(endpoint, timed),
            generation_kwargs=kwargs,
            json_schema=json_schema,
            logprobs=logprobs,
        )
    raise ValueError(f"unknown backend {endpoint.backend!r}")


SEED_NEUTRAL_UNSET = (*REASONING_FIELDS, "show_reference", "panel")


def sampling_seed(endpoint: ModelEndpoint, generation: GenerationParams) -> int:
    """Reproducible per configuration, different between differently configured models.

    ``endpoint`` is the whole generator config (prompt template included), so two
    generators that differ in anything sample differently. A dataset generator's columns
    are left out: a generator that samples has none; so is what the judge reads of a trace
    (``judge.reads``), which chooses its input, not how it samples, and where its step runs
    (``resources``).
    """
    # the judge's options added since seeds were first recorded, unset, are left out:
    # adding them changed no seed
    unset = {f for f in SEED_NEUTRAL_UNSET if getattr(endpoint, f, None) is None}
    dumped = endpoint.model_dump(mode="json", exclude={*GIVEN_FIELDS, "reads", "resources"} | unset)
    blob = json.dumps([dumped, generation.model_dump(mode="json")], sort_keys=True)
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
