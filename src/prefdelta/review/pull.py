"""``prefdelta review pull``: submitted answers from Argilla, un-blinded, scored against the judge.

Only *submitted* responses count (drafts and discarded ones are a reviewer's unfinished
business). Each is un-blinded with the record's hidden ``a_is`` metadata, which the server
returns to owners and admins only: pulling needs such an API key. The judge's view comes from
the same record's delta metadata (its sign outside the tie band, see
:mod:`prefdelta.review.agreement`), i.e. the judgment the reviewer was checking, even if the
dataset was republished since.

The result is one row per (pair, reviewer), published as the ``reviews`` config of the
dataset (or of ``to``), with the agreement table as a section of its card.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from prefdelta.review.agreement import (
    DEFAULT_TIE_BAND,
    OVERALL,
    Agreement,
    GeneratorPreference,
    agreement_table,
    generator_preference,
    judge_label,
)
from prefdelta.review.argilla_client import (
    DEFAULT_WORKSPACE,
    ReviewError,
    argilla_errors,
    connect,
    default_dataset_name,
    get_dataset,
    quiet_sdk,
)
from prefdelta.review.records import (
    BLINDING,
    GENERATOR_PAIR,
    NOTE,
    SIDES,
    from_ab,
    review_dimensions,
)
from prefdelta.stats import RESAMPLES

if TYPE_CHECKING:
    import argilla as rg
    from rich.console import Console

    from prefdelta.push.reviews import ReviewsPublishResult


@dataclass(frozen=True)
class PullResult:
    """The un-blinded reviews, their agreement with the judge, and where they were published."""

    dataset_name: str
    workspace: str
    dimensions: list[str]
    rows: list[dict[str, Any]]
    agreement: list[Agreement]
    preference: list[GeneratorPreference]  # overall answers per generator pair
    records: int  # records in the Argilla dataset
    suggested: int  # reviewed records that showed the judge's suggestions
    published: ReviewsPublishResult | None = None
    annotators: list[str] = field(default_factory=list)
    tie_band: float = DEFAULT_TIE_BAND  # |delta| below it: the judge says "same"

    @property
    def reviewed(self) -> int:
        return len({r["pair_id"] for r in self.rows})

    @property
    def judge_gave_no_view(self) -> bool:
        """The judge scored none of the reviewed pairs: no agreement can be measured."""
        return bool(self.agreement) and all(a.n == 0 for a in self.agreement)


def reviews_schema(dims: Sequence[str]) -> pa.Schema:
    """One row per submitted response; answers and the judge's view as chosen/rejected/same."""
    questions = [OVERALL, *dims]
    return pa.schema(
        [
            ("pair_id", pa.string()),
            ("annotator", pa.string()),
            (GENERATOR_PAIR, pa.string()),
            *[(q, pa.string()) for q in questions],
            (NOTE, pa.string()),
            *[(f"judge_{q}", pa.string()) for q in questions],
            (BLINDING, pa.string()),
        ]
    )


def _usernames(client: rg.Argilla) -> dict[str, str]:
    """user id -> username; an admin may not list users, then ids stand in for names."""
    try:
        with quiet_sdk():
            return {str(u.id): u.username for u in client.users}
    except Exception:
        return {}


