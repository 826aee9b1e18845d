"""``prefdelta review push``: a delta-stratified, blinded sample of a published dataset in Argilla.

Blinding. Each record shows the prompt and the two traces as "Response A" and "Response B",
the chosen trace first or second at random (a seeded hash of seed and pair id, so the order
does not depend on what else is in the sample). Which one A is lives in the record's metadata
property ``a_is`` (``chosen`` or ``rejected``), declared ``visible_for_annotators=False``:
argilla-server 2.8.0 strips it from every record it returns to a user with the *annotator*
role (and hides it from their filters), while owners and admins still read it, so
``review pull`` un-blinds from the server alone, on any machine, with no local file to lose.
Reviewers must therefore be annotator accounts: an owner or admin sees the metadata panel.

Re-pushing upserts by record id (the pair id), so it never duplicates, and it keeps the A/B
order a record already has whatever the seed: answers already given stay un-blindable.
The judge's view goes in as suggestions (in A/B terms, so they do not unblind); with
``hide_suggestions`` they are left out, and deleted from records that already had them.

Metadata for filtering and sorting: every delta (float), the generator pair and verifier
correctness in blinded terms ("one correct", not which one). The deltas are hidden from
annotators like ``a_is``: they are the judge's view in numbers, and a signed delta next to
an A/B suggestion would tell which response is the chosen one. Annotators filter by
generator pair and correctness; owners and admins by everything.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdelta.errors import PrefdeltaError
from prefdelta.review.agreement import OVERALL, judge_label
from prefdelta.review.sample import StratifiedSample, generator_pair_name, sample_pairs

if TYPE_CHECKING:
    import argilla as rg
    import datasets

API_URL_ENV, API_KEY_ENV = "ARGILLA_API_URL", "ARGILLA_API_KEY"
DEFAULT_API_URL = "http://localhost:6900"  # the argilla SDK's own default
DEFAULT_WORKSPACE = "prefdelta"
NOTE = "note"
BLINDING = "a_is"  # metadata: which trace is Response A ("chosen" or "rejected")
GENERATOR_PAIR = "generator_pair"
CORRECTNESS = "correctness"
CORRECTNESS_TERMS = ("both correct", "one correct", "neither correct", "unknown")
SIDES = ("chosen", "rejected")
# Reviewer labels per question kind: dimension questions say "same", overall says "tie".
DIMENSION_LABELS = {"A": "Response A", "B": "Response B", "same": "About the same"}
OVERALL_LABELS = {"A": "Response A", "B": "Response B", "tie": "Tie"}
_AGENT_UNSAFE = re.compile(r"[^a-zA-Z0-9\-_:./\s]")

GUIDELINES = """\
Each record is one prompt and two reasoning traces, **Response A** and **Response B**, shown in
a random order: nothing tells you which model wrote which, and the order says nothing either.

1. **Overall preference**: which response is the better reasoning, or a tie.
2. **One question per dimension**: which response is better on that dimension alone (the
   question's description is the rubric), or about the same.
3. **Note** (optional): anything that explains a surprising answer.

Suggested answers, when shown, come from the LLM judge whose scores built this dataset: check
them, do not copy them.
"""


class ReviewError(PrefdeltaError, RuntimeError):
    """A review step that cannot go ahead; ``str()`` is one line a user can act on."""


class ArgillaUnreachable(ReviewError):
    """No Argilla server answers at the URL."""


# --------------------------------------------------------------------------- connecting


def resolve_api(api_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The URL and key to use: the arguments, else ARGILLA_API_URL/ARGILLA_API_KEY."""
    url = api_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    return url.rstrip("/"), api_key or os.environ.get(API_KEY_ENV)


def connect(api_url: str | None = None, api_key: str | None = None) -> rg.Argilla:
    """An SDK client, or a one-line :class:`ReviewError` saying what to do about it."""
    import argilla as rg
    import httpx
    from argilla._exceptions import ArgillaCredentialsError

    url, key = resolve_api(api_url, api_key)
    if not key:
        raise ReviewError(
            f"no Argilla API key: pass --api-key or set {API_KEY_ENV} "
            "(`prefdelta review serve` prints one)"
        )
    try:
        with _quiet_sdk():
            return rg.Argilla(api_url=url, api_key=key, timeout=30, retries=1)
    except ArgillaCredentialsError:
        raise ReviewError(f"Argilla at {url} rejected the API key") from None
    except httpx.TransportError as exc:
        raise ArgillaUnreachable(
            f"cannot reach Argilla at {url} ({_short(exc)}): start one with "
            f"`prefdelta review serve` and pass its URL with --api-url or {API_URL_ENV}"
        ) from None


@contextmanager
def _quiet_sdk() -> Iterator[None]:
    """The SDK's progress bars and warnings would bury our one-line report."""
    import logging
    import warnings

    import argilla.records._dataset_records as records_module

    logger = logging.getLogger("argilla.sdk")
    level = logger.level
    bar = records_module.tqdm  # read when imported, so TQDM_DISABLE set now would do nothing
    records_module.tqdm = functools.partial(bar, disable=True)  # type: ignore[assignment]
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)
        records_module.tqdm = bar


