"""``prefdelta review push``: a delta-stratified, blinded sample of a published dataset in Argilla.

Blinding (see :mod:`prefdelta.review.records`): the chosen trace is Response A or B by a
seeded coin per pair, recorded in metadata that Argilla hides from annotator accounts.
Reviewers must therefore be annotator accounts: an owner or admin sees the metadata panel.

Re-pushing upserts by record id (the pair id), so it never duplicates, and it keeps the A/B
order a record already has whatever the seed: answers already given stay un-blindable.
The judge's view goes in as suggestions (in A/B terms, so they do not unblind); with
``hide_suggestions`` they are left out, and deleted from records that already had them.
The records and the dataset's settings are :mod:`prefdelta.review.records`; the connection is
:mod:`prefdelta.review.argilla_client`.

``reviewers_per_record`` is Argilla's task distribution (``min_submitted``): a record stays in
the reviewers' queue until that many have submitted it, which is what lets ``review pull``
compare reviewers with each other. Given on a re-push, it updates the dataset's setting (Argilla
then recomputes which records are complete); left out, the dataset keeps the one it has.

Metadata for filtering and sorting: every delta (float), the generator pair and verifier
correctness in blinded terms ("one correct", not which one). The deltas are hidden from
annotators like ``a_is``: they are the judge's view in numbers, and a signed delta next to
an A/B suggestion would tell which response is the chosen one. Annotators filter by
generator pair and correctness; owners and admins by everything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdelta.review.argilla_client import (
    DEFAULT_WORKSPACE,
    ReviewError,
    argilla_errors,
    connect,
    default_dataset_name,
    get_dataset,
    get_workspace,
    quiet_sdk,
    shorten,
)
from prefdelta.review.records import (
    BLINDING,
    SIDES,
    blinding,
    build_record,
    check_compatible,
    dimensions_of,
    hide_revealing_metadata,
    review_settings,
)
from prefdelta.review.sample import StratifiedSample, sample_pairs

if TYPE_CHECKING:
    import argilla as rg
    import datasets


# How long a push waits for another push's dataset to finish being created (a handful of
# API calls, normally well under a second).
CREATION_WAIT_S = 120.0


def open_review_dataset(
    client: rg.Argilla,
    name: str,
    workspace: rg.Workspace,
    dims: Sequence[str],
    settings: Callable[[], rg.Settings],
) -> tuple[rg.Dataset, bool]:
    """The review dataset ready for records, and whether this call created it.

    Argilla creates a dataset in steps (the dataset, then each field, question and
    metadata property, then publishing it), so a second push at the same moment can find
    it half made, or lose the race to create it. Either way it waits, as long as the
    dataset stays a draft, for the other push to publish it, and only then compares the
    questions: a dataset that is merely unfinished is never called incompatible.
    """
    import argilla as rg
    from argilla._exceptions import ArgillaAPIError

    ds = get_dataset(client, name, workspace.name)
    if ds is None:
        try:
            fresh = rg.Dataset(name=name, workspace=workspace, settings=settings(), client=client)
            return fresh.create(), True
        except ArgillaAPIError:
            # another push created it first: Argilla answers 409, or, when both inserts race
            # in its database, a 500 for the unique name; either way the dataset is theirs
            ds = get_dataset(client, name, workspace.name)
            if ds is None:
                raise
    waited_until = time.monotonic() + CREATION_WAIT_S
    while client.api.datasets.get(ds.id).status != "ready":
        if time.monotonic() > waited_until:
            raise ReviewError(
                f"Argilla dataset {name!r} has been a draft for {CREATION_WAIT_S:.0f} s: another "
                "push is creating it, or one was interrupted while creating it (delete it in "
                "Argilla, or pick another --dataset-name)"
            )
        time.sleep(0.25)
    ds = get_dataset(client, name, workspace.name) or ds  # re-read its finished settings
    check_compatible(ds, dims)
    hide_revealing_metadata(ds)  # a dataset pushed when some metadata was still shown
    return ds, False


def rubrics_for(source: str | os.PathLike[str], dims: Sequence[str]) -> dict[str, str]:
    """The rubric of each dimension, from the published ``recipe.yaml`` (built-ins otherwise).

    Reviewers answer per dimension: they need the judge's own definition of it.
    """
    from prefdelta.recipe.rubrics import BUILTIN_RUBRICS

    rubrics = {d: BUILTIN_RUBRICS[d] for d in dims if d in BUILTIN_RUBRICS}
    try:
        from prefdelta.push.build_folder import read_recipe_text
        from prefdelta.push.hub import is_hub_target
        from prefdelta.schema import REPO_TYPE

        if is_hub_target(source):
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(str(source), "recipe.yaml", repo_type=REPO_TYPE))
        else:
            path = Path(source).expanduser() / "recipe.yaml"
        recipe = read_recipe_text(path.read_text(encoding="utf-8"), str(path))
        rubrics.update({d.name: d.rubric for d in recipe.judge.dimensions})
    except Exception:  # a missing or foreign recipe only costs the custom rubrics' text
        pass
    return rubrics


@dataclass(frozen=True)
class _Existing:
    server_id: Any
    a_is: str | None
    suggestion_ids: list[str]


def _existing_records(dataset: rg.Dataset, *, with_suggestions: bool) -> dict[str, _Existing]:
    with quiet_sdk():
        records = list(dataset.records(with_suggestions=with_suggestions, with_responses=False))
    out = {}
    for record in records:
        ids = []
        if with_suggestions:
            ids = [str(s._model.id) for s in record.suggestions if s._model.id is not None]
        out[str(record.id)] = _Existing(record._server_id, record.metadata.get(BLINDING), ids)
    return out


# --------------------------------------------------------------------------- push


@dataclass(frozen=True)
class PushResult:
    """What a push did: the sample it sent and the dataset it went to."""

    dataset_name: str
    workspace: str
    url: str
    sample: StratifiedSample
    created: int  # records new to the dataset
    updated: int  # records that were already there (upserted)
    total: int  # records in the dataset afterwards
    suggestions: bool  # whether the judge's view is shown
    suggestions_deleted: int = 0
    reviewers_per_record: int = 1  # the dataset's min_submitted after the push


def push_review(
    dataset: str | os.PathLike[str],
    *,
    n: int = 200,
    dataset_name: str | None = None,
    workspace: str = DEFAULT_WORKSPACE,
    hide_suggestions: bool = False,
    seed: int = 0,
    dimension: str = "delta",
    bins: int = 5,
    unscored: bool = True,
    split: str = "train",
    api_url: str | None = None,
    api_key: str | None = None,
    pairs: datasets.Dataset | None = None,
    reviewers_per_record: int | None = None,
) -> PushResult:
    """Send a stratified, blinded sample of ``dataset``'s pairs to Argilla (upsert by pair id).

    ``dataset`` is a Hub id or a published folder; ``pairs`` may pass its pairs already loaded.
    ``unscored``: also sample pairs the judge could not score (see
    :mod:`prefdelta.review.sample`). ``reviewers_per_record``: submitted answers a record
    needs to be complete (default: 1 for a new dataset, unchanged for an existing one).
    """
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    from prefdelta.loading import PairsLoadError, load_pairs

    checks = [("n", n, "pairs to send"), ("bins", bins, "delta buckets")]
    if reviewers_per_record is not None:
        checks.append(("reviewers-per-record", reviewers_per_record, "reviewers per record"))
    for name, value, what in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ReviewError(f"--{name} ({what}) must be at least 1, got {value!r}")
    client = connect(api_url, api_key)  # first: a server that is down fails fast
    try:
        if pairs is None:
            pairs = load_pairs(dataset, split=split)
        sampled, sample = sample_pairs(
            pairs, n, dimension=dimension, bins=bins, seed=seed, unscored=unscored
        )
    except (PairsLoadError, ValueError) as exc:
        raise ReviewError(shorten(exc)) from None
    except (HfHubHTTPError, httpx.HTTPError, OSError) as exc:
        raise ReviewError(f"cannot read the pairs of {dataset}: {shorten(exc)}") from None
    if not len(sampled):
        hint = " (without --scored-only, the pairs the judge could not score are sampled)"
        raise ReviewError(
            f"no pair of {dataset} has a value in {sample.column}: nothing to review"
            + ("" if unscored else hint)
        )
    dims = dimensions_of(sampled.column_names)
    name = dataset_name or default_dataset_name(dataset)

    with quiet_sdk(), argilla_errors(client.api_url):
        ws = get_workspace(client, workspace, create=True)
        ds, created = open_review_dataset(
            client,
            name,
            ws,
            dims,
            lambda: review_settings(dims, rubrics_for(dataset, dims), reviewers_per_record or 1),
        )
        existing: dict[str, _Existing] = {}
        if not created:
            existing = _existing_records(ds, with_suggestions=hide_suggestions)
            if reviewers_per_record is not None:
                set_reviewers_per_record(ds, reviewers_per_record)

        records = []
        for row in sampled:
            pair_id = str(row["pair_id"])
            known = existing.get(pair_id)
            a_is = known.a_is if known and known.a_is in SIDES else blinding(pair_id, seed)
            records.append(build_record(row, dims, a_is, suggest=not hide_suggestions))
        ds.records.log(records, batch_size=min(256, len(records)))

        deleted = 0
        if hide_suggestions:
            deleted = _delete_suggestions(
                client, [existing[r.id] for r in records if r.id in existing]
            )
        total = len(_existing_records(ds, with_suggestions=False))
        per_record = int(ds.settings.distribution.min_submitted)
    updated = sum(1 for r in records if r.id in existing)
    return PushResult(
        dataset_name=name,
        workspace=workspace,
        url=f"{client.api_url.rstrip('/')}/dataset/{ds.id}/annotation-mode",
        sample=sample,
        created=len(records) - updated,
        updated=updated,
        total=total,
        suggestions=not hide_suggestions,
        suggestions_deleted=deleted,
        reviewers_per_record=per_record,
    )


def set_reviewers_per_record(dataset: rg.Dataset, n: int) -> None:
    """Set an existing dataset's ``min_submitted`` the SDK's way (a no-op when it has it)."""
    import argilla as rg

    if dataset.settings.distribution.min_submitted != n:
        dataset.settings.distribution = rg.TaskDistribution(min_submitted=n)
        dataset.update()


def _delete_suggestions(client: rg.Argilla, records: Sequence[_Existing]) -> int:
    """The SDK cannot delete suggestions: the REST call the UI makes, one per record."""
    deleted = 0
    for record in records:
        if not record.suggestion_ids:
            continue
        response = client.http_client.delete(
            f"/api/v1/records/{record.server_id}/suggestions",
            params={"ids": ",".join(record.suggestion_ids)},
        )
        if response.status_code >= 400:
            raise ReviewError(
                f"could not delete suggestions of record {record.server_id}: "
                f"HTTP {response.status_code} {shorten(response.text)}"
            )
        deleted += len(record.suggestion_ids)
    return deleted
