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
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distilabel.models.llms import InferenceEndpointsLLM, OpenAILLM, TransformersLLM
from distilabel.models.llms.base import LLM, merge_responses
from pydantic import Field, PrivateAttr

from prefdelta.local_models import gguf_to_pretrained
from prefdelta.recipe import (
    Backend,
    GenerationParams,
    ModelEndpoint,
    RecipeError,
    locate_model_file,
    resolve_path,
    resolve_secret,
)

# Retries back off exponentially and honour Retry-After (openai client); the timeout is per
# request and must cover a long reasoning trace.
API_MAX_RETRIES = 6
API_TIMEOUT_S = 600
# OpenAI-compatible servers without auth (a local vLLM, TGI) still need a non-empty key.
NO_AUTH_KEY = "EMPTY"


class BackendUnavailableError(RuntimeError):
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
    forked from one parent, every step would otherwise sample from the same random stream,
    and two generators' traces would share their noise. When one loaded model serves
    several generators, :meth:`random_stream` gives each its own stream instead.
    """

    batch_size: int = Field(8, gt=0)
    cpu_threads: int | None = Field(None, gt=0)
    seed: int | None = None

    _streams: dict[int, tuple[Any, Any]] = PrivateAttr(default_factory=dict)

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

    @contextmanager
    def random_stream(self, seed: int) -> Iterator[None]:
        """Sample inside from the stream named by ``seed``: seeded on first use, then resumed.

        Calls under one seed draw the same numbers whatever other streams ran in between,
        as if the model were loaded for that seed alone; the caller's stream is restored.
        """
        import torch

        def state() -> tuple[Any, Any]:
            cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
            return torch.get_rng_state(), cuda

        def restore(saved: tuple[Any, Any]) -> None:
            torch.set_rng_state(saved[0])
            if saved[1] is not None:
                torch.cuda.set_rng_state_all(saved[1])

        outer = state()
        if seed in self._streams:
            restore(self._streams[seed])
        else:
            torch.manual_seed(seed)
        try:
            yield
        finally:
            self._streams[seed] = state()
            restore(outer)


class _BoundedConcurrency:
    """Replaces ``AsyncLLM._agenerate``: the same gather, at most ``max_concurrency`` in flight."""

    max_concurrency: int
    _num_generations_param_supported: bool

    async def _agenerate(
        self, inputs: list[Any], num_generations: int = 1, **kwargs: Any
    ) -> list[Any]:
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def one(input: Any, **call_kwargs: Any) -> Any:
            async with semaphore:
                return await self.agenerate(input=input, **call_kwargs)  # type: ignore[attr-defined]

        if self._num_generations_param_supported:
            calls = [one(i, num_generations=num_generations, **kwargs) for i in inputs]
            return list(await asyncio.gather(*calls))
        calls = [one(i, **kwargs) for i in inputs for _ in range(num_generations)]
        return merge_responses(list(await asyncio.gather(*calls)), n=num_generations)


class BoundedOpenAILLM(_BoundedConcurrency, OpenAILLM):
    """``OpenAILLM`` with at most ``max_concurrency`` requests in flight (module docstring)."""

    max_concurrency: int = Field(8, gt=0)


class BoundedInferenceEndpointsLLM(_BoundedConcurrency, InferenceEndpointsLLM):
    """``InferenceEndpointsLLM`` with at most ``max_concurrency`` requests in flight."""

    max_concurrency: int = Field(8, gt=0)


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
    by side (default: torch's own choice, all cores).
    """
    kwargs = generation_kwargs(endpoint.backend, generation)
    dtype = endpoint.dtype
    if endpoint.backend in ("transformers", "gguf"):
        # Imported once here, in the parent: every step process distilabel forks inherits
        # it instead of importing torch and the pipelines again (~5 s each on 2 cores).
        # Importing starts no torch thread pool, so the forked steps stay safe (run_build).
        import transformers.pipelines  # noqa: F401

        if endpoint.backend == "gguf":
            model = str(gguf_to_pretrained(locate_model_file(endpoint.model, base_dir)))
        else:
            model = _local_or_hub(endpoint.model, base_dir)
        return LocalTransformersLLM(
            model=model,
            torch_dtype=dtype,
            batch_size=endpoint.batch_size,
            cpu_threads=cpu_threads,
            seed=sampling_seed(endpoint, generation),
            generation_kwargs=kwargs,
        )
    if endpoint.backend == "vllm":
        if not _installed("vllm"):
            raise BackendUnavailableError(
                f"backend 'vllm' for {endpoint.model!r} needs vLLM, which is not installed: "
                "pip install vllm (on a CUDA machine)"
            )
        from distilabel.models.llms import vLLM

        return vLLM(
            model=_local_or_hub(endpoint.model, base_dir),
            dtype=dtype,
            extra_kwargs={"tensor_parallel_size": endpoint.tensor_parallel_size},
            generation_kwargs=kwargs,
        )
    if endpoint.backend == "openai":
        key = _api_key(endpoint)
        if key is None:
            key = NO_AUTH_KEY if endpoint.base_url else _api_key_from("${OPENAI_API_KEY}", endpoint)
        extra: dict[str, Any] = {"base_url": endpoint.base_url} if endpoint.base_url else {}
        return BoundedOpenAILLM(
            model=endpoint.model,
            api_key=key,
            max_retries=API_MAX_RETRIES,
            timeout=API_TIMEOUT_S,
            max_concurrency=endpoint.concurrency,
            generation_kwargs=kwargs,
            **extra,
        )
    if endpoint.backend == "inference-endpoints":
        # base_url= only: model_id= is broken in distilabel (#1140, DESIGN.md)
        key = _api_key(endpoint) or os.environ.get("HF_TOKEN") or NO_AUTH_KEY
        return BoundedInferenceEndpointsLLM(
            base_url=endpoint.base_url,
            model_display_name=endpoint.model,
            api_key=key,
            max_concurrency=endpoint.concurrency,
            generation_kwargs=kwargs,
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
