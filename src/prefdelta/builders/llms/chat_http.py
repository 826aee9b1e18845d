"""JSON over HTTP for the openai backend: one ``aiohttp`` session per event loop, the
openai SDK's retry policy, and the answer as a plain dict.

Why not the openai SDK's client: at paper scale the client is the build's main CPU cost.
Per request it spent 1.5-2.4 ms of CPU (httpx or its aiohttp transport, anyio, its request
transform, pydantic parsing of the answer) where posting the JSON with ``aiohttp`` and
reading the body as a dict takes about 0.2 ms (``bench/client_cpu.py``). A trace costs a
generation and a judge request, so the SDK alone spent more than the 3 ms of CPU per trace
a build may use. What the SDK did that the builds rely on is kept here: retries on
connection errors, 408, 409, 429 and 5xx with exponential backoff (0.5 s doubling to 8 s,
less up to 25% jitter) or the server's ``retry-after-ms`` / ``retry-after`` (up to 2
minutes; longer: not retried), ``x-should-retry``, and errors that carry the status, the
server's message and its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import math
import os
import random
import ssl
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
import yarl

from prefdelta.builders.llms.common import NotJSONResponse

__all__ = ["ChatClient", "ChatHTTPError", "retry_delay_s"]

INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
MAX_RETRY_AFTER_S = 120.0  # a server asking for longer is not retried (as the SDK does)
RETRIED_STATUSES = frozenset({408, 409, 429})


class ChatHTTPError(Exception):
    """A request that failed after its retries: ``status_code`` (None when no answer
    came: a refused connection, a timeout), the server's ``message`` and its ``body`` (the
    ``error`` object of a JSON body, else the text)."""

    def __init__(self, message: str, status_code: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.body = body


def retry_delay_s(
    headers: Mapping[str, str] | None, attempt: int, rng: random.Random | None = None
) -> float | None:
    """Seconds to wait before retry number ``attempt`` (0 for the first): the server's
    ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date) when it names 0-120 s,
    else backoff; None: the server asked for longer than 120 s, so do not retry."""
    after = _retry_after_s(headers or {})
    if after is not None and math.isfinite(after) and after > MAX_RETRY_AFTER_S:
        return None
    if after is not None and 0 < after <= MAX_RETRY_AFTER_S:
        return after
    backoff = min(INITIAL_RETRY_DELAY_S * 2.0 ** min(attempt, 1000), MAX_RETRY_DELAY_S)
    return backoff * (1 - 0.25 * (rng or random).random())


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / divisor
        except ValueError:
            continue
    parsed = email.utils.parsedate_tz(headers.get("retry-after") or "")
    if parsed is None:
        return None
    return email.utils.mktime_tz(parsed) - time.time()


class ChatClient:
    """POSTs JSON bodies to ``base_url`` and returns the answers as dicts; the API key
    goes as ``Authorization: Bearer``, or a user and password in ``base_url`` (a proxy's
    basic auth) in its place.

    One ``aiohttp.ClientSession`` per event loop (a session belongs to the loop it was
    made on; a distilabel step process runs one), made on first use and closed by
    :meth:`close`. Connections are not limited here: the LLM's semaphore bounds the
    requests in flight.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout_s: float,
        max_retries: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        url = yarl.URL(base_url)
        self.base_url = str(url.with_user(None)).rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if url.user is not None or url.password is not None:  # as httpx: Basic, not the key
            self._headers["Authorization"] = aiohttp.encode_basic_auth(
                url.user or "", url.password or ""
            )
        elif api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._proxy = _env_proxy(url)
        self._session: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession] | None = None

    async def post(self, path: str, body: Any, *, retries: bool = True) -> dict[str, Any]:
        """The JSON answer to ``body`` posted at ``path``; retried as the openai SDK does
        unless ``retries`` is False. Raises :class:`ChatHTTPError` for an error status or
        no answer, :class:`~.common.NotJSONResponse` for a 200 whose body is not JSON."""
        data = _encode(body)
        url = f"{self.base_url}/{path.lstrip('/')}"
        attempts = 1 + (self.max_retries if retries else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                async with self._client().post(url, data=data, proxy=self._proxy) as response:
                    status, raw = response.status, await response.read()
                    headers = response.headers
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if last:
                    raise _no_answer(exc, self.timeout_s) from exc
                await asyncio.sleep(retry_delay_s(None, attempt) or 0.0)
                continue
            if status < 400:
                return _json_object(raw)
            error = _status_error(status, raw.decode(errors="replace"))
            delay = (
                None if last or not _retried(status, headers) else retry_delay_s(headers, attempt)
            )
            if delay is None:
                raise error
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _ssl(self) -> ssl.SSLContext | bool:
        """The certificates an ``https`` server is checked against; a plain ``http`` one
        (a local server) needs none loaded."""
        if not self.base_url.startswith("https:"):
            return True
        return _trusted(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session[0] is not loop:
            session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl()),
            )
            self._session = (loop, session)
        return self._session[1]

    async def aclose(self) -> None:
        """Close the session, on its own loop."""
        held, self._session = self._session, None
        if held is not None:
            await held[1].close()

    def close(self) -> None:
        """Close the session from outside its loop (the LLM's ``unload``)."""
        if self._session is None:
            return
        loop = self._session[0]
        if loop.is_closed():
            self._session = None
        elif loop.is_running():
            loop.create_task(self.aclose())
        else:
            loop.run_until_complete(self.aclose())


