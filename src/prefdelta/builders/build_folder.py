"""The build folder: a build never writes over what is not a build's, and one build at a
time holds a folder (both checked before any call is made)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefdelta.errors import PrefdeltaError
from prefdelta.schema import LOGS, STORE

__all__ = ["OutputDirError", "build_lock", "claim_build_dir"]


class OutputDirError(PrefdeltaError, ValueError):
    """The build folder is a file, or a folder of someone else's files."""


def claim_build_dir(out: Path) -> None:
    """Refuse a build folder that would overwrite what is not a build's: a file, or a
    non-empty folder without a build's store (a build writes ``store.sqlite`` first)."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"build folder {out} is a file; choose a folder (-o/--output-dir)")
    if out.is_dir() and not (out / STORE).is_file():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in (".lock", LOGS))
        if foreign:
            shown = ", ".join(foreign[:3]) + (
                f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            )
            raise OutputDirError(
                f"refusing to build into {out}: it holds files that are not a prefdelta build "
                f"({shown}); choose an empty or new folder (-o/--output-dir)"
            )


@contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """One build at a time per folder: a second one stops at once and says who holds it.

    ``flock`` on ``.lock`` in the folder: the kernel drops it when the holder dies, however
    it dies, so a killed build never leaves the folder locked.
    """
    import fcntl

    path = out / ".lock"
    with path.open("a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise OutputDirError(
                f"another build is running in {out} (pid {holder}); wait for it to finish, "
                "or build into another folder (-o)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