def collect_reviews(
    dataset: rg.Dataset,
    dims: Sequence[str],
    usernames: dict[str, str],
    tie_band: float = DEFAULT_TIE_BAND,
) -> tuple[list[dict[str, Any]], int, int]:
    """(rows, records in the dataset, reviewed records that had suggestions)."""
    with quiet_sdk():
        records = list(dataset.records(with_suggestions=True, with_responses=True))
    rows: list[dict[str, Any]] = []
    suggested = 0
    for record in records:
        by_user: dict[str, dict[str, Any]] = {}
        for response in record.responses:
            if getattr(response.status, "value", response.status) != "submitted":
                continue
            by_user.setdefault(str(response.user_id), {})[response.question_name] = response.value
        if not by_user:
            continue
        a_is = record.metadata.get(BLINDING)
        if a_is not in SIDES:
            raise ReviewError(
                f"record {record.id} has no `{BLINDING}` metadata: pulling needs an owner or admin "
                "API key (annotators cannot see it), and a dataset made by `prefdelta review push`"
            )
        if len(record.suggestions):
            suggested += 1
        judge = {OVERALL: judge_label(record.metadata.get("delta"), tie_band)}
        judge.update({d: judge_label(record.metadata.get(f"delta_{d}"), tie_band) for d in dims})
        for user_id, answers in by_user.items():
            row: dict[str, Any] = {
                "pair_id": str(record.id),
                "annotator": usernames.get(user_id, user_id),
                GENERATOR_PAIR: record.metadata.get(GENERATOR_PAIR),
            }
            for q in (OVERALL, *dims):
                row[q] = from_ab(answers.get(q), a_is)
            row[NOTE] = answers.get(NOTE) or None
            for q in (OVERALL, *dims):
                row[f"judge_{q}"] = judge[q]
            row[BLINDING] = a_is
            rows.append(row)
    rows.sort(key=lambda r: (r["pair_id"], r["annotator"]))
    return rows, len(records), suggested


def pull_reviews(
    dataset: str | os.PathLike[str],
    *,
    to: str | os.PathLike[str] | None = None,
    dataset_name: str | None = None,
    workspace: str = DEFAULT_WORKSPACE,
    api_url: str | None = None,
    api_key: str | None = None,
    publish: bool = True,
    tie_band: float = DEFAULT_TIE_BAND,
    console: Console | None = None,
) -> PullResult:
    """Collect submitted answers for ``dataset``'s review, compute agreement, publish them.

    Publishes to ``to`` (a Hub id or folder), else back to ``dataset``; nothing is published
    when there is no submitted answer yet or ``publish`` is False. ``tie_band``: a judge delta
    with ``|delta| < tie_band`` counts as the judge saying "same".
    """
    if not (isinstance(tie_band, int | float) and 0 <= tie_band < float("inf")):
        raise ReviewError(f"--tie-band must be a number of score points >= 0, got {tie_band!r}")
    name = dataset_name or default_dataset_name(dataset)
    client = connect(api_url, api_key)
    with argilla_errors(client.api_url):
        ds = get_dataset(client, name, workspace)
        if ds is None:
            raise ReviewError(
                f"no Argilla dataset {name!r} in workspace {workspace!r} at {client.api_url}: "
                f"run `prefdelta review push {dataset}` first (or pass --dataset-name/--workspace)"
            )
        dims = review_dimensions(ds)
        rows, records, suggested = collect_reviews(ds, dims, _usernames(client), tie_band)
    result = PullResult(
        dataset_name=name,
        workspace=workspace,
        dimensions=dims,
        rows=rows,
        agreement=agreement_table(rows, [OVERALL, *dims]),
        preference=generator_preference(rows),
        records=records,
        suggested=suggested,
        annotators=sorted({r["annotator"] for r in rows}),
        tie_band=float(tie_band),
    )
    if not rows or not publish:
        return result
    from prefdelta.push.reviews import publish_reviews

    target = to if to is not None else dataset
    table = pa.Table.from_pylist(rows, schema=reviews_schema(dims))
    section = agreement_section(result, str(target))
    published = publish_reviews(
        target, table, section, source=dataset if to is not None else None, console=console
    )
    return replace(result, published=published)


# --------------------------------------------------------------------------- reporting


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def _counts(counts: dict[str, int]) -> str:
    return " / ".join(str(counts.get(c, 0)) for c in ("chosen", "rejected", "same"))


def _with_interval(x: float | None, interval: tuple[float, float] | None, sep: str = " ") -> str:
    """``0.667 [0.333, 1.000]``: the estimate and its 95% bootstrap interval."""
    if x is None:
        return "—"
    if interval is None:
        return _fmt(x)
    return f"{_fmt(x)}{sep}[{_fmt(interval[0])}, {_fmt(interval[1])}]"


def _band(tie_band: float) -> str:
    return f"{tie_band:g}"


