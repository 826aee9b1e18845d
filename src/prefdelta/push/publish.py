"""Publish a build to the Hub (one atomic commit) or to a local folder (one atomic rename).

Nobody may ever see half a dataset. On the Hub every file of a publish goes in ONE
``create_commit`` against the head read just before (``parent_commit``), so a concurrent
writer is detected instead of overwritten. huggingface_hub retries uploads but never the
commit call itself, so :mod:`prefdelta.push.hub` does: after any failure it re-reads the head,
and if the repo already holds exactly our files (a commit that landed although its response
was lost), it stops there. Publishing an unchanged build again finds nothing to change and
makes no commit. A local folder is staged beside the target and renamed into place.

A folder publish owns exactly the files it writes, listed in the folder's manifest
(``.prefdelta-manifest.json``): it replaces or removes only those. A folder that holds
nothing else is swapped whole (atomic); one that also holds other files (a user's notes
beside a published dataset) has each of its own files replaced in place, each atomically,
the manifest last, and the other files are left as they are. A folder that holds files
prefdelta did not write at paths it would write, or that is not a published dataset at
all, is refused unless ``overwrite`` says to publish into it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from huggingface_hub import CommitOperation, CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError
from rich.console import Console

from prefdelta.locations import is_hub_id, is_local_path
from prefdelta.push.build_folder import Build, read_build, sha256_file
from prefdelta.push.errors import PublishError
from prefdelta.push.hub import (
    REPO_TYPE,
    RemoteFiles,
    call,
    commit_on_head,
    ensure_tag,
    is_hub_target,
    read_head,
    same_as_remote,
    short_error,
)
from prefdelta.push.layout import (
    LayoutOptions,
    StagedLayout,
    is_managed,
    read_folder_manifest,
    stage_layout,
    write_folder_manifest,
)
from prefdelta.push.options import publish_options
from prefdelta.push.reviews import carry_reviews
from prefdelta.schema import CARD, FOLDER_MANIFEST, REVIEWS, data_path
from prefdelta.scratch import make_scratch, remove_abandoned

# REPO_TYPE and is_hub_target were defined here; review/push.py still imports them from here
# (they go from this module when it imports them from prefdelta.push.hub).
__all__ = ["REPO_TYPE", "PublishResult", "is_hub_target", "owned_files", "publish_build"]


@dataclass(frozen=True)
class PublishResult:
    """What a publish did. ``changed`` is False when the target already held this build."""

    target: str
    kind: Literal["hub", "folder"]
    changed: bool
    publish_id: str
    splits: dict[str, int]
    traces: int
    files: tuple[str, ...]
    commit: str | None = None  # Hub: the commit that holds the dataset
    tag: str | None = None  # Hub: the recipe tag, when it points at `commit`
    url: str | None = None
    recovered: bool = False  # a commit landed although its response was lost
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _check_target(target: str | os.PathLike[str]) -> None:
    """A target given as text must be a Hub repo id (``org/name``) or a path that says it
    is one (``./x``, ``../x``, ``/x``, ``~/x``, or a folder that exists): a typo such as
    ``bad id/with space`` or ``a/b/c`` must not silently become a local folder."""
    if is_local_path(target) or is_hub_id(target):
        return
    text = str(target)
    raise PublishError(
        f"publish target {text!r} is neither a Hub repo id (org/name) nor a folder path "
        "(./name, /path); write ./ before a local folder"
    )


def publish_build(
    build_dir: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    private: bool = True,
    revision: str = "main",
    tag: bool = True,
    test_size: float | None = None,
    console: Console | None = None,
    license: str | None = None,
    sort_by: str | None = None,
    overwrite: bool = False,
) -> PublishResult:
    """Publish the build in ``build_dir`` to a Hub dataset repo ``org/name`` or a folder.

    ``private``, ``revision`` and ``tag`` apply to the Hub only; ``overwrite`` to a folder
    that holds files prefdelta did not write (see the module docstring). ``test_size`` holds out that
    fraction of prompts (all their pairs) as a ``test`` split. ``license`` and ``sort_by``
    (the delta column pairs are stored by, highest first) default to the recipe's
    ``publish`` section (else apache-2.0 and ``delta``).
    """
    console = console or Console(stderr=True)
    _check_target(target)
    build = read_build(build_dir)
    recorded = publish_options(build.recipe.publish, license=license, sort_by=sort_by)
    options = LayoutOptions(test_size=test_size, license=recorded.license, sort_by=recorded.sort_by)
    if is_hub_target(target):
        return _publish_hub(build, str(target), private, revision, tag, options, console)
    return _publish_folder(build, Path(target), options, console, overwrite)


# --------------------------------------------------------------------------- folder


def _publish_folder(
    build: Build, target: Path, options: LayoutOptions, console: Console, overwrite: bool
) -> PublishResult:
    if target.exists() and not target.is_dir():
        raise PublishError(f"{target} exists and is not a folder")
    _refuse_enclosing(build, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(f".{target.name}.staging-", target.parent)  # a killed publish's
    staging = make_scratch(f".{target.name}.staging-", target.parent)
    try:
        staged = stage_layout(build, staging, options=options, dataset_ref=str(target))
        owned = owned_files(target)
        if owned:
            staged = _keep_reviews_from_folder(staged, target, console)
        result = PublishResult(
            target=str(target),
            kind="folder",
            changed=True,
            publish_id=staged.publish_id,
            splits=staged.splits,
            traces=staged.traces,
            files=tuple(staged.files),
        )
        present = _entries(target)
        others = sorted(present - owned - _parents(owned) - {FOLDER_MANIFEST})
        if owned and {p: sha256_file(target / p) for p in owned} == staged.files:
            console.print(f"{target} already holds this build; nothing to do")
            return replace(result, changed=False)
        in_the_way = [p for p in others if p in staged.files or p in _parents(staged.files)]
        if not overwrite and (in_the_way or (others and not owned)):
            listed = in_the_way or others
            shown = ", ".join(listed[:3]) + (
                f" and {len(listed) - 3} more" if len(listed) > 3 else ""
            )
            why = "where a publish writes" if in_the_way else "and is not a published dataset"
            raise PublishError(
                f"refusing to publish into {target}: it holds files prefdelta did not write "
                f"({shown}) {why}; choose another folder, or pass --overwrite to publish "
                "into it (files at the paths it writes are replaced, all others kept)"
            )
        write_folder_manifest(staging, staged.files)
        if not others:
            _move_into_place(staging, target)
        else:
            _replace_in_place(staging, target, staged.files, stale=owned - set(staged.files))
            kept = [o for o in others if o not in in_the_way]
            if kept:
                more = f" and {len(kept) - 10} more" if len(kept) > 10 else ""
                console.print(
                    f"kept what prefdelta did not write in {target}: {', '.join(kept[:10])}{more}"
                )
        console.print(f"published {_describe(staged)} to {target}")
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _refuse_enclosing(build: Build, target: Path) -> None:
    """A publish target may not be, or hold, the build folder it publishes."""
    source, dest = build.path.resolve(), target.resolve()
    if source == dest or dest in source.parents:
        raise PublishError(
            f"refusing to publish {build.path} into {target}, which holds it; "
            "publish to a folder of its own"
        )


def owned_files(root: Path) -> set[str]:
    """The files a previous publish wrote into ``root``: its manifest, or, for a folder
    published before manifests existed, the layout's own paths."""
    listed = read_folder_manifest(root)
    if listed is not None:
        return {f for f in listed if (root / f).is_file()}
    if _looks_published(root):
        return {p for p in _entries(root) if is_managed(p) and (root / p).is_file()}
    return set()


