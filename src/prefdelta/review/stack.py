"""A real local Argilla stack on loopback, without Docker: osmem-server, fakeredis, SQLite, the
argilla-server API and its worker.

argilla-server 2.8.0 cannot share prefdelta's env (it pins ``typer<0.10``, hence ``click<8.2``,
and needs ``huggingface_hub<1``), so it lives in its own venv, made by
``scripts/install-argilla-server.sh``. This module only starts processes from that venv; it
imports nothing from it. Every child gets its own process group (stopped as a group, so rq's
forked workers go too) and a stdin pipe from us: if this process dies without cleaning up, the
pipe closes and each child exits by itself.

It owns four processes (fakeredis, the osmem search server, the API server and its worker)
that must start, be watched and stop as one; the venv they run from is found by
:mod:`prefdelta.review.server_venv`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import IO

from prefdelta.errors import PrefdeltaError
from prefdelta.review.server_venv import ArgillaServerNotInstalled, osmem_binaries, server_python

# A script for the server venv, shipped as package data: see its docstring for why.
ENGINE_FILE = Path(__file__).with_name("server_scripts") / "argilla_engine.py"
ENGINE_NAME = "osmem"  # argilla_engine.ENGINE_NAME; that script cannot be imported here
LOOPBACK = "127.0.0.1"

# Runs in the server venv: fakeredis on a free port, the port on stdout, gone when stdin closes.
_REDIS_MAIN = """
import os, sys, threading
from fakeredis import TcpFakeServer
server = TcpFakeServer((sys.argv[1], 0))
print(server.server_address[1], flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
server.serve_forever()
"""


class ArgillaStackError(PrefdeltaError, RuntimeError):
    """A component failed to start or died; the message carries the tail of its log."""


def _free_listener(host: str, port: int | None) -> socket.socket:
    """Bind now and hand the socket to the server: no window for another process to take the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port or 0), family=family)
    sock.set_inheritable(True)
    return sock