def agreement_cells(a: Agreement, sep: str = " ") -> list[str]:
    """Judge-human figures of one question, the same in the card and the terminal (where
    ``sep`` puts the intervals on a line of their own)."""
    return [
        a.question,
        str(a.n),
        _with_interval(a.accuracy, a.accuracy_interval, sep),
        _with_interval(a.kappa, a.kappa_interval, sep),
        _counts(a.judge),
        _counts(a.answered),
    ]


def ceiling_cells(a: Agreement, sep: str = " ") -> list[str]:
    """The reviewers' agreement with each other on one question (— without such records)."""
    r = a.between_reviewers
    if r is None:
        return ["0", "—", "—"]
    return [
        str(r.n),
        _with_interval(r.accuracy, r.accuracy_interval, sep),
        _with_interval(r.kappa, r.kappa_interval, sep),
    ]


AGREEMENT_COLUMNS = (
    "question",
    "n",
    "agreement [95% CI]",
    "Cohen's kappa [95% CI]",
    "judge: chosen / rejected / same",
    "reviewers: chosen / rejected / same",
)
CEILING_COLUMNS = (
    "reviewer pairs",
    "reviewer-reviewer agreement [95% CI]",
    "reviewer-reviewer kappa [95% CI]",
)


def _has_ceiling(result: PullResult) -> bool:
    return any(a.between_reviewers is not None for a in result.agreement)


