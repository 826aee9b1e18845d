"""CPU per chat request of the openai backend's client against the openai SDK's client.

One process, the same loopback server as ``api_scale.py`` answering at once (latency 0,
2 kB answers, its own process), ``--requests`` requests with 64 in flight after 100 to warm
up. Prints the CPU time of this process per request for each client and their ratio:
what a build spends per request on HTTP alone, twice per trace (a generation and a judge
request).

    python bench/client_cpu.py                 # 2,000 requests each
    python bench/client_cpu.py --requests 500
    python bench/client_cpu.py --arrivals      # prefdelta's client, answers in bursts or one by one
    python bench/client_cpu.py --floor         # prefdelta's client against the least a client spends

``--arrivals`` measures prefdelta's client alone against the server at a constant latency
(0.5 s: the 64 answers of a round arrive together, one wake-up serves many) and at a
lognormal one (median 0.5 s, sigma 1: answers arrive one at a time, a wake-up each): the
same requests, the same code, and the CPU each costs, user and system, with the voluntary
context switches per request.

``--floor`` runs prefdelta's client and a bare one side by side on uvloop (as a build's
steps do), at both latencies: the bare client writes each request on one of 64 kept-alive
connections and reads the answer by its ``Content-Length``, with no timeout, retry, proxy,
TLS or redirect. It is no client to ship (a server that answers chunked or closes
a connection breaks it); it is the CPU an answer costs below any HTTP library's own work,
so the difference is what the library spends.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from api_scale import start_server

Ask = Callable[[int], Awaitable[str]]


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Problem {i}: what is {i} plus {i}?"}]


async def _run(ask: Ask, n: int, concurrency: int = 64) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with slots:
            await ask(i)

    await asyncio.gather(*(one(i) for i in range(n)))


def measure(
    make: Callable[[], Awaitable[tuple[Ask, Callable[[], Any]]]],
    n: int,
    runner: Callable[[Awaitable[float]], float] = asyncio.run,  # type: ignore[assignment]
) -> float:
    """CPU seconds of this process per request, after a warm-up, on ``runner``'s loop."""

    async def main() -> float:
        ask, close = await make()
        await _run(ask, 100)
        started = time.process_time()
        await _run(ask, n)
        spent = time.process_time() - started
        await close()
        return spent / n

    return runner(main())


def sdk(url: str) -> Callable[[], Awaitable[tuple[Ask, Callable[[], Any]]]]:
    async def make() -> tuple[Ask, Callable[[], Any]]:
        import openai

        client = openai.AsyncOpenAI(base_url=url, api_key="x")

        async def ask(i: int) -> str:
            done = await client.chat.completions.create(
                model="gen-a",
                messages=_messages(i),
                max_tokens=128,  # type: ignore[arg-type]
            )
            return done.choices[0].message.content or ""

        return ask, client.close

    return make


def chat_http(url: str) -> Callable[[], Awaitable[tuple[Ask, Callable[[], Any]]]]:
    async def make() -> tuple[Ask, Callable[[], Any]]:
        from prefdelta.builders.llms.chat_http import ChatClient

        client = ChatClient(url, api_key="x", timeout_s=600, max_retries=2)

        async def ask(i: int) -> str:
            body = {"model": "gen-a", "messages": _messages(i), "max_tokens": 128}
            done = await client.post("chat/completions", body)
            return done["choices"][0]["message"]["content"]

        async def close() -> None:
            await client.aclose()

        return ask, close

    return make


def arrivals(n: int) -> None:
    """prefdelta's client at a constant and a lognormal latency, side by side."""

    async def main(url: str) -> tuple[float, float, float]:
        ask, close = await chat_http(url)()
        await _run(ask, 100)
        before = resource.getrusage(resource.RUSAGE_SELF)
        await _run(ask, n)
        after = resource.getrusage(resource.RUSAGE_SELF)
        await close()
        return (
            (after.ru_utime - before.ru_utime) / n,
            (after.ru_stime - before.ru_stime) / n,
            (after.ru_nvcsw - before.ru_nvcsw) / n,
        )

    for latency in ("constant", "lognormal"):
        server, base = start_server(latency, 0.5, 1.0, 2000)
        try:
            user, system, switches = asyncio.run(main(f"{base}/v1"))
        finally:
            server.terminate()
            server.wait()
        print(
            f"{latency:>9} 0.5 s: user {1000 * user:.3f} ms, system {1000 * system:.3f} ms CPU "
            f"per request; {switches:.2f} voluntary context switches per request",
            flush=True,
        )