@contextmanager
def argilla_errors(api_url: str) -> Iterator[None]:
    """SDK and transport failures mid-way as one-line :class:`ReviewError` s."""
    import httpx
    from argilla._exceptions import ArgillaError

    try:
        yield
    except httpx.TransportError as exc:
        raise ArgillaUnreachable(
            f"lost Argilla at {api_url} ({_short(exc)}): is `prefdelta review serve` still running?"
        ) from None
    except ArgillaError as exc:
        raise ReviewError(f"Argilla at {api_url}: {_short(exc)}") from None


def default_dataset_name(dataset: str | os.PathLike[str]) -> str:
    """The Argilla dataset for a published dataset: ``org/name`` -> ``org-name-review``."""
    text = str(dataset).rstrip("/")
    local = isinstance(dataset, os.PathLike) or text.startswith((".", "/", "~"))
    base = Path(text).expanduser().resolve().name if local else text
    slug = re.sub(r"[^a-z0-9_-]+", "-", base.lower()).strip("-") or "dataset"
    return f"{slug}-review"


def get_workspace(client: rg.Argilla, name: str, *, create: bool) -> rg.Workspace:
    """The workspace, created (and joined, so the UI lists it) when asked."""
    import argilla as rg
    from argilla._exceptions import ConflictError

    with _quiet_sdk():
        workspace = client.workspaces(name)
    if workspace is None:
        if not create:
            raise ReviewError(f"no workspace {name!r} in Argilla at {client.api_url}")
        workspace = rg.Workspace(name=name, client=client).create()
    if create:
        with suppress(ConflictError):  # already a member
            workspace.add_user(client.me)
    return workspace


def get_dataset(client: rg.Argilla, name: str, workspace: str) -> rg.Dataset | None:
    with _quiet_sdk():
        return client.datasets(name=name, workspace=workspace)


# --------------------------------------------------------------------------- records


def blinding(pair_id: str, seed: int) -> str:
    """Which trace is Response A for this pair: ``chosen`` or ``rejected``, a fair coin per pair."""
    digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()
    return SIDES[digest[0] & 1]


def to_ab(label: str | None, a_is: str, *, tie: str = "same") -> str | None:
    """A un-blinded label (chosen / rejected / same) as the reviewer sees it (A / B / ``tie``)."""
    if label is None:
        return None
    if label == "same":
        return tie
    return "A" if label == a_is else "B"


def from_ab(answer: str | None, a_is: str) -> str | None:
    """A reviewer's answer (A / B / same / tie) un-blinded to chosen / rejected / same."""
    if answer is None:
        return None
    if answer in ("same", "tie"):
        return "same"
    if answer not in ("A", "B"):
        raise ReviewError(f"unexpected answer {answer!r}; expected A, B, same or tie")
    other = SIDES[1 - SIDES.index(a_is)]
    return a_is if answer == "A" else other


def dimensions_of(columns: Sequence[str]) -> list[str]:
    """The judged dimensions of a ``pairs`` table: its ``delta_<dimension>`` columns, in order."""
    dims = [c[len("delta_") :] for c in columns if c.startswith("delta_")]
    clash = [d for d in dims if d in (OVERALL, NOTE)]
    if clash:
        raise ReviewError(f"a dimension may not be named {clash[0]!r} in a review dataset")
    return dims