def _entries(root: Path) -> set[str]:
    """Every file, link and empty folder under ``root``, as relative posix paths."""
    if not root.is_dir():
        return set()
    out = set()
    for path in root.rglob("*"):
        if path.is_symlink() or path.is_file() or (path.is_dir() and not any(path.iterdir())):
            out.add(path.relative_to(root).as_posix())
    return out


def _parents(paths: set[str] | dict[str, str]) -> set[str]:
    return {p.rsplit("/", k)[0] for p in paths for k in range(1, p.count("/") + 1)}


def _replace_in_place(staging: Path, target: Path, files: dict[str, str], stale: set[str]) -> None:
    """Move each staged file over its target path (one rename each), remove the files a
    previous publish wrote that this one does not, and write the manifest last."""
    for name in files:
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, dest)
    for name in stale:
        (target / name).unlink(missing_ok=True)
        for parent in (target / name).parents:
            if parent == target or any(parent.iterdir()):
                break
            parent.rmdir()
    os.replace(staging / FOLDER_MANIFEST, target / FOLDER_MANIFEST)


def _keep_reviews_from_folder(staged: StagedLayout, target: Path, console: Console) -> StagedLayout:
    reviews = target / data_path(REVIEWS, "train")
    card = target / CARD
    if not reviews.is_file() or not card.is_file():
        return staged
    return carry_reviews(staged, card.read_text(encoding="utf-8"), reviews, console)


