"""What prefdelta owns in a publish target, and who may write to it.

A publish (Hub repo or folder) owns exactly the files listed in the target's manifest,
``.prefdelta-manifest.json``, which the publish itself writes: a later publish replaces or
removes only those. The manifest is read back from a file anyone could edit, so each entry
must be a relative posix path inside the target (no ``..``, no absolute path, no symlink out
of a folder); any other entry refuses the publish before anything is touched.

A folder has one publish at a time: :func:`publish_lock` holds an ``flock`` on
``.<name>.publish-lock`` beside the folder (not in it: the dataset stays clean; it is
removed again), and a second publish waits for it for a bounded time, then says who holds
it. A staged folder goes into
place in one rename (:func:`move_into_place`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from rich.console import Console

from prefdelta.files import atomic_write
from prefdelta.push.errors import PublishError
from prefdelta.schema import FOLDER_MANIFEST

__all__ = [
    "LOCK_WAIT_S",
    "manifest_bytes",
    "move_into_place",
    "parse_manifest",
    "publish_lock",
    "read_folder_manifest",
    "refuse_unowned",
    "shown",
    "write_folder_manifest",
]

# How long a publish waits for another publish to the same folder before giving up.
LOCK_WAIT_S = 600.0


def manifest_bytes(files: set[str] | dict[str, str]) -> bytes:
    """The manifest listing ``files``: the same files give the same bytes (so an unchanged
    republish changes nothing)."""
    return (json.dumps({"files": sorted(files)}, indent=1) + "\n").encode("utf-8")


def parse_manifest(text: str | bytes, where: str, target: str) -> set[str]:
    """The entries of the manifest ``where`` (as a user reads it) of ``target``, each one
    checked to be a relative posix path inside the target."""
    try:
        listed = json.loads(text)["files"]
        if not isinstance(listed, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise PublishError(
            f"{where} is not a prefdelta manifest (no list of files); remove it or choose "
            "another target"
        ) from None
    for entry in listed:
        if not _inside(entry):
            raise PublishError(
                f"{where} lists {entry!r}, which is not a relative path inside {target}; "
                "refusing to publish (nothing was changed): fix or remove that entry"
            )
    return set(listed)


def _inside(entry: object) -> bool:
    if not isinstance(entry, str) or not entry or "\\" in entry or "\0" in entry:
        return False
    path = PurePosixPath(entry)
    parts = entry.split("/")
    return (
        not path.is_absolute()
        and path.as_posix() == entry  # no "a//b", "./a", "a/"
        and ".." not in parts
        and "." not in parts
        and entry != FOLDER_MANIFEST
    )


def read_folder_manifest(root: Path) -> set[str] | None:
    """The files a publish (or a review pull) wrote into the folder ``root``, None when it
    has no manifest. An entry that resolves outside ``root`` (through a symlink) is refused."""
    path = root / FOLDER_MANIFEST
    if not path.is_file():
        return None
    listed = parse_manifest(path.read_bytes(), str(path), str(root))
    inside = root.resolve()
    for entry in sorted(listed):
        if not (root / entry).resolve().is_relative_to(inside):
            raise PublishError(
                f"{path} lists {entry!r}, which leads outside {root} through a symlink; "
                "refusing to publish (nothing was changed): fix or remove that entry"
            )
    return listed


def write_folder_manifest(root: Path, files: set[str] | dict[str, str]) -> None:
    """Write the manifest of ``root`` atomically."""
    atomic_write(root / FOLDER_MANIFEST, manifest_bytes(files))


def shown(paths: list[str], limit: int = 3) -> str:
    """The first ``limit`` of ``paths`` and how many more: for a one-line message."""
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def refuse_unowned(target: str, present: list[str]) -> PublishError:
    """The one refusal of a non-empty target holding no prefdelta manifest (Hub or folder)."""
    return PublishError(
        f"refusing to publish into {target}: it holds files ({shown(present)}) and no "
        f"{FOLDER_MANIFEST}, so prefdelta does not own any of them (a dataset an older "
        "prefdelta published has none either); choose another target, or pass --overwrite "
        "once to publish into it (files at the paths prefdelta writes are replaced, no other "
        "file is touched)"
    )


@contextmanager
def publish_lock(folder: Path, console: Console) -> Iterator[None]:
    """Hold the publish lock of ``folder`` (see the module docstring).

    ``flock``: the kernel drops it when the holder dies, however it dies, so a killed
    publish never leaves the folder locked. The holder removes the lock file before it
    lets go, and a publish that locked a file removed meanwhile locks the new one instead.
    """
    where = Path(os.path.abspath(folder))
    where.parent.mkdir(parents=True, exist_ok=True)
    path = where.parent / f".{where.name}.publish-lock"
    deadline = time.monotonic() + LOCK_WAIT_S
    said = False
    while True:
        f = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            if time.monotonic() >= deadline:
                raise PublishError(
                    f"another publish to {folder} (pid {holder}) still holds it after "
                    f"{LOCK_WAIT_S:.0f}s; rerun once it has finished"
                ) from None
            if not said:
                console.print(
                    f"waiting for another publish to {folder} (pid {holder}) to finish",
                    markup=False,
                    highlight=False,
                )
                said = True
            time.sleep(0.1)
            continue
        if _same_file(f, path):
            break
        f.close()  # its holder removed it before letting go: lock the current one
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _same_file(f: IO[str], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def move_into_place(staging: Path, target: Path) -> None:
    """Rename the staged folder to ``target``; an existing target is swapped out atomically
    where the OS can (Linux renameat2), else moved aside first. Readers see the old folder
    or the new one, never a mix."""
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        os.replace(staging, target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging)  # now holds the old content
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0