@functools.cache
def _trusted(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """The certificates an HTTPS server is checked against: the system's (with OpenSSL's
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``) and certifi's bundle, which the openai SDK's
    client trusted, so a server it reached is reached here, on an image without a system
    bundle too. Made once per process and setting (``cert_file``, ``cert_dir``: what the
    environment names, which OpenSSL reads): loading them costs tens of milliseconds."""
    import certifi

    context = ssl.create_default_context()
    context.load_verify_locations(cafile=certifi.where())
    return context


def _env_proxy(url: yarl.URL) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``, less ``NO_PROXY``), as the openai SDK's client honours them; the
    session does not read the environment itself (``trust_env`` would also look the host
    up in ``~/.netrc`` on every request)."""
    proxies = urllib.request.getproxies_environment()
    if not url.host or urllib.request.proxy_bypass_environment(url.host, proxies):
        return None
    return proxies.get(url.scheme) or proxies.get("all")


def _retried(status: int, headers: Mapping[str, str]) -> bool:
    """The SDK's rule: the server's ``x-should-retry`` if given, else 408, 409, 429, 5xx."""
    should = headers.get("x-should-retry")
    if should in ("true", "false"):
        return should == "true"
    return status in RETRIED_STATUSES or status >= 500


def _encode(body: Any) -> bytes:
    """``body`` as JSON, by orjson (a judge's request, its trace and schema, costs a
    twentieth of the standard library's time), or by the standard library for what orjson
    refuses (an integer past 64 bits)."""
    try:
        return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(body).encode()


def _decode(raw: bytes | str) -> Any:
    """JSON read by orjson, or by the standard library where orjson refuses what it
    accepts (``NaN`` and ``Infinity``, UTF-16 or UTF-32 text). orjson reads an integer past
    64 bits as a float; what prefdelta reads of an answer is text, token counts and
    log-probabilities."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = _decode(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise NotJSONResponse(raw.decode(errors="replace"))
    return value


def _status_error(status: int, text: str) -> ChatHTTPError:
    """The error for an error status: the message of the body's ``error`` object (OpenAI's
    form), else the body's text."""
    body: Any = text
    with contextlib.suppress(ValueError):
        body = _decode(text)
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = text.strip() or f"status {status}"
    return ChatHTTPError(message, status, error)


def _no_answer(exc: BaseException, timeout_s: float) -> ChatHTTPError:
    if isinstance(exc, asyncio.TimeoutError):
        return ChatHTTPError(f"no answer within {timeout_s:g} s (recipe: request_timeout)")
    return ChatHTTPError(f"connection failed: {exc}")
