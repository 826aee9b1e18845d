"""Add human reviews to an already published dataset: a ``reviews`` config and a card section.

Reviews arrive after the build was published, so this edits a published dataset in place
instead of re-staging the build: it writes ``data/reviews/train-00000-of-00001.parquet``,
declares the ``reviews`` config in the card's ``configs:`` block (keeping ``pairs`` the
default) and puts the agreement section between two markers, replacing the previous one.
Everything else in the repo or folder is left as it is.

On the Hub both files go in one commit against the head read just before (retried after a
concurrent commit or a 5xx, and skipped when nothing changed), like ``publish_build``, with
the repo's manifest listing the reviews file when it does not yet (so a republish may
replace or delete it). In a folder, under the same lock as a publish, the parquet file is
replaced first and the card second, each atomically: a reader may briefly see new reviews
under the old card, never a card that names missing data.

``publish_build`` rewrites the whole layout; it keeps the reviews through
:func:`carry_reviews` while every reviewed pair is still published.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import (
    CommitOperation,
    CommitOperationAdd,
    DatasetCard,
    HfApi,
    hf_hub_download,
)
from rich.console import Console

from prefdelta.files import atomic_write
from prefdelta.push.build_folder import sha256_file
from prefdelta.push.card import REVIEWS_SECTION_END, REVIEWS_SECTION_START, reviews_config
from prefdelta.push.errors import PublishError
from prefdelta.push.hub import (
    REPO_TYPE,
    RemoteFiles,
    call,
    commit_on_head,
    is_hub_target,
    read_hub_manifest,
    same_as_remote,
)
from prefdelta.push.layout import StagedLayout, manifest, write_table
from prefdelta.push.target import (
    manifest_bytes,
    publish_lock,
    read_folder_manifest,
    write_folder_manifest,
)
from prefdelta.schema import CARD, FOLDER_MANIFEST, PAIRS, REVIEWS, data_path

# Where the section goes in a card that has none yet: before the column reference.
_INSERT_BEFORE = "\n## Columns of `pairs`"


@dataclass(frozen=True)
class ReviewsPublishResult:
    target: str
    kind: str  # "hub" or "folder"
    changed: bool
    rows: int
    commit: str | None = None


def with_reviews(card_text: str, section: str) -> str:
    """The card with the ``reviews`` config declared and ``section`` in place of the old one."""
    card = DatasetCard(card_text)
    configs = list(card.data.to_dict().get("configs") or [])
    if not any(c.get("config_name") == PAIRS for c in configs):
        raise PublishError("the dataset card declares no `pairs` config: not a prefdelta dataset")
    configs = [c for c in configs if c.get("config_name") != REVIEWS] + [reviews_config()]
    card.data.configs = configs
    block = f"{REVIEWS_SECTION_START}\n{section.strip()}\n{REVIEWS_SECTION_END}\n"
    text = card.text
    if REVIEWS_SECTION_START in text and REVIEWS_SECTION_END in text:
        head, rest = text.split(REVIEWS_SECTION_START, 1)
        tail = rest.split(REVIEWS_SECTION_END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    elif _INSERT_BEFORE in text:
        head, tail = text.split(_INSERT_BEFORE, 1)
        text = head.rstrip("\n") + "\n\n" + block + _INSERT_BEFORE + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block
    card.text = text
    return str(card)


def publish_reviews(
    target: str | os.PathLike[str],
    table: pa.Table,
    section: str,
    *,
    source: str | os.PathLike[str] | None = None,
    revision: str = "main",
    console: Console | None = None,
) -> ReviewsPublishResult:
    """Write ``table`` as the ``reviews`` config of the dataset at ``target`` (Hub or folder).

    A ``target`` folder that does not exist yet (or is empty) first receives a copy of the
    published dataset ``source`` (a folder, or a Hub dataset downloaded), so the reviews
    land beside the pairs they are about and the folder loads like any published one.
    """
    console = console or Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="prefdelta-reviews-") as tmp:
        parquet = Path(tmp) / "reviews.parquet"
        write_table(table, parquet)
        if is_hub_target(target):
            return _to_hub(str(target), parquet, table.num_rows, section, revision, console)
        root = Path(target).expanduser()
        with publish_lock(root, console):
            if source is not None and (not root.exists() or not any(root.iterdir())):
                _copy_dataset(source, root, console)
            return _to_folder(root, parquet, table.num_rows, section, console)


def _copy_dataset(source: str | os.PathLike[str], root: Path, console: Console) -> None:
    """The published files of ``source`` (its manifest's, for a folder) into ``root``."""
    if is_hub_target(source):
        from huggingface_hub import snapshot_download

        call(
            f"download {source}",
            lambda: snapshot_download(str(source), repo_type=REPO_TYPE, local_dir=str(root)),
        )
        shutil.rmtree(root / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
    else:
        folder = Path(source).expanduser()
        owned = read_folder_manifest(folder)
        if owned is None:  # published before folders had a manifest: all of it
            shutil.copytree(folder, root, dirs_exist_ok=True)
        else:
            for rel in sorted(owned):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / rel, root / rel)
            write_folder_manifest(root, owned)
    console.print(f"copied {source} to {root} to hold its reviews")


def _to_folder(
    root: Path, parquet: Path, rows: int, section: str, console: Console
) -> ReviewsPublishResult:
    root = root.expanduser()
    card_path = root / CARD
    if not card_path.is_file() or not (root / "data" / PAIRS).is_dir():
        raise PublishError(f"{root} is not a published prefdelta dataset (no {CARD} and data/)")
    card = with_reviews(card_path.read_text(encoding="utf-8"), section)
    dest = root / data_path(REVIEWS, "train")
    same_data = dest.is_file() and sha256_file(dest) == sha256_file(parquet)
    same_card = card_path.read_text(encoding="utf-8") == card
    if same_data and same_card:
        console.print(f"{root} already holds these reviews; nothing to do")
        return ReviewsPublishResult(str(root), "folder", False, rows)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, parquet.read_bytes())
    atomic_write(card_path, card.encode("utf-8"))
    owned = read_folder_manifest(root)
    if owned is not None:  # the reviews are prefdelta's too: a republish may replace them
        write_folder_manifest(root, owned | {data_path(REVIEWS, "train")})
    console.print(f"published {rows} review(s) to {root}")
    return ReviewsPublishResult(str(root), "folder", True, rows)


