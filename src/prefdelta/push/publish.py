"""Publish a build to the Hub (one atomic commit) or to a local folder (one atomic rename).

Nobody may ever see half a dataset. On the Hub every file of a publish goes in ONE
``create_commit`` against the head read just before (``parent_commit``), so a concurrent
writer is detected instead of overwritten. huggingface_hub retries uploads but never the
commit call itself, so :mod:`prefdelta.push.hub` does: after any failure it re-reads the head,
and if the repo already holds exactly our files (a commit that landed although its response
was lost), it stops there. Publishing an unchanged build again finds nothing to change and
makes no commit. A local folder is staged beside the target and renamed into place, under
a lock (:func:`prefdelta.push.target.publish_lock`): one publish to a folder at a time.

A publish owns exactly the files listed in the target's manifest (``.prefdelta-manifest.json``,
written by the publish itself: in the folder, or in the same commit on the Hub). It replaces
those, deletes those it no longer writes, and touches nothing else. A target without a
manifest owns nothing: unless it is empty (on the Hub: only what the Hub itself creates,
``.gitattributes``) it is refused in one line, and ``overwrite`` is the only way in: it says
which files at prefdelta's paths it replaces, replaces them, and deletes nothing. A target
whose manifest holds files prefdelta did not write at paths it writes is refused the same
way. In a folder that holds only prefdelta's files the staged folder is swapped in whole;
in one that also holds others (a user's notes) each file is replaced in place, each
atomically, the manifest last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from huggingface_hub import CommitOperation, CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError
from rich.console import Console

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
    read_hub_manifest,
    same_as_remote,
    short_error,
)
from prefdelta.push.layout import LayoutOptions, StagedLayout, stage_layout
from prefdelta.push.options import PublishOptions, publish_options
from prefdelta.push.reviews import carry_reviews, carry_reviews_from_hub
from prefdelta.push.target import (
    manifest_bytes,
    move_into_place,
    publish_lock,
    read_folder_manifest,
    refuse_unowned,
    shown,
    write_folder_manifest,
)
from prefdelta.schema import CARD, FOLDER_MANIFEST, REVIEWS, data_path
from prefdelta.scratch import make_scratch, remove_abandoned

__all__ = ["PublishResult", "publish_build"]

# What the Hub itself puts in a new repo: a repo holding only these is empty.
HUB_MADE = frozenset({".gitattributes"})


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


def publish_build(
    build_dir: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    private: bool | None = None,
    revision: str | None = None,
    tag: bool | None = None,
    test_size: float | None = None,
    console: Console | None = None,
    license: str | None = None,
    sort_by: str | None = None,
    overwrite: bool = False,
) -> PublishResult:
    """Publish the build in ``build_dir`` to a Hub dataset repo ``org/name`` or a folder.

    ``private``, ``revision`` and ``tag`` apply to the Hub only (given for a folder, they
    are refused); ``overwrite`` publishes into a target prefdelta does not own (see the
    module docstring). ``test_size`` holds out that fraction of prompts (all their pairs)
    as a ``test`` split. What is left out (None) comes from the recipe's ``publish``
    section, else the defaults (private, ``main``, tagged, apache-2.0, sorted by ``delta``).
    """
    console = console or Console(stderr=True)
    build = read_build(build_dir)
    options = publish_options(
        build.recipe.publish,
        target,
        private=private,
        revision=revision,
        tag=tag,
        license=license,
        sort_by=sort_by,
    )
    layout = LayoutOptions(test_size=test_size, license=options.license, sort_by=options.sort_by)
    if is_hub_target(target):
        return _publish_hub(build, str(target), options, layout, console, overwrite)
    return _publish_folder(build, Path(target), layout, console, overwrite)


# --------------------------------------------------------------------------- folder


def _publish_folder(
    build: Build, target: Path, options: LayoutOptions, console: Console, overwrite: bool
) -> PublishResult:
    if target.exists() and not target.is_dir():
        raise PublishError(f"{target} exists and is not a folder")
    _refuse_enclosing(build, target)
    with publish_lock(target, console):
        return _publish_folder_locked(build, target, options, console, overwrite)


def _publish_folder_locked(
    build: Build, target: Path, options: LayoutOptions, console: Console, overwrite: bool
) -> PublishResult:
    listed = read_folder_manifest(target)  # first: a bad manifest refuses before any work
    if listed is None and not overwrite and target.is_dir() and any(target.iterdir()):
        top = [p.name + ("/" if _is_real_dir(p) else "") for p in target.iterdir()]
        raise refuse_unowned(str(target), sorted(top))
    owned = {f for f in listed or () if (target / f).is_file()}
    beside = Path(os.path.abspath(target))
    remove_abandoned(f".{beside.name}.staging-", beside.parent)  # a killed publish's
    staging = make_scratch(f".{beside.name}.staging-", beside.parent)
    try:
        staged = stage_layout(build, staging, options=options, dataset_ref=str(target))
        reviews = data_path(REVIEWS, "train")
        if {CARD, reviews} <= owned:
            card = (target / CARD).read_text(encoding="utf-8")
            staged = carry_reviews(staged, card, target / reviews, console)
        result = PublishResult(
            target=str(target),
            kind="folder",
            changed=True,
            publish_id=staged.publish_id,
            splits=staged.splits,
            traces=staged.traces,
            files=tuple(staged.files),
        )
        if owned and {p: sha256_file(target / p) for p in owned} == staged.files:
            console.print(f"{target} already holds this build; nothing to do")
            return replace(result, changed=False)
        others = sorted(_entries(target) - owned - _parents(owned) - {FOLDER_MANIFEST})
        in_the_way = _in_the_way(target, others, staged.files)
        if in_the_way and not overwrite:
            raise PublishError(
                f"refusing to publish into {target}: it holds files prefdelta did not write "
                f"({shown(in_the_way)}) where a publish writes; choose another folder, or pass "
                "--overwrite to replace them (no other file is touched)"
            )
        if in_the_way:
            console.print(
                f"replacing {len(in_the_way)} file(s) prefdelta did not write in {target}: "
                f"{shown(in_the_way, 10)}"
            )
        write_folder_manifest(staging, staged.files)
        if not others:
            move_into_place(staging, beside)
        else:
            stale = owned - set(staged.files)
            _replace_in_place(staging, target, staged.files, stale, in_the_way)
            kept = [o for o in others if o not in in_the_way]
            if kept:
                console.print(f"kept what prefdelta did not write in {target}: {shown(kept, 10)}")
        console.print(f"published {_describe(staged)} to {target}")
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _in_the_way(target: Path, others: list[str], files: dict[str, str]) -> list[str]:
    """The user's entries where this publish writes: at a file's path, or where it needs a
    folder (a file or a link). A non-empty folder at a file's path is refused outright."""
    for path in files:
        where = target / path
        if _is_real_dir(where) and any(where.iterdir()):
            raise PublishError(
                f"refusing to publish into {target}: {path} is a folder holding files where "
                "a publish writes a file; move it away first"
            )
    parents = _parents(files)
    return [
        p
        for p in others
        if p in files or (p in parents and ((target / p).is_symlink() or (target / p).is_file()))
    ]


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _refuse_enclosing(build: Build, target: Path) -> None:
    """A publish target may not be, or hold, the build folder it publishes."""
    source, dest = build.path.resolve(), target.resolve()
    if source == dest or dest in source.parents:
        raise PublishError(
            f"refusing to publish {build.path} into {target}, which holds it; "
            "publish to a folder of its own"
        )


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


