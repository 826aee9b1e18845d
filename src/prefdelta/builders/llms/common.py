"""What the API backends share: a bound on requests in flight, and failures per row.

Concurrency for API backends: distilabel 1.5.3's ``AsyncLLM.generate`` runs a whole input
batch with one ``asyncio.gather`` over ``agenerate`` calls (``AsyncLLM._agenerate``), so
every row of a batch is in flight at once, and the OpenAI and Inference Endpoints classes
offer no limit (only ``MistralLLM`` has ``max_concurrent_requests``). The ``Bounded*``
classes (:mod:`.openai`, :mod:`.inference_endpoints`) mix in :class:`BoundedConcurrency`,
which replaces ``_agenerate`` with the same gather behind an
``asyncio.Semaphore(max_concurrency)``; ``agenerate`` and its signature are untouched, so
distilabel's check of generation parameters still works. The bound holds per LLM instance,
that is per step replica.

A batch gathered at once waits for its slowest request before the next batch starts; with
long-tailed latencies that left most slots idle. So the API steps take input batches far
larger than the concurrency and run their rows with :func:`run_rows`: each row is asked,
and committed to the store, on its own, while the shared semaphore keeps
``max_concurrency`` requests in flight until the batch runs out.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar

from distilabel.constants import SIGINT_HANDLER_CALLED_ENV_NAME
from distilabel.models.llms.base import merge_responses

from prefdelta.builders.keys import row_seed

__all__ = [
    "BoundedConcurrency",
    "NotJSONResponse",
    "StopCheck",
    "Stopped",
    "describe_error",
    "new_event_loop",
    "run_rows",
    "stopping",
]


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


class Stopped(Exception):
    """The build was interrupted (Ctrl-C) before this row's first request went out."""


def stopping() -> bool:
    """Whether Ctrl-C reached this process: distilabel's step workers catch SIGINT and
    only note it in this environment variable (``distilabel.constants``)."""
    return os.getenv(SIGINT_HANDLER_CALLED_ENV_NAME) is not None


class StopCheck:
    """Whether Ctrl-C reached the build, for a step's rows, which ask it twice each:
    :func:`stopping` every time, and the build's stop request (the file ``stop_request``)
    at most every ``every_s`` seconds, which is how a step on Ray, which the signal never
    reaches, learns of it (a stat per row was 2-3% of an API step's CPU). A Ray step then
    starts rows for up to ``every_s`` after the request; once seen, it stays seen."""

    def __init__(self, stop_request: str, every_s: float = 0.25) -> None:
        self.stop_request = stop_request
        self.every_s = every_s
        self._requested = False
        self._next_look = 0.0

    def __call__(self) -> bool:
        if self._requested or stopping():
            return True
        now = time.monotonic()
        if now >= self._next_look:
            self._requested = os.path.exists(self.stop_request)
            self._next_look = now + self.every_s
        return self._requested


class BoundedConcurrency:
    """Replaces ``AsyncLLM._agenerate``: the same gather, at most ``max_concurrency`` in
    flight, and a request that still fails after the client's retries fails only its own
    row (its outputs are None, with the reason under ``errors``), never the whole batch.
    ``seeds`` (one per input) go out as each request's ``seed``, which servers that sample
    reproducibly (OpenAI's, llama.cpp's, TGI) honour per request.

    The bound is one semaphore per event loop, shared by every call on it: :meth:`ask`
    (one input) and :func:`run_rows` (many rows, each on its own) keep ``max_concurrency``
    requests in flight for as long as rows remain, instead of a batch at a time."""

    per_row_seeds: ClassVar[bool] = True
    max_concurrency: int
    _num_generations_param_supported: bool
    _bound: tuple[Any, asyncio.Semaphore] | None

    async def _agenerate(
        self,
        inputs: list[Any],
        num_generations: int = 1,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        calls = [
            self.ask(x, num_generations, seed=None if seeds is None else seeds[i], **kwargs)
            for i, x in enumerate(inputs)
        ]
        return _same_keys(list(await asyncio.gather(*calls)))

    async def ask(
        self,
        input: Any,
        num_generations: int = 1,
        *,
        seed: int | None = None,
        stop: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The output for one input, as ``_agenerate`` gives it; ``seed`` makes its samples
        reproducible; ``stop``, checked when a slot is free: raise :class:`Stopped` instead
        of sending (a build interrupted while this row waited for a slot)."""

        def seeded(k: int) -> dict[str, Any]:
            return {} if seed is None else {"seed": row_seed(str(seed), k) >> 32}

        if self._num_generations_param_supported:
            return await self._request(
                input, stop, num_generations=num_generations, **kwargs, **seeded(0)
            )
        parts = await asyncio.gather(
            *(self._request(input, stop, **kwargs, **seeded(k)) for k in range(num_generations))
        )
        return merge_responses(_same_keys(list(parts)), n=num_generations)[0]

    async def _request(
        self, input: Any, stop: Callable[[], bool] | None, **call_kwargs: Any
    ) -> dict[str, Any]:
        async with self._slots():
            if stop is not None and stop():
                raise Stopped
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

    def _slots(self) -> asyncio.Semaphore:
        """The semaphore of the running loop (a semaphore belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if self._bound is None or self._bound[0] is not loop:
            self._bound = (loop, asyncio.Semaphore(self.max_concurrency))
        return self._bound[1]

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop:
        """distilabel's loop for this LLM (the running one, else one of its own, which
        distilabel closes with the LLM), made by :func:`new_event_loop`."""
        if self._event_loop is None:  # type: ignore[has-type]
            try:
                self._event_loop = asyncio.get_running_loop()
            except RuntimeError:
                self._event_loop = new_event_loop()
                self._new_event_loop = True
        asyncio.set_event_loop(self._event_loop)
        return self._event_loop


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (not on Windows), else asyncio's.

    Each answer of a long-tailed API arrives on its own and wakes its step for it alone,
    and a request then costs its client about 3x the CPU it costs when answers come in
    bursts; uvloop's loop and transports, in C, spend less on each wake-up
    (``bench/client_cpu.py --arrivals``)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_rows(
    llm: BoundedConcurrency,
    jobs: Iterable[Callable[[], Awaitable[None]]],
    workers: int,
    stop: Callable[[], bool] = stopping,
) -> None:
    """Run ``jobs`` (one per row: ask, then commit the row) on ``llm``'s event loop, up to
    ``workers`` rows at a time, until all are done or the build is interrupted (``stop``).

    Rows start as soon as a worker is free, so no row waits for a slower one; ``jobs`` is
    read lazily, so only the rows in progress are held in memory. After Ctrl-C no new row
    starts; the rows already asked finish and are committed (their answers are paid for).
    """
    rows = iter(jobs)

    async def worker() -> None:
        for job in rows:  # one iterator, shared: each row is taken once
            if stop():
                return
            try:
                await job()
            except Stopped:
                return

    async def everything() -> None:
        await asyncio.gather(*(worker() for _ in range(workers)))

    llm.event_loop.run_until_complete(everything())  # type: ignore[attr-defined]


def _same_keys(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every output the extra keys any has (failed rows lack ``token_logprobs``, the
    others ``errors``): distilabel's merge reads the first output's keys from all."""
    keys = {k for o in outputs for k in o} - {"generations", "statistics"}
    for output in outputs:
        for key in keys:
            output.setdefault(key, [None] * len(output["generations"]))
    return outputs
