"""Temporary folders that a killed process cannot leave behind for good.

A build, a publish or a model conversion killed with ``kill -9`` cannot clean up after
itself. Each of their temporary folders is named ``<prefix><host>-<pid>-<random>``, so the
next run of the same kind recognises the folders whose process is gone (on this host) and
removes them, while folders of a run still going are left alone.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

__all__ = ["make_scratch", "pid_alive", "remove_abandoned"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def make_scratch(prefix: str, dir: str | os.PathLike[str] | None = None) -> Path:
    """A new temporary folder named after this host and process (see the module docstring)."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{socket.gethostname()}-{os.getpid()}-", dir=dir))


def remove_abandoned(prefix: str, dir: str | os.PathLike[str] | None = None) -> int:
    """Remove the folders under ``dir`` (default: the temp dir) made by :func:`make_scratch`
    with ``prefix`` whose process on this host has ended; return how many."""
    root = Path(dir) if dir is not None else Path(tempfile.gettempdir())
    host = socket.gethostname()
    removed = 0
    for folder in root.glob(f"{prefix}*"):
        rest = folder.name[len(prefix) :]
        parts = rest.split("-")  # <host>-<pid>-<random>; a host name may hold dashes
        try:
            pid = int(parts[-2])
        except (IndexError, ValueError):
            continue
        if "-".join(parts[:-2]) == host and not pid_alive(pid) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