def _to_hub(
    repo_id: str, parquet: Path, rows: int, section: str, revision: str, console: Console
) -> ReviewsPublishResult:
    api = HfApi()
    path_in_repo = data_path(REVIEWS, "train")

    def plan(head: str, remote: RemoteFiles, _: int) -> list[CommitOperation]:
        if CARD not in remote:
            raise PublishError(f"{repo_id} has no {CARD}: not a published prefdelta dataset")
        old_card = Path(
            call(
                "download the card",
                lambda: hf_hub_download(repo_id, CARD, repo_type=REPO_TYPE, revision=head),
            )
        ).read_text(encoding="utf-8")
        card = with_reviews(old_card, section)
        operations: list[CommitOperation] = []
        if not same_as_remote(remote.get(path_in_repo), parquet):
            operations.append(CommitOperationAdd(path_in_repo, str(parquet)))
        if card != old_card:
            operations.append(CommitOperationAdd(CARD, card.encode("utf-8")))
        owned = read_hub_manifest(api, repo_id, head, remote)
        if operations and owned is not None and path_in_repo not in owned:
            # the reviews are prefdelta's too: a republish may replace or delete them
            listed = manifest_bytes(owned | {path_in_repo})
            operations.append(CommitOperationAdd(FOLDER_MANIFEST, listed))
        return operations

    commit, committed = commit_on_head(
        api,
        repo_id,
        revision,
        plan,
        message=f"Add {rows} human review(s) from Argilla",
        failed="the repo is unchanged: rerun to retry",
    )
    if not committed:
        console.print(f"{repo_id} already holds these reviews; nothing to do")
        return ReviewsPublishResult(repo_id, "hub", False, rows, commit)
    console.print(f"published {rows} review(s) to {repo_id}@{commit[:12]}")
    return ReviewsPublishResult(repo_id, "hub", True, rows, commit)


def carry_reviews(
    staged: StagedLayout, old_card: str | None, old_reviews: Path | None, console: Console
) -> StagedLayout:
    """Keep a republished dataset's reviews, when they still describe its pairs.

    Republishing a build (another layout, a new card) must not silently drop human work:
    the previous ``reviews`` file and card section are copied into the staged layout when
    every reviewed pair is still published; otherwise they are left out, and said so.
    """
    if old_card is None or old_reviews is None:
        return staged
    if REVIEWS_SECTION_START not in old_card or REVIEWS_SECTION_END not in old_card:
        return staged
    section = old_card.split(REVIEWS_SECTION_START, 1)[1].split(REVIEWS_SECTION_END, 1)[0]
    reviewed = set(pq.read_table(old_reviews, columns=["pair_id"]).column(0).to_pylist())
    published: set[str] = set()
    for split in staged.splits:
        path = staged.root / data_path(PAIRS, split)
        published.update(pq.read_table(path, columns=["pair_id"]).column(0).to_pylist())
    gone = reviewed - published
    if gone:
        console.print(
            f"the previous reviews name {len(gone)} pair(s) this build does not publish; "
            "they are not carried over (push and pull a review of this build)"
        )
        return staged
    target = staged.root / data_path(REVIEWS, "train")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(old_reviews, target)
    card = staged.root / CARD
    card.write_text(with_reviews(card.read_text(encoding="utf-8"), section), encoding="utf-8")
    console.print(f"kept the {len(reviewed)} reviewed pair(s) of the previous version")
    return replace(staged, files=manifest(staged.root))


def carry_reviews_from_hub(
    staged: StagedLayout, api: HfApi, repo_id: str, commit: str, console: Console
) -> StagedLayout:
    """:func:`carry_reviews` from the card and reviews of the Hub repo at ``commit``."""
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