def _messages(value: Any, roles: tuple[str, ...]) -> str:
    """Conversation (list of {role, content}) -> markdown: the contents of the given roles."""
    if isinstance(value, str):
        return value
    parts = [
        str(m.get("content") or "") for m in value or [] if not roles or m.get("role") in roles
    ]
    return "\n\n".join(p for p in parts if p) or "(empty)"


def correctness_term(chosen: bool | None, rejected: bool | None) -> str:
    """Verifier correctness in blinded terms: how many of the two answers are right."""
    if chosen is None or rejected is None:
        return "unknown"
    return CORRECTNESS_TERMS[2 - int(chosen) - int(rejected)]


def _agent(model: str | None) -> str:
    text = _AGENT_UNSAFE.sub("-", model or "judge").strip() or "judge"
    return text if text[-1].isalnum() else text + "0"


def _float(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return None if f != f else f  # NaN is not allowed in Argilla metadata


def build_record(
    row: Mapping[str, Any], dims: Sequence[str], a_is: str, *, suggest: bool
) -> rg.Record:
    """One blinded review record for a pair row (as the ``pairs`` config holds it)."""
    import argilla as rg

    chosen = _messages(row["chosen"], ("assistant",))
    rejected = _messages(row["rejected"], ("assistant",))
    a, b = (chosen, rejected) if a_is == "chosen" else (rejected, chosen)
    metadata: dict[str, Any] = {
        BLINDING: a_is,
        GENERATOR_PAIR: generator_pair_name(
            row.get("chosen_generator"), row.get("rejected_generator")
        ),
        CORRECTNESS: correctness_term(row.get("chosen_correct"), row.get("rejected_correct")),
    }
    for column in ["delta", *(f"delta_{d}" for d in dims)]:
        value = _float(row.get(column))
        if value is not None:
            metadata[column] = value
    suggestions = []
    if suggest:
        agent = _agent(row.get("judge_model"))
        judged = [(OVERALL, row.get("delta"), "tie")] + [
            (d, row.get(f"delta_{d}"), "same") for d in dims
        ]
        for question, delta, tie in judged:
            value = to_ab(judge_label(_float(delta)), a_is, tie=tie)
            if value is not None:
                suggestions.append(rg.Suggestion(question, value, agent=agent))
    return rg.Record(
        id=str(row["pair_id"]),
        fields={
            "prompt": _messages(row["prompt"], ("system", "user")),
            "response_a": a,
            "response_b": b,
        },
        metadata=metadata,
        suggestions=suggestions,
    )


def review_settings(dims: Sequence[str], rubrics: Mapping[str, str]) -> rg.Settings:
    """Fields, questions and metadata of a review dataset for these dimensions."""
    import argilla as rg

    questions: list[Any] = [
        rg.LabelQuestion(
            name=OVERALL,
            title="Overall, which response is the better reasoning?",
            labels=OVERALL_LABELS,
        )
    ]
    for d in dims:
        questions.append(
            rg.LabelQuestion(
                name=d,
                title=f"Which response is better on {d.replace('_', ' ')}?",
                description=rubrics.get(d),
                labels=DIMENSION_LABELS,
            )
        )
    questions.append(
        rg.TextQuestion(name=NOTE, title="Note (optional)", required=False, use_markdown=False)
    )
    # Deltas are the judge's view: owners and admins filter and sort by them, annotators never
    # see them (a signed delta next to an A/B suggestion would give the blinding away).
    metadata: list[Any] = [
        rg.FloatMetadataProperty(
            name="delta", title="delta (aggregate)", visible_for_annotators=False
        ),
        *(
            rg.FloatMetadataProperty(
                name=f"delta_{d}", title=f"delta {d}", visible_for_annotators=False
            )
            for d in dims
        ),
        rg.TermsMetadataProperty(name=GENERATOR_PAIR, title="generator pair"),
        rg.TermsMetadataProperty(name=CORRECTNESS, options=list(CORRECTNESS_TERMS)),
        rg.TermsMetadataProperty(
            name=BLINDING,
            title="Response A is",
            options=list(SIDES),
            visible_for_annotators=False,
        ),
    ]
    return rg.Settings(
        guidelines=GUIDELINES,
        fields=[
            rg.TextField(name="prompt", title="Prompt", use_markdown=True),
            rg.TextField(name="response_a", title="Response A", use_markdown=True),
            rg.TextField(name="response_b", title="Response B", use_markdown=True),
        ],
        questions=questions,
        metadata=metadata,
    )


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
    from argilla._exceptions import ConflictError

    ds = get_dataset(client, name, workspace.name)
    if ds is None:
        try:
            fresh = rg.Dataset(name=name, workspace=workspace, settings=settings(), client=client)
            return fresh.create(), True
        except ConflictError:  # another push created it first
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
    return ds, False


def check_compatible(dataset: rg.Dataset, dims: Sequence[str]) -> None:
    """Refuse to upsert into a dataset whose questions or blinding are not this review's."""
    have = {q.name for q in dataset.settings.questions}
    want = {OVERALL, NOTE, *dims}
    metadata = {m.name for m in dataset.settings.metadata}
    if have != want or BLINDING not in metadata:
        raise ReviewError(
            f"Argilla dataset {dataset.name!r} exists with other questions "
            f"({', '.join(sorted(have))}) than this review needs ({', '.join(sorted(want))}); "
            "pick another --dataset-name"
        )


def review_dimensions(dataset: rg.Dataset) -> list[str]:
    """The dimension questions of a review dataset, in their order."""
    return [q.name for q in dataset.settings.questions if q.name not in (OVERALL, NOTE)]


def rubrics_for(source: str | os.PathLike[str], dims: Sequence[str]) -> dict[str, str]:
    """The rubric of each dimension, from the published ``recipe.yaml`` (built-ins otherwise).

    Reviewers answer per dimension: they need the judge's own definition of it.
    """
    from prefdelta.rubrics import BUILTIN_RUBRICS

    rubrics = {d: BUILTIN_RUBRICS[d] for d in dims if d in BUILTIN_RUBRICS}
    try:
        from prefdelta.push.layout import read_recipe_text
        from prefdelta.push.publish import REPO_TYPE, is_hub_target

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
    with _quiet_sdk():
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
) -> PushResult:
    """Send a stratified, blinded sample of ``dataset``'s pairs to Argilla (upsert by pair id).

    ``dataset`` is a Hub id or a published folder; ``pairs`` may pass its pairs already loaded.
    ``unscored``: also sample pairs the judge could not score (see
    :mod:`prefdelta.review.sample`).
    """
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    from prefdelta.loading import PairsLoadError, load_pairs

    client = connect(api_url, api_key)  # first: a server that is down fails fast
    try:
        if pairs is None:
            pairs = load_pairs(dataset, split=split)
        sampled, sample = sample_pairs(
            pairs, n, dimension=dimension, bins=bins, seed=seed, unscored=unscored
        )
    except (PairsLoadError, ValueError) as exc:
        raise ReviewError(_short(exc)) from None
    except (HfHubHTTPError, httpx.HTTPError, OSError) as exc:
        raise ReviewError(f"cannot read the pairs of {dataset}: {_short(exc)}") from None
    if not len(sampled):
        hint = " (without --scored-only, the pairs the judge could not score are sampled)"
        raise ReviewError(
            f"no pair of {dataset} has a value in {sample.column}: nothing to review"
            + ("" if unscored else hint)
        )
    dims = dimensions_of(sampled.column_names)
    name = dataset_name or default_dataset_name(dataset)

    with _quiet_sdk(), argilla_errors(client.api_url):
        ws = get_workspace(client, workspace, create=True)
        ds, created = open_review_dataset(
            client, name, ws, dims, lambda: review_settings(dims, rubrics_for(dataset, dims))
        )
        existing: dict[str, _Existing] = {}
        if not created:
            existing = _existing_records(ds, with_suggestions=hide_suggestions)

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
    )


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
                f"HTTP {response.status_code} {_short(response.text)}"
            )
        deleted += len(record.suggestion_ids)
    return deleted


def _short(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 200 else text[:197] + "..."