class ArgillaStack:
    """Start the whole Argilla stack on loopback; use as a context manager.

    After :meth:`start`, ``api_url``, ``api_key``, ``username`` and ``password`` reach an owner
    account. Credentials not given are generated. ``work_dir`` (SQLite DB, logs) is a temporary
    folder removed on :meth:`stop` unless given; a given one is kept, with the generated
    credentials in ``credentials.json``, and a later stack on it rebuilds the (in-memory) search
    indices from the database, so datasets survive restarts.
    """

    def __init__(
        self,
        *,
        venv: Path | str | None = None,
        work_dir: Path | str | None = None,
        host: str = LOOPBACK,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        api_key: str | None = None,
        num_workers: int = 1,
        boot_timeout: float = 120.0,
    ) -> None:
        self.python = server_python(venv)
        self.venv = self.python.parent.parent
        self.host = host
        self.port = port
        self._given_work_dir = Path(work_dir).expanduser().resolve() if work_dir else None
        saved = self._saved_credentials()
        self.username = username or saved.get("username") or "prefdelta"
        self.password = password or saved.get("password") or secrets.token_urlsafe(12)
        self.api_key = api_key or saved.get("api_key") or f"argilla.{secrets.token_urlsafe(24)}"
        self.num_workers = num_workers
        self.boot_timeout = boot_timeout
        self.work_dir: Path | None = None
        self.api_url = ""
        self.boot_seconds: float | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ArgillaStack:
        """Boot every component and wait until the API answers as the owner."""
        started = time.monotonic()
        if self._given_work_dir:
            self.work_dir = self._given_work_dir
            self.work_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.work_dir = Path(tempfile.mkdtemp(prefix="prefdelta-argilla-"))
        (self.work_dir / "logs").mkdir(exist_ok=True)
        reuse_db = (self.work_dir / "argilla.db").exists()
        try:
            with self._sigint_deferred():
                osmem_url = self._start_osmem()
                redis_port = self._start_redis()
            env = self._server_env(osmem_url, f"redis://{LOOPBACK}:{redis_port}/0", reuse_db)
            listener = _free_listener(self.host, self.port)
            try:
                self.port = listener.getsockname()[1]
                with self._sigint_deferred():
                    fd = listener.fileno()
                    self._spawn(
                        "server",
                        self._engine_cmd("serve", "--fd", str(fd)),
                        env=env,
                        pass_fds=(fd,),
                    )
            finally:
                listener.close()  # the server holds its own copy
            with self._sigint_deferred():
                cmd = self._engine_cmd("worker", "--num-workers", str(self.num_workers))
                self._spawn("worker", cmd, env=env)
            url_host = f"[{self.host}]" if ":" in self.host else self.host
            self.api_url = (
                f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else url_host}:{self.port}"
            )
            self._wait_healthy(started)
            self._save_credentials()
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stop every component (newest first), whole process groups, then remove a temp work dir."""
        with self._sigint_deferred(reraise=False):  # already stopping: a 2nd Ctrl-C changes nothing
            for name in reversed(list(self._procs)):
                self._terminate(self._procs[name], grace)
            self._procs.clear()
            for log in self._logs.values():
                log.close()
            self._logs.clear()
            if self.work_dir and not self._given_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> ArgillaStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- introspection -----------------------------------------------------------------------

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each component's group leader (its process group id too)."""
        return {name: proc.pid for name, proc in self._procs.items()}

    def check(self) -> None:
        """Raise :class:`ArgillaStackError` if a component has exited."""
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise ArgillaStackError(
                    f"Argilla {name} exited with code {proc.returncode}:\n{self._log_tail(name)}"
                )

    # -- components --------------------------------------------------------------------------

    def _start_osmem(self) -> str:
        binary = osmem_binaries(self.venv)[0]
        cmd = [str(binary), "--no-ja", "--addr", f"{LOOPBACK}:0", "--parent-pid", str(os.getpid())]
        proc = self._spawn("osmem", cmd, stdout=subprocess.PIPE)
        msg = json.loads(self._read_ready_line("osmem", proc))
        return str(msg["url"])

    def _start_redis(self) -> int:
        proc = self._spawn(
            "redis", [str(self.python), "-I", "-c", _REDIS_MAIN, LOOPBACK], stdout=subprocess.PIPE
        )
        return int(self._read_ready_line("redis", proc))

    def _engine_cmd(self, *args: str) -> list[str]:
        # -I: the launcher's folder (the rest of prefdelta.review) stays off the server's sys.path.
        return [str(self.python), "-I", str(ENGINE_FILE), *args]

    def _saved_credentials(self) -> dict[str, str]:
        path = self._given_work_dir / "credentials.json" if self._given_work_dir else None
        if path and path.exists():
            return dict(json.loads(path.read_text()))
        return {}

    def _save_credentials(self) -> None:
        if not self._given_work_dir:
            return
        path = self._given_work_dir / "credentials.json"
        fields = {"username": self.username, "password": self.password, "api_key": self.api_key}
        path.touch(mode=0o600)
        path.write_text(json.dumps(fields, indent=2) + "\n")

    def _server_env(self, osmem_url: str, redis_url: str, reuse_db: bool) -> dict[str, str]:
        assert self.work_dir is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGILLA_", "VIRTUAL_ENV"))}
        env.update(
            ARGILLA_HOME_PATH=str(self.work_dir),
            ARGILLA_DATABASE_URL=f"sqlite+aiosqlite:///{self.work_dir / 'argilla.db'}",
            ARGILLA_ELASTICSEARCH=osmem_url,
            ARGILLA_SEARCH_ENGINE=ENGINE_NAME,
            ARGILLA_REDIS_URL=redis_url,
            HF_HUB_DISABLE_TELEMETRY="1",
            PREFDELTA_ARGILLA_USERNAME=self.username,
            PREFDELTA_ARGILLA_PASSWORD=self.password,
            PREFDELTA_ARGILLA_API_KEY=self.api_key,
            PREFDELTA_ARGILLA_EXIT_ON_STDIN_EOF="1",
            PREFDELTA_ARGILLA_REINDEX="1" if reuse_db else "0",
        )
        return env

    def _spawn(
        self,
        name: str,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        stdout: int | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.Popen[bytes]:
        assert self.work_dir is not None
        log = self._logs[name] = open(self.work_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=log if stdout is None else stdout,
            stderr=log,
            env=env,
            cwd=self.work_dir,
            pass_fds=pass_fds,
            start_new_session=True,  # own group: the terminal's Ctrl-C is ours to relay, in order
        )
        self._procs[name] = proc
        return proc

    def _read_ready_line(
        self, name: str, proc: subprocess.Popen[bytes], timeout: float = 30.0
    ) -> str:
        """First stdout line of ``proc`` (its address); the rest of stdout is copied to its log."""
        assert proc.stdout is not None
        stdout = proc.stdout
        line: list[bytes] = []

        def pump() -> None:
            line.append(stdout.readline())
            for chunk in iter(lambda: stdout.read1(65536), b""):
                with suppress(ValueError):
                    self._logs[name].write(chunk)

        threading.Thread(target=pump, name=f"argilla-{name}-stdout", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not line and time.monotonic() < deadline:
            time.sleep(0.01)
        if not line or not line[0].strip():
            raise ArgillaStackError(f"Argilla {name} did not start:\n{self._log_tail(name)}")
        return line[0].decode().strip()

    def _wait_healthy(self, started: float) -> None:
        request = urllib.request.Request(
            f"{self.api_url}/api/v1/me", headers={"X-Argilla-Api-Key": self.api_key}
        )
        while True:
            self.check()
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:
                if error.code == 401:  # up, but the kept database knows this owner otherwise
                    raise ArgillaStackError(
                        f"The database in {self.work_dir} has no owner {self.username!r} with this"
                        " API key: pass that database's credentials, or use a new work dir"
                    ) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() - started > self.boot_timeout:
                raise ArgillaStackError(
                    f"Argilla server not healthy after {self.boot_timeout:.0f} s:\n{self._log_tail('server')}"
                )
            time.sleep(0.2)

    def _terminate(self, proc: subprocess.Popen[bytes], grace: float) -> None:
        """Close stdin, SIGTERM the group, wait, then SIGKILL whatever of the group is left."""
        with suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        # The leader may be gone while its forks (rq workers, work horses) linger: same group.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def _log_tail(self, name: str, lines: int = 30) -> str:
        if not self.work_dir:
            return ""
        with suppress(KeyError, ValueError):
            self._logs[name].flush()
        path = self.work_dir / "logs" / f"{name}.log"
        with suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @contextmanager
    def _sigint_deferred(self, reraise: bool = True) -> Iterator[None]:
        """Hold Ctrl-C while children are being started or stopped, so none is left half-tracked."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        received: list[int] = []
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
        if received and reraise:
            raise KeyboardInterrupt


def serve(
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    api_key: str | None = None,
    work_dir: Path | str | None = None,
    venv: Path | str | None = None,
) -> None:
    """Run the stack until Ctrl-C (or SIGTERM), printing where to log in; stop it cleanly."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    from prefdelta.review.argilla_client import (
        API_KEY_ENV,
        API_URL_ENV,
        clear_serve_credentials,
        save_serve_credentials,
    )

    console = Console()
    previous_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        stack = ArgillaStack(
            venv=venv,
            work_dir=work_dir,
            host=host,
            port=port,
            username=username,
            password=password,
            api_key=api_key,
        )
        try:
            with console.status("Starting Argilla (osmem, redis, server, worker)..."):
                stack.start()
        except KeyboardInterrupt:  # start() already stopped what it had started
            console.print("Interrupted; Argilla stopped.")
            return
        try:
            table = Table.grid(padding=(0, 2))
            table.add_row("URL", stack.api_url)
            table.add_row("Username", stack.username)
            table.add_row("Password", stack.password)
            table.add_row("API key", stack.api_key)
            table.add_row("Data", str(stack.work_dir) + ("" if work_dir else " (deleted on exit)"))
            console.print(
                Panel(table, title=f"Argilla is up ({stack.boot_seconds:.1f} s)", expand=False)
            )
            saved = save_serve_credentials(stack.api_url, stack.api_key)
            console.print(
                f"`prefdelta review push` and `pull` on this machine use it ({saved}); elsewhere:",
                soft_wrap=True,
            )
            console.print(
                f"export {API_URL_ENV}={stack.api_url} {API_KEY_ENV}={stack.api_key}",
                soft_wrap=True,
            )
            console.print(f"rg.Argilla(api_url={stack.api_url!r}, api_key={stack.api_key!r})")
            console.print("Press Ctrl-C to stop.")
            while True:
                stack.check()
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("Stopping Argilla...")
        finally:
            clear_serve_credentials(stack.api_url)
            stack.stop()
        console.print("Argilla stopped.")
    finally:
        signal.signal(signal.SIGTERM, previous_term)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover - manual use: python -m prefdelta.review.stack
    try:
        serve()
    except (ArgillaServerNotInstalled, ArgillaStackError) as error:
        sys.exit(str(error))