def _replace_in_place(
    staging: Path, target: Path, files: dict[str, str], stale: set[str], in_the_way: list[str]
) -> None:
    """Move each staged file over its target path (one rename each), after removing what
    is in the way of a rename (``overwrite`` said so); remove the files a previous publish
    wrote that this one does not, and write the manifest last."""
    for name in in_the_way:
        where = target / name
        if where.is_symlink() or where.is_file():
            if (
                name not in files
            ):  # a file where a folder goes; one at a file's path is renamed over
                where.unlink()
        elif where.is_dir():  # an empty folder
            where.rmdir()
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


# --------------------------------------------------------------------------- Hub


def _publish_hub(
    build: Build,
    repo_id: str,
    publish: PublishOptions,
    options: LayoutOptions,
    console: Console,
    overwrite: bool,
) -> PublishResult:
    api = HfApi()
    revision = publish.revision or "main"
    with tempfile.TemporaryDirectory(prefix="prefdelta-publish-") as tmp:
        staged = stage_layout(build, Path(tmp) / "layout", options=options, dataset_ref=repo_id)
        try:
            url = call(
                "create the repo",
                lambda: api.create_repo(
                    repo_id, repo_type=REPO_TYPE, private=bool(publish.private), exist_ok=True
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
        owned = read_hub_manifest(api, repo_id, start, at_start)
        _foreign(staged, owned, at_start, overwrite, repo_id)  # refused before any upload
        reviews = {CARD, data_path(REVIEWS, "train")}
        if reviews <= set(at_start) and (owned is None or reviews <= owned):
            staged = carry_reviews_from_hub(staged, api, repo_id, start, console)
        (Path(tmp) / FOLDER_MANIFEST).write_bytes(manifest_bytes(staged.files))
        title = f"Publish {build.recipe.name} (recipe {build.recipe_hash[:12]})"
        description = (
            f"prefdelta-publish-id: {staged.publish_id}\n"
            f"recipe-hash: {build.recipe_hash}\n"
            f"splits: {json.dumps(staged.splits)}"
        )

        def plan(head: str, remote: RemoteFiles, attempt: int) -> list[CommitOperation]:
            owned = read_hub_manifest(api, repo_id, head, remote)
            adds, deletes, replaced = _hub_changes(
                staged, Path(tmp), owned, remote, overwrite, repo_id
            )
            if not adds and not deletes:
                return []
            if replaced:
                console.print(
                    f"replacing {len(replaced)} file(s) prefdelta did not write in {repo_id}: "
                    f"{shown(replaced, 10)}"
                )
            console.print(
                f"committing {len(adds)} file(s), deleting {len(deletes)} stale file(s) "
                f"to {repo_id}@{revision}" + (f" (attempt {attempt + 1})" if attempt else "")
            )
            return [
                CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(_local(staged, tmp, p)))
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
        if publish.tag:
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


def _hub_changes(
    staged: StagedLayout,
    tmp: Path,
    owned: set[str] | None,
    remote: RemoteFiles,
    overwrite: bool,
    repo_id: str,
) -> tuple[list[str], list[str], list[str]]:
    """Against the repo files ``remote`` whose manifest lists ``owned`` (None: it has no
    manifest): the files to upload, the files to delete (listed, and no longer written)
    and the files prefdelta did not write that the upload replaces. A target prefdelta
    does not own is refused here, unless ``overwrite``."""
    foreign = _foreign(staged, owned, remote, overwrite, repo_id)
    adds = [
        path
        for path in [*staged.files, FOLDER_MANIFEST]
        if not same_as_remote(remote.get(path), _local(staged, tmp, path), staged.files.get(path))
    ]
    deletes = sorted(p for p in owned or () if p in remote and p not in staged.files)
    return adds, deletes, [p for p in foreign if p in adds]


def _foreign(
    staged: StagedLayout,
    owned: set[str] | None,
    remote: RemoteFiles,
    overwrite: bool,
    repo_id: str,
) -> list[str]:
    """The files prefdelta did not write at the paths this publish writes; a repo it does
    not own, or such files, are refused unless ``overwrite``."""
    if owned is None and set(remote) - HUB_MADE and not overwrite:
        raise refuse_unowned(repo_id, sorted(set(remote) - HUB_MADE))
    foreign = [p for p in staged.files if p in remote and p not in (owned or ())]
    if foreign and owned is not None and not overwrite:
        raise PublishError(
            f"refusing to publish into {repo_id}: it holds files prefdelta did not write "
            f"({shown(foreign)}) where a publish writes; publish to another repo, or pass "
            "--overwrite to replace them (no other file is touched)"
        )
    return foreign


def _local(staged: StagedLayout, tmp: Path | str, path: str) -> Path:
    """Where the file ``path`` of this publish is staged (the manifest beside the layout)."""
    return Path(tmp) / FOLDER_MANIFEST if path == FOLDER_MANIFEST else staged.root / path


def _describe(staged: StagedLayout) -> str:
    splits = ", ".join(f"{n} {s}" for s, n in staged.splits.items())
    return f"pairs ({splits}) and {staged.traces} traces"
