"""Session-wide real Argilla stack for any test that needs one.

Use it by importing the fixture into the test module (tests/ is on sys.path, as for
conftest.py's ``support.hub_server``)::

    from support.argilla_fixtures import argilla_stack  # noqa: F401

The stack needs the server venv (``bash scripts/install-argilla-server.sh``). Without it the
tests that use the fixture fail with that command in the message: they never skip, so CI cannot
pass by not running them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prefdelta.review.server_venv import ArgillaServerNotInstalled
from prefdelta.review.stack import ArgillaStack

BOOT_LIMIT_S = 60.0
"""Tests and CI budget for one boot of the whole stack."""


def new_stack() -> ArgillaStack:
    """An unstarted stack, or a test failure that says how to install the server venv."""
    try:
        return ArgillaStack()
    except ArgillaServerNotInstalled as error:
        message = str(error)
    pytest.fail(message, pytrace=False)  # outside `except`: the message alone, no chained traceback


_shared: ArgillaStack | None = None
_users = 0


@pytest.fixture(scope="session")
def argilla_stack() -> Iterator[ArgillaStack]:
    """One running stack for the whole session (boot ~10 s): owner credentials on the object.

    pytest makes a separate session fixture for each module that imports this one, so the stack
    itself is shared here and stopped when the last of them is torn down.
    """
    global _shared, _users
    if _shared is None:
        _shared = new_stack().start()
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0:
            _shared.stop()
            _shared = None


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes (the server indexes asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return check()


@contextmanager
def not_argilla(status: int, body: str, content_type: str = "text/html") -> Iterator[str]:
    """A loopback HTTP server that is not Argilla: every request gets ``status`` and ``body``.

    Yields its URL; the server stops when the block ends.
    """

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, *args: object) -> None:  # no request log on stderr
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
