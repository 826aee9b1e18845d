"""The openai backend's requests, as a loopback server sees them: the openai SDK's retry
policy (counted at the server), the timeout, the credentials, and a client that is not the
SDK's (its CPU per request alone passed what a trace may cost; see bench/client_cpu.py)."""

from __future__ import annotations

import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import openai
import pytest

from prefdelta.builders.llms import make_llm
from prefdelta.builders.llms.chat_http import retry_delay_s
from prefdelta.recipe import GenerationParams, ModelEndpoint
from support.model_fixtures import ChatServer, chat_server  # noqa: F401

GREEDY = GenerationParams(temperature=0.0, top_p=0.9, max_new_tokens=8)


def _ask(server: ChatServer, n: int = 1, base_url: str | None = None, **endpoint: Any) -> Any:
    """Outputs for ``n`` chats through the openai backend, loaded and unloaded as a step."""
    config = ModelEndpoint(model="m", backend="openai", base_url=base_url or server.url, **endpoint)
    llm = make_llm(config, GREEDY, Path("."))
    llm.load()
    try:
        chats = [[{"role": "user", "content": f"question {i}"}] for i in range(n)]
        return llm.generate_outputs(inputs=chats, **llm.get_generation_kwargs())
    finally:
        llm.unload()


def test_requests_do_not_go_through_the_openai_sdk(
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sdk_calls: list[Any] = []
    real_post = openai.AsyncOpenAI.post

    async def post(self: Any, *args: Any, **kwargs: Any) -> Any:
        sdk_calls.append(args)
        return await real_post(self, *args, **kwargs)

    monkeypatch.setattr(openai.AsyncOpenAI, "post", post)
    outputs = _ask(chat_server, 3)
    assert [o["generations"] for o in outputs] == [[f"echo: question {i}"] for i in range(3)]
    assert sdk_calls == []
    assert all("aiohttp/" in str(agent) for agent in chat_server.state.user_agents)


def test_a_step_asking_an_openai_compatible_server_never_loads_the_sdk(
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """A fresh process (as a build's step process is) loads the backend and asks: the
    ``openai`` package, over a second of CPU to import here, is never imported."""
    script = (
        "import sys; from pathlib import Path\n"
        "from prefdelta.builders.llms import make_llm\n"
        "from prefdelta.recipe import GenerationParams, ModelEndpoint\n"
        f"endpoint = ModelEndpoint(model='m', backend='openai', base_url={chat_server.url!r})\n"
        "llm = make_llm(endpoint, GenerationParams(max_new_tokens=8), Path('.'))\n"
        "llm.load()\n"
        "[out] = llm.generate_outputs(inputs=[[{'role': 'user', 'content': 'hi'}]])\n"
        "llm.unload()\n"
        "print(out['generations'], 'openai' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "['echo: hi'] False"


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not installed on Windows")
def test_a_step_asks_on_uvloops_event_loop(
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """Each answer of a long-tailed API wakes its step alone; uvloop's loop spends less CPU
    on each wake-up than asyncio's (``bench/client_cpu.py --arrivals``)."""
    config = ModelEndpoint(model="m", backend="openai", base_url=chat_server.url)
    llm = make_llm(config, GREEDY, Path("."))
    llm.load()
    loop = llm.event_loop
    [out] = llm.generate_outputs(inputs=[[{"role": "user", "content": "hi"}]])
    assert out["generations"] == ["echo: hi"]
    assert type(loop).__module__.startswith("uvloop"), type(loop)
    assert llm.event_loop is loop  # one loop per step, kept
    llm.unload()


def test_a_rate_limited_request_is_retried_request_retries_times_then_fails_its_row(
    chat_server: ChatServer,  # noqa: F811
) -> None:
    chat_server.state.fail_first = 100  # 429 with retry-after-ms: 10, every time
    [output] = _ask(chat_server, request_retries=2)
    assert chat_server.state.requests == 3  # the first try and two retries
    assert output["generations"] == [None] and output["errors"] == ["HTTP 429: rate limited"]


def test_retries_wait_as_long_as_the_server_asks(chat_server: ChatServer) -> None:  # noqa: F811
    """retry-after: 1.5 s before each retry, where the backoff alone waits <= 0.5 s, then
    <= 1 s."""
    chat_server.state.fail_first = 2
    chat_server.state.rate_limit_headers = {"retry-after": "1.5"}
    [output] = _ask(chat_server, request_retries=3)
    assert output["generations"] == ["echo: question 0"]
    assert chat_server.state.requests == 3
    assert all(b - a >= 1.45 for a, b in pairwise(chat_server.state.arrivals))


def test_a_server_asking_to_wait_over_two_minutes_is_not_retried(
    chat_server: ChatServer,  # noqa: F811
) -> None:
    chat_server.state.fail_first = 1
    chat_server.state.rate_limit_headers = {"retry-after": "300"}
    [output] = _ask(chat_server, request_retries=3)
    assert chat_server.state.requests == 1 and output["errors"] == ["HTTP 429: rate limited"]


@pytest.mark.parametrize(("status", "requests"), [(400, 1), (404, 1), (408, 2), (503, 2)])
def test_server_errors_are_retried_and_refusals_are_not(
    chat_server: ChatServer,  # noqa: F811
    status: int,
    requests: int,
) -> None:
    chat_server.state.fail_when = {"question 0": status}
    outputs = _ask(chat_server, 2, request_retries=1)
    assert chat_server.state.requests == requests + 1  # question 1 is answered at once
    assert outputs[0]["errors"] == [f"HTTP {status}: no: question 0"]
    assert outputs[1]["generations"] == ["echo: question 1"]


def test_a_request_without_an_answer_in_request_timeout_fails_its_row(
    chat_server: ChatServer,  # noqa: F811
) -> None:
    chat_server.state.delay_s = 5
    [output] = _ask(chat_server, request_timeout=1, request_retries=0)
    assert output["generations"] == [None]
    assert output["errors"] == ["ChatHTTPError: no answer within 1 s (recipe: request_timeout)"]


def test_a_refused_connection_is_retried_then_fails_its_row_in_one_line(
    chat_server: ChatServer,  # noqa: F811
) -> None:
    url = chat_server.url
    chat_server.stop()  # nothing listens there any more
    [output] = _ask(chat_server, base_url=url, request_retries=1)
    assert output["generations"] == [None]
    [error] = output["errors"]
    assert error.startswith("ChatHTTPError: connection failed: ") and "\n" not in error


def test_a_user_and_password_in_base_url_go_as_basic_auth(
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFDELTA_TEST_API_KEY", "sk-not-sent")
    url = chat_server.url.replace("http://", "http://u:p%40ss@")
    [output] = _ask(chat_server, base_url=url, api_key="${PREFDELTA_TEST_API_KEY}")
    assert output["generations"] == ["echo: question 0"]
    assert chat_server.state.auth == ["Basic dTpwQHNz"]  # base64 of u:p@ss


def test_bodies_keep_their_text_and_lenient_json_answers_are_still_read(
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """A prompt's text reaches the server as written and its echo comes back the same; an
    answer with the non-standard ``Infinity`` and ``NaN`` literals, which Python's json
    module reads and some servers write, is read too, and an answer that is not JSON is
    still refused, quoting it."""
    import asyncio
    import math

    from prefdelta.builders.llms.chat_http import ChatClient
    from prefdelta.builders.llms.common import NotJSONResponse

    text = 'Σ over café prices: 2⁸ = 256 \\ "quoted" \u2028 😀'
    lenient = (
        '{"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, '
        '"finish_reason": "stop"}], "score": Infinity, "spread": NaN}'
    )
    chat_server.state.text_when = {"lenient": lenient, "broken": "{not json"}
    client = ChatClient(chat_server.url, api_key=None, timeout_s=30, max_retries=0)

    async def ask(content: str) -> dict[str, Any]:
        body = {"model": "m", "messages": [{"role": "user", "content": content}]}
        return await client.post("chat/completions", body)

    async def run() -> tuple[dict[str, Any], dict[str, Any], str]:
        try:
            echoed, read = await ask(text), await ask("lenient")
            try:
                await ask("broken")
            except NotJSONResponse as exc:
                return echoed, read, str(exc)
            raise AssertionError("an answer that is not JSON was read")
        finally:
            await client.aclose()

    echoed, read, refused = asyncio.run(run())
    assert chat_server.state.bodies[0]["messages"][0]["content"] == text
    assert echoed["choices"][0]["message"]["content"] == f"echo: {text}"
    assert read["choices"][0]["message"]["content"] == "ok"
    assert read["score"] == math.inf and math.isnan(read["spread"])
    assert refused == "the server answered 200 with a body that is not JSON: '{not json'"


def test_retry_delays_follow_the_servers_headers_or_back_off() -> None:
    assert retry_delay_s({"retry-after-ms": "250"}, 0) == 0.25
    assert retry_delay_s({"retry-after": "3"}, 5) == 3.0
    assert retry_delay_s({"retry-after": "121"}, 0) is None  # longer than 2 minutes
    for attempt, most in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delay = retry_delay_s({}, attempt)
        assert delay is not None and 0.75 * most <= delay <= most


def test_the_environments_proxy_carries_the_requests(
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY is honoured, as the openai SDK's client did: a request to a host nothing
    resolves reaches the loopback server standing in as the proxy, which answers 404 (it
    routes only its own paths); without the proxy, the connection would fail."""
    monkeypatch.setenv("HTTP_PROXY", chat_server.url.removesuffix("/v1"))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    [output] = _ask(chat_server, base_url="http://api.example.invalid/v1", request_retries=0)
    assert output["errors"] == ["HTTP 404: Not Found"]


def test_an_https_server_is_trusted_by_the_systems_certificates_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HTTPS server signed by a private authority: refused as untrusted, and reached once
    ``SSL_CERT_FILE`` names that authority's certificate (as OpenSSL and the openai SDK's
    client read it), with the certificate checked, not switched off."""
    import asyncio
    import http.server
    import json
    import ssl
    import threading

    from prefdelta.builders.llms.chat_http import ChatClient, ChatHTTPError

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"message": {"content": "ok"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/v1"

    async def ask() -> dict[str, Any]:
        client = ChatClient(url, api_key="k", timeout_s=30, max_retries=0)
        try:
            return await client.post("chat/completions", {"model": "m", "messages": []})
        finally:
            await client.aclose()

    try:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        with pytest.raises(ChatHTTPError, match=r"(?i)certificate"):
            asyncio.run(ask())
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert asyncio.run(ask())["choices"][0]["message"]["content"] == "ok"
    finally:
        server.shutdown()
