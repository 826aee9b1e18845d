"""The Hub transport of publishing: retried calls, the remote files, commits on the head.

huggingface_hub retries uploads but never the commit call itself, so this module does:
:func:`commit_on_head` reads the head, asks for the operations against it and commits them
with that head as ``parent_commit``, so a concurrent writer is detected instead of
overwritten, and after any failure it reads the head and plans again (a commit that landed
although its response was lost then leaves nothing to do). Both the build publish
(:mod:`prefdelta.push.publish`) and the reviews publish (:mod:`prefdelta.push.reviews`)
commit through it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
from huggingface_hub import CommitOperation, HfApi
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from prefdelta.locations import is_hub_id
from prefdelta.push.build_folder import sha256_file
from prefdelta.push.errors import PublishError
from prefdelta.push.target import parse_manifest
from prefdelta.schema import FOLDER_MANIFEST, REPO_TYPE

__all__ = [
    "CALL_ATTEMPTS",
    "COMMIT_ATTEMPTS",
    "RemoteFiles",
    "call",
    "commit_on_head",
    "ensure_tag",
    "is_hub_target",
    "read_head",
    "read_hub_manifest",
    "same_as_remote",
    "short_error",
]

T = TypeVar("T")
# A repo's files at one commit: path -> (sha256 if LFS else git blob id, is LFS).
RemoteFiles = dict[str, tuple[str, bool]]
# Attempts for one Hub call that fails with a 5xx or a dropped connection; the commit loop
# has its own budget since each round re-reads the head first.
CALL_ATTEMPTS = 8
COMMIT_ATTEMPTS = 8


def is_hub_target(target: str | os.PathLike[str]) -> bool:
    """A publish target is a Hub repo exactly when :func:`is_hub_id` says so."""
    return is_hub_id(target)


def _retryable(exc: BaseException) -> bool:
    """5xx answers and broken connections: the request may or may not have been applied."""
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status is None or status >= 500
    if isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ is not None:
        return _retryable(exc.__cause__)  # hf_hub_download gave up on a 5xx or a drop
    return isinstance(exc, httpx.TransportError | json.JSONDecodeError)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _backoff(attempt: int) -> None:
    time.sleep(min(0.2 * 2**attempt, 4.0) * (0.5 + random.random() / 2))


def call(what: str, fn: Callable[[], T], attempts: int = CALL_ATTEMPTS) -> T:
    """Run one Hub call, retrying on 5xx and connection errors (the client does not)."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not _retryable(exc):
                raise
            if attempt == attempts - 1:
                raise PublishError(
                    f"could not {what} after {attempts} attempts: {short_error(exc)}"
                ) from None
            _backoff(attempt)
    raise AssertionError("unreachable")


def _git_blob_oid(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_head(api: HfApi, repo_id: str, revision: str) -> tuple[str, RemoteFiles]:
    """The head commit of ``revision`` and its files: path -> (sha256 if LFS else git oid, lfs)."""
    info = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision, files_metadata=True)
    files: RemoteFiles = {}
    for sib in info.siblings or []:
        if sib.lfs is not None:
            files[sib.rfilename] = (sib.lfs.sha256, True)
        else:
            files[sib.rfilename] = (sib.blob_id or "", False)
    assert info.sha is not None
    return info.sha, files


def read_hub_manifest(
    api: HfApi, repo_id: str, commit: str, remote: RemoteFiles
) -> set[str] | None:
    """The files the manifest at ``commit`` says prefdelta wrote; None when it has none."""
    if FOLDER_MANIFEST not in remote:
        return None
    path = call(
        f"download {FOLDER_MANIFEST}",
        lambda: api.hf_hub_download(repo_id, FOLDER_MANIFEST, repo_type=REPO_TYPE, revision=commit),
    )
    where = f"{FOLDER_MANIFEST} of {repo_id}@{commit[:12]}"
    return parse_manifest(Path(path).read_bytes(), where, repo_id)


def same_as_remote(have: tuple[str, bool] | None, local: Path, sha256: str | None = None) -> bool:
    """Whether the repo file ``have`` (``(oid, is_lfs)`` from :func:`read_head`) is ``local``.

    LFS files are named by their sha256, plain ones by their git blob id.
    """
    if have is None:
        return False
    oid, lfs = have
    if lfs:
        return oid == (sha256 or sha256_file(local))
    return oid == _git_blob_oid(local)


def commit_on_head(
    api: HfApi,
    repo_id: str,
    revision: str,
    plan: Callable[[str, RemoteFiles, int], list[CommitOperation]],
    *,
    message: str,
    failed: str,
    description: str | None = None,
) -> tuple[str, bool]:
    """Commit what ``plan`` asks for on top of the head it was shown; ``(commit, committed)``.

    Each attempt reads the head, asks ``plan(head, remote files, attempt)`` for the operations
    (none: nothing to do, the head is returned) and commits them with that head as parent,
    so a concurrent commit (412) or a transient failure means reading and planning again,
    never committing over what someone else wrote. After ``COMMIT_ATTEMPTS`` the error
    ends with ``failed``, which says what state the repo is in.
    """
    last_error: BaseException | None = None
    for attempt in range(COMMIT_ATTEMPTS):
        head, remote = call("read the head", lambda: read_head(api, repo_id, revision))
        operations = plan(head, remote, attempt)
        if not operations:
            return head, False
        try:
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=message,
                commit_description=description,
                repo_type=REPO_TYPE,
                revision=revision,
                parent_commit=head,
            )
        except Exception as exc:
            # 412: someone committed since we read the head. Either way, re-read and decide.
            if not (_retryable(exc) or _status(exc) == 412):
                raise PublishError(f"commit to {repo_id} failed: {short_error(exc)}") from None
            last_error = exc
            _backoff(attempt)
            continue
        return info.oid, True
    raise PublishError(
        f"commit to {repo_id} failed after {COMMIT_ATTEMPTS} attempts "
        f"({short_error(last_error)}); {failed}"
    )


def ensure_tag(api: HfApi, repo_id: str, name: str, commit: str) -> tuple[str | None, str | None]:
    """Tag ``commit``; an existing tag elsewhere is reported, never moved."""

    def existing() -> str | None:
        refs = api.list_repo_refs(repo_id, repo_type=REPO_TYPE)
        return next((t.target_commit for t in refs.tags if t.name == name), None)

    current = call("read the tags", existing)
    if current is None:
        try:
            call(
                "create the tag",
                lambda: api.create_tag(repo_id, tag=name, revision=commit, repo_type=REPO_TYPE),
            )
            return name, None
        except Exception as exc:
            if _status(exc) != 409:  # 409: it exists now (perhaps our own lost response)
                raise PublishError(
                    f"tagging {commit[:12]} as {name} failed: {short_error(exc)}"
                ) from None
            current = call("read the tags", existing)
    if current == commit:
        return name, None
    return None, (
        f"tag {name} already marks commit {str(current)[:12]}, an earlier publish of the same "
        f"recipe with different content; it was left there (this publish is {commit[:12]}). "
        f"Delete the tag and republish to move it."
    )


def short_error(exc: BaseException | None) -> str:
    """An exception as one line of at most 200 characters."""
    if exc is None:
        return "no error recorded"
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."
