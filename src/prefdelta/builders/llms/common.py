"""What the API backends share: a bound on requests in flight, and failures per row.

Concurrency for API backends: distilabel 1.5.3's ``AsyncLLM.generate`` runs a whole input
batch with one ``asyncio.gather`` over ``agenerate`` calls (``AsyncLLM._agenerate``), so
every row of a batch is in flight at once, and the OpenAI and Inference Endpoints classes
offer no limit (only ``MistralLLM`` has ``max_concurrent_requests``). The ``Bounded*``
classes (:mod:`.openai`, :mod:`.inference_endpoints`) mix in :class:`BoundedConcurrency`,
which replaces ``_agenerate`` with the same gather behind an
``asyncio.Semaphore(max_concurrency)``; ``agenerate`` and its signature are untouched, so
distilabel's check of generation parameters still works. The bound holds per LLM instance,
that is per step replica; batches of one step run one after another.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from distilabel.models.llms.base import merge_responses

from prefdelta.builders.keys import row_seed

__all__ = ["BoundedConcurrency", "NotJSONResponse", "describe_error"]


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


class BoundedConcurrency:
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