class _BareConnection(asyncio.Protocol):
    """One kept-alive connection of the bare client: one request in flight at a time."""

    def __init__(self) -> None:
        self.buffer = b""
        self.answer: asyncio.Future[bytes] | None = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 or self.answer is None:
            return
        head = self.buffer[:head_end].lower()
        at = head.index(b"content-length:") + len(b"content-length:")
        length = int(head[at:].split(b"\r\n", 1)[0])
        end = head_end + 4 + length
        if len(self.buffer) >= end:
            body, self.buffer = self.buffer[head_end + 4 : end], self.buffer[end:]
            self.answer.set_result(body)


def bare(
    host: str, port: int, connections: int = 64
) -> Callable[[], Awaitable[tuple[Ask, Callable[[], Any]]]]:
    """The bare client of ``--floor``: ``connections`` kept-alive connections, each taken
    for one request at a time; one the server closed while idle (uvicorn does after 5 s,
    as a warm-up's slowest answers come in) is opened again when next taken."""

    async def make() -> tuple[Ask, Callable[[], Any]]:
        import orjson

        loop = asyncio.get_running_loop()

        async def connect() -> _BareConnection:
            return (await loop.create_connection(_BareConnection, host, port))[1]

        free: asyncio.LifoQueue[_BareConnection] = asyncio.LifoQueue()
        for _ in range(connections):
            free.put_nowait(await connect())

        async def ask(i: int) -> str:
            connection = await free.get()
            if connection.transport.is_closing():
                connection = await connect()
            body = orjson.dumps({"model": "gen-a", "messages": _messages(i), "max_tokens": 128})
            connection.answer = loop.create_future()
            head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\n" % host.encode()
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            connection.transport.write(head + body)
            answer = orjson.loads(await connection.answer)
            free.put_nowait(connection)
            return answer["choices"][0]["message"]["content"]

        async def close() -> None:
            while not free.empty():
                free.get_nowait().transport.close()

        return ask, close

    return make


def floor(n: int) -> None:
    """prefdelta's client against the bare one, on uvloop, at both latencies."""
    for latency in ("constant", "lognormal"):
        server, base = start_server(latency, 0.5, 1.0, 2000)
        try:
            host, port = base.removeprefix("http://").split(":")
            ours = measure(chat_http(f"{base}/v1"), n, runner=uvloop.run)
            bare_cpu = measure(bare(host, int(port)), n, runner=uvloop.run)
        finally:
            server.terminate()
            server.wait()
        print(
            f"{latency:>9} 0.5 s: prefdelta's client {1000 * ours:.3f} ms, the bare client "
            f"{1000 * bare_cpu:.3f} ms CPU per request; ratio {ours / bare_cpu:.1f}x",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--arrivals", action="store_true", help="bursts against one by one")
    ap.add_argument("--floor", action="store_true", help="against a bare client, on uvloop")
    args = ap.parse_args()
    if args.floor:
        floor(args.requests)
        return
    if args.arrivals:
        arrivals(args.requests)
        return
    server, base = start_server("constant", 0.0, 1.0, 2000)
    try:
        url = f"{base}/v1"
        old = measure(sdk(url), args.requests)
        print(f"openai SDK (httpx):         {1000 * old:.2f} ms CPU per request", flush=True)
        new = measure(chat_http(url), args.requests)
        print(f"prefdelta ChatClient:       {1000 * new:.2f} ms CPU per request", flush=True)
        print(f"SDK / ChatClient:           {old / new:.1f}x")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