def _keep_reviews_from_hub(
    staged: StagedLayout, api: HfApi, repo_id: str, commit: str, console: Console
) -> StagedLayout:
    with tempfile.TemporaryDirectory(prefix="prefdelta-old-reviews-") as tmp:
        paths = {
            name: call(
                f"download the published {name}",
                lambda name=name: api.hf_hub_download(
                    repo_id, name, repo_type=REPO_TYPE, revision=commit, local_dir=tmp
                ),
            )
            for name in (CARD, data_path(REVIEWS, "train"))
        }
        card = Path(paths[CARD]).read_text(encoding="utf-8")
        return carry_reviews(staged, card, Path(paths[data_path(REVIEWS, "train")]), console)


def _looks_published(root: Path) -> bool:
    return all((root / name).exists() for name in ("README.md", "recipe.yaml", "data"))


def _move_into_place(staging: Path, target: Path) -> None:
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


# --------------------------------------------------------------------------- Hub


def _publish_hub(
    build: Build,
    repo_id: str,
    private: bool,
    revision: str,
    tag: bool,
    options: LayoutOptions,
    console: Console,
) -> PublishResult:
    api = HfApi()
    with tempfile.TemporaryDirectory(prefix="prefdelta-publish-") as tmp:
        staged = stage_layout(build, Path(tmp), options=options, dataset_ref=repo_id)
        try:
            url = call(
                "create the repo",
                lambda: api.create_repo(
                    repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True
                ),
            )
        except HfHubHTTPError as exc:
            raise PublishError(
                f"cannot create or reach {repo_id} on the Hub: {short_error(exc)}"
            ) from None
        if revision != "main":
            try:
                call("read the branch", lambda: read_head(api, repo_id, revision))
            except RevisionNotFoundError:
                call(
                    "create the branch",
                    lambda: api.create_branch(
                        repo_id, branch=revision, repo_type=REPO_TYPE, exist_ok=True
                    ),
                )

        start, at_start = call("read the head", lambda: read_head(api, repo_id, revision))
        if data_path(REVIEWS, "train") in at_start and "README.md" in at_start:
            staged = _keep_reviews_from_hub(staged, api, repo_id, start, console)
        title = f"Publish {build.recipe.name} (recipe {build.recipe_hash[:12]})"
        description = (
            f"prefdelta-publish-id: {staged.publish_id}\n"
            f"recipe-hash: {build.recipe_hash}\n"
            f"splits: {json.dumps(staged.splits)}"
        )

        def plan(_: str, remote: RemoteFiles, attempt: int) -> list[CommitOperation]:
            adds, deletes = _diff(staged, remote)
            if not adds and not deletes:
                return []
            console.print(
                f"committing {len(adds)} file(s), deleting {len(deletes)} stale file(s) "
                f"to {repo_id}@{revision}" + (f" (attempt {attempt + 1})" if attempt else "")
            )
            return [
                CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(staged.root / p))
                for p in adds
            ] + [CommitOperationDelete(path_in_repo=p) for p in deletes]

        commit, changed = commit_on_head(
            api,
            repo_id,
            revision,
            plan,
            message=title,
            description=description,
            failed="the repo is unchanged or holds a complete earlier version, never a "
            "partial one: rerun to retry",
        )
        # nothing to commit, yet the head moved: our content is there (a lost response,
        # or an identical publish)
        recovered = not changed and commit != start
        changed = changed or recovered

        warnings: list[str] = []
        tag_name: str | None = None
        if tag:
            tag_name, warning = ensure_tag(api, repo_id, f"recipe-{build.recipe_hash[:12]}", commit)
            if warning:
                warnings.append(warning)
                console.print(f"warning: {warning}")
        verb = "published" if changed else "unchanged:"
        console.print(f"{verb} {_describe(staged)} at {repo_id}@{commit[:12]}")
        return PublishResult(
            target=repo_id,
            kind="hub",
            changed=changed,
            publish_id=staged.publish_id,
            splits=staged.splits,
            traces=staged.traces,
            files=tuple(staged.files),
            commit=commit,
            tag=tag_name,
            url=str(url),
            recovered=recovered,
            warnings=tuple(warnings),
        )


def _diff(staged: StagedLayout, remote: RemoteFiles) -> tuple[list[str], list[str]]:
    """Files to upload (new or different) and managed files to delete (no longer ours)."""
    adds = [
        path
        for path, sha256 in staged.files.items()
        if not same_as_remote(remote.get(path), staged.root / path, sha256)
    ]
    deletes = sorted(p for p in remote if is_managed(p) and p not in staged.files)
    return adds, deletes


def _describe(staged: StagedLayout) -> str:
    splits = ", ".join(f"{n} {s}" for s, n in staged.splits.items())
    return f"pairs ({splits}) and {staged.traces} traces"
