"""How ``prefdelta`` says an error: the one catch point of every command, and
:func:`user_errors` for the errors a command expects.

An error a user can fix is printed as one line and exits with status 1, never as a
traceback (``--debug`` shows it; a build's is also kept in its folder's ``logs/``). Which
errors those are, and how each is said: :mod:`prefdelta.errors`. Every line goes through
:func:`prefdelta.redact.redact`.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from prefdelta.errors import PrefdeltaError, user_error_lines
from prefdelta.redact import redact

DEBUG_ENV = "PREFDELTA_DEBUG"

err = Console(stderr=True, soft_wrap=True)


class Commands(TyperGroup):
    """The one catch point of every command (subgroups' included): an error a user meets
    (a type :func:`prefdelta.errors.register_user_error` knows) is one line and exit 1;
    anything else is a bug, shown as a plain Python traceback.
    Plain, because distilabel installs rich's traceback hook when it is imported, and that
    prints every frame's local variables (the loaded recipe's resolved secrets among them).
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # said and handled already
            raise
        except Exception as exc:
            lines = user_error_lines(exc)
            if lines is None:
                err.print(redact(_traceback(exc)).rstrip("\n"), markup=False, highlight=False)
                err.print(
                    "this is a bug in prefdelta: please report it with the traceback above",
                    markup=False,
                    highlight=False,
                )
            else:
                _report(exc, lines)
            raise typer.Exit(1) from None


_debug = False  # --debug, set for each invocation


def set_debug(debug: bool) -> None:
    """``prefdelta --debug``: print an error's full traceback too."""
    global _debug
    _debug = debug


def _debugging() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _write_log(folder: Path | None, text: str) -> Path | None:
    """``text`` in ``folder/logs/error-<time>.log``; None when it cannot be written (the
    disk is full, the folder is not there: a log never creates a build folder)."""
    from prefdelta.schema import LOGS

    if folder is None or not folder.is_dir():
        return None
    path = folder / LOGS / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def _report(
    exc: BaseException, lines: list[str], log_dir: Path | None = None, prefix: str = ""
) -> None:
    """Print ``lines`` (what happened, what to do) and where the traceback is: a library's
    or the system's error (not one of ours, whose line says it all) is logged in
    ``log_dir``; ``--debug`` prints it. Everything printed or logged is redacted."""
    trace = redact(_traceback(exc))
    if _debugging():
        err.print(trace.rstrip("\n"), markup=False, highlight=False)
    elif not isinstance(exc, PrefdeltaError):
        log = _write_log(log_dir, trace)
        where = f"the traceback is in {log}" if log else "rerun with --debug for the traceback"
        lines = [*lines[:-1], f"{lines[-1]} ({where})"]
    for line in lines:
        err.print(redact(f"{prefix}{line}"), markup=False, highlight=False)


@contextmanager
def user_errors(
    *also: type[BaseException], prefix: str = "", log_dir: Path | None = None
) -> Iterator[None]:
    """Print an error meant for the user (any type :mod:`prefdelta.errors` phrases: ours,
    OS and database errors; and the library errors in ``also``) as its lines, then exit 1.
    ``log_dir``: a build folder, where a library's error keeps its traceback. Any other
    exception is a bug and keeps its traceback."""
    try:
        yield
    except Exception as exc:
        lines = user_error_lines(exc)
        if lines is None and isinstance(exc, also):
            lines = [" ".join(str(exc).split())]
        if lines is None:
            raise
        _report(exc, lines, log_dir, prefix)
        raise typer.Exit(1) from None