def agreement_section(result: PullResult, ref: str) -> str:
    """The dataset card's "Human review" section (Markdown)."""
    ceiling = _has_ceiling(result)
    columns = [
        *AGREEMENT_COLUMNS,
        "reviewed without a judge view",
        *(CEILING_COLUMNS if ceiling else ()),
    ]
    lines = [
        "## Human review",
        "",
        f"{len(result.rows)} submitted review(s) of {result.reviewed} pair(s) by "
        f"{len(result.annotators)} reviewer(s), from the Argilla dataset `{result.dataset_name}` "
        f"({result.records} pairs sent: a sample stratified by delta and generator pair). "
        "Reviewers saw the two traces as Response A and Response B in a random order per pair; "
        "the `reviews` config holds their answers un-blinded, one row per (pair, reviewer), "
        f"next to the judge's view. The judge's suggestions were shown on {result.suggested} "
        f"of the {result.reviewed} reviewed pair(s). Tie band: {_band(result.tie_band)} score "
        f"points (a judge delta with |delta| < {_band(result.tie_band)} counts as the judge "
        "saying *same*).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for a in result.agreement:
        cells = [*agreement_cells(a), str(a.unjudged_count)]
        if ceiling:
            cells += ceiling_cells(a)
        lines.append("| " + " | ".join(cells) + " |")
    if result.judge_gave_no_view:
        lines += [
            "",
            "The judge scored none of the reviewed pairs, so there is no judge-human "
            "agreement to measure (n is 0 and kappa undefined for that reason, not because "
            "reviewers answered nothing): the reviewers' own answers are in the table and in "
            "the `reviews` config.",
        ]
    lines += ["", *ceiling_lines(result)]
    lines += ["", *preference_lines(result.preference)]
    lines += [
        "",
        "Both raters use three categories: the chosen trace is better, the rejected one is, or "
        f"neither (the judge: a delta inside the tie band, |delta| < {_band(result.tie_band)}; "
        "a reviewer: *same*, or *tie* overall). "
        "*Same* is a category of its own, so a reviewer's tie against a judge's gap is a "
        "disagreement. Kappa is (p_o - p_e) / (1 - p_e) over those categories; — where it is "
        "undefined (both raters always gave one and the same answer). The intervals in "
        f"brackets are 95% percentile bootstraps over the reviewed pairs ({RESAMPLES} seeded "
        "resamples, each pair with all of its reviews; resamples where kappa is undefined are "
        "left out of its interval): with a few dozen pairs they are wide, and that is the "
        "point of showing them.",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'reviews = load_dataset("{ref}", "reviews", split="train")',
        "```",
    ]
    return "\n".join(lines)


def ceiling_lines(result: PullResult) -> list[str]:
    """What the reviewer-reviewer columns mean, or how to get them."""
    if _has_ceiling(result):
        return [
            "Reviewer-reviewer columns: where two or more reviewers answered the same pair, "
            "every pair of them is one comparison (the reviewer first by name as rater 1: "
            "with two reviewers on every pair, their Cohen's kappa). That is the ceiling to "
            "read the judge's agreement against: a judge cannot be expected to agree with "
            "reviewers more than they agree with each other.",
        ]
    return [
        "No pair was answered by two reviewers, so there is no reviewer-reviewer agreement "
        "to read the judge's against: `prefdelta review push --reviewers-per-record 2` asks "
        "Argilla for two submitted answers per pair.",
    ]


def preference_lines(preference: list[GeneratorPreference]) -> list[str]:
    """The generator-level check as Markdown: does the chosen generator write the better trace?"""
    lines = [
        "Per generator pair, how often reviewers found the chosen generator's trace the better "
        "reasoning overall (pairs the judge could not score included):",
        "",
        "| " + " | ".join(PREFERENCE_COLUMNS) + " |",
        "|" + "---|" * len(PREFERENCE_COLUMNS),
    ]
    lines += ["| " + " | ".join(_preference_cells(g)) + " |" for g in preference]
    return lines


PREFERENCE_COLUMNS = (
    "generator pair",
    "reviews",
    "chosen better",
    "rejected better",
    "tie",
    "chosen share",
)


def _preference_cells(g: GeneratorPreference) -> list[str]:
    """One generator pair's row, the same in the card and the terminal."""
    return [
        g.generator_pair,
        str(g.n),
        str(g.chosen),
        str(g.rejected),
        str(g.tie),
        _fmt(g.chosen_share, ".0%"),
    ]


def agreement_rich_table(result: PullResult) -> Any:
    """The judge-human agreement table for the terminal."""
    from rich.table import Table

    table = Table(
        title=f"judge-human agreement: {result.dataset_name} "
        f"({len(result.rows)} reviews, {result.reviewed} pairs)"
    )
    table.add_column("question", no_wrap=True)  # never cut a dimension's name
    for name in ("n", "agreement [95% CI]", "kappa [95% CI]", "judge c/r/s", "human c/r/s"):
        table.add_column(name, justify="right")
    unjudged = any(a.unjudged_count for a in result.agreement)
    if unjudged:  # reviews of pairs the judge could not score: theirs, counted apart
        table.add_column("no judge view", justify="right")
    for a in result.agreement:
        table.add_row(*agreement_cells(a, "\n"), *([str(a.unjudged_count)] if unjudged else []))
    captions = [
        f"tie band |delta| < {_band(result.tie_band)}: the judge's 'same'; "
        "95% bootstrap intervals over the pairs"
    ]
    if result.judge_gave_no_view:
        captions.append(
            "the judge scored none of these pairs: no agreement to measure; "
            "human c/r/s are the reviewers' own answers"
        )
    if not _has_ceiling(result):
        captions.append(
            "no pair has two reviewers: push with --reviewers-per-record 2 for their "
            "agreement with each other"
        )
    table.caption = "; ".join(captions)
    return table


def ceiling_rich_table(result: PullResult) -> Any | None:
    """The reviewers' agreement with each other for the terminal, printed right under the
    judge's (None when no pair has two reviewers): the ceiling to read it against."""
    from rich.table import Table

    if not _has_ceiling(result):
        return None
    table = Table(title="reviewers against each other (the ceiling for the judge)")
    table.add_column("question", no_wrap=True)
    for name in ("reviewer pairs", "agreement [95% CI]", "kappa [95% CI]"):
        table.add_column(name, justify="right")
    for a in result.agreement:
        table.add_row(a.question, *ceiling_cells(a, "\n"))
    return table


def preference_rich_table(result: PullResult) -> Any:
    """The generator-level check for the terminal."""
    from rich.table import Table

    table = Table(title="reviewers' overall answer per generator pair")
    first, *counts = PREFERENCE_COLUMNS
    table.add_column(first)
    for name in counts:
        table.add_column(name, justify="right")
    for g in result.preference:
        table.add_row(*_preference_cells(g))
    return table
