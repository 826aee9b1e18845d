"""Errors a user is meant to read, and how each is said: the one place the CLI asks.

:class:`PrefdeltaError` is the base of the project's own (its message is the line). Library
and system errors a command's work can raise (a full disk, a file in the way, a damaged
database) are phrased here too, by type: :func:`register_user_error` adds one, and
:func:`user_error_lines` answers for any exception whose type (or a base of it) is
registered. The CLI prints those lines and exits 1; any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["PrefdeltaError", "register_user_error", "user_error_lines"]

E = TypeVar("E", bound=BaseException)


class PrefdeltaError(Exception):
    """A problem with the user's input, files or services, said in one line."""


# type, or "module.QualName" for a library's type that is not imported until a command
# needs it -> the line that says what happened and what to do
_PHRASES: dict[type[BaseException] | str, Callable[[Any], str]] = {}


def register_user_error(kind: type[E] | str, phrase: Callable[[E], str] | None = None) -> None:
    """Say exceptions of ``kind`` (and its subclasses) as ``phrase(exc)``, one line, instead
    of a traceback. ``kind`` may be named ``"module.QualName"`` so a library is not imported
    to register its error. Without ``phrase``, the exception's own message is the line."""
    _PHRASES[kind] = phrase or (lambda exc: str(exc))


def user_error_lines(exc: BaseException) -> list[str] | None:
    """The lines that tell the user about ``exc``, or None when ``exc`` is not an error a
    user meets (a bug). The most specific registered type wins."""
    for cls in type(exc).__mro__:
        phrase = _PHRASES.get(cls) or _PHRASES.get(f"{cls.__module__}.{cls.__qualname__}")
        if phrase is not None:
            lines = getattr(exc, "lines", None)
            return list(lines) if lines else [" ".join(str(phrase(exc)).split())]
    return None


_OS_ADVICE = {
    errno.ENOSPC: "free some space on that disk, then rerun",
    errno.EDQUOT: "free some space within your quota, then rerun",
    errno.EROFS: "choose a folder on a writable disk",
    errno.EACCES: "choose a folder you may write to, or fix its permissions",
    errno.EPERM: "choose a folder you may write to, or fix its permissions",
    errno.ENOTDIR: "a part of that path is a file, not a folder; choose another path",
    errno.EISDIR: "that path is a folder; give a file",
    errno.ENOENT: "check the path",
    errno.EEXIST: "move it away or choose another path",
}


def _os_error(exc: OSError) -> str:
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    if exc.errno is None or exc.strerror is None:  # raised with a message of its own
        return f"{where}: {exc}" if where else str(exc)
    advice = _OS_ADVICE.get(exc.errno, "check the path and the disk, then rerun")
    return f"{where or 'writing a file'}: {exc.strerror}; {advice}"


def _database_error(exc: sqlite3.DatabaseError) -> str:
    return f"a database could not be used ({exc}); move the file aside and rerun"


register_user_error(PrefdeltaError)
register_user_error(OSError, _os_error)
register_user_error(sqlite3.DatabaseError, _database_error)
