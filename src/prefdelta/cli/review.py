"""``prefdelta review serve``, ``push`` and ``pull``: human spot-checks in Argilla."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from prefdelta.cli.app import out, quiet_libraries, review_app
from prefdelta.cli.errors import err, user_errors
from prefdelta.review.agreement import DEFAULT_TIE_BAND

ApiUrlOption = Annotated[
    str | None, typer.Option(help="Argilla URL (default: $ARGILLA_API_URL)", show_default=False)
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(help="Argilla API key (default: $ARGILLA_API_KEY)", show_default=False),
]


@review_app.command("serve")
def review_serve(
    port: Annotated[int | None, typer.Option(help="API/UI port (default: a free one)")] = None,
    username: Annotated[str | None, typer.Option(help="owner user (default: generated)")] = None,
    password: Annotated[
        str | None, typer.Option(help="owner password (default: generated)")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="keep the database and credentials here across restarts")
    ] = None,
) -> None:
    """Start a local Argilla server on loopback (no Docker); Ctrl-C stops it cleanly."""
    from prefdelta.review.stack import serve

    with user_errors():
        serve(port=port, username=username, password=password, work_dir=work_dir)


@review_app.command("push")
def review_push(
    dataset: Annotated[str, typer.Argument(help="Hub id org/name or a published folder")],
    n: Annotated[int, typer.Option("--n", "-n", help="pairs to send")] = 200,
    dataset_name: Annotated[
        str | None, typer.Option(help="Argilla dataset (default: from DATASET, NAME-review)")
    ] = None,
    workspace: Annotated[str, typer.Option(help="Argilla workspace (created if missing)")] = (
        "prefdelta"
    ),
    hide_suggestions: Annotated[
        bool, typer.Option("--hide-suggestions", help="do not show the judge's view")
    ] = False,
    seed: Annotated[int, typer.Option(help="seed of the sample and of the A/B order")] = 0,
    dimension: Annotated[
        str, typer.Option(help="delta column to stratify by: delta or a dimension")
    ] = "delta",
    bins: Annotated[int, typer.Option(help="delta buckets across its range")] = 5,
    scored_only: Annotated[
        bool,
        typer.Option(
            "--scored-only",
            help="leave out pairs the judge could not score (default: a 'no score' stratum "
            "per generator pair)",
        ),
    ] = False,
    split: Annotated[str, typer.Option(help="split of the pairs config")] = "train",
    reviewers_per_record: Annotated[
        int | None,
        typer.Option(
            help="submitted answers a pair needs before Argilla counts it done (2 or more lets "
            "`review pull` measure the reviewers' agreement with each other; default: 1 for "
            "a new dataset, unchanged for an existing one)",
            show_default=False,
        ),
    ] = None,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Send a delta-stratified, blinded sample to Argilla (re-push upserts, never duplicates)."""
    quiet_libraries()
    from huggingface_hub.errors import HfHubHTTPError

    from prefdelta.review.send import push_review

    with user_errors(HfHubHTTPError, OSError):
        result = push_review(
            dataset,
            n=n,
            dataset_name=dataset_name,
            workspace=workspace,
            hide_suggestions=hide_suggestions,
            seed=seed,
            dimension=dimension,
            bins=bins,
            unscored=not scored_only,
            split=split,
            api_url=api_url,
            api_key=api_key,
            reviewers_per_record=reviewers_per_record,
        )
    table = Table(title=f"sample by {result.sample.column} bucket and generator pair")
    for name in ("generator pair", result.sample.column, "pairs", "sampled"):
        table.add_column(name, justify="left" if name == "generator pair" else "right")
    for s in result.sample.strata:
        table.add_row(s.generator_pair, s.label, str(s.available), str(s.sampled))
    out.print(table)
    if result.sample.missing and not result.sample.unscored:
        out.print(f"{result.sample.missing} pair(s) without {result.sample.column} were left out")
    scored = sum(s.sampled for s in result.sample.strata if s.low is not None)
    shown = f"shown on the {scored} with a score" if result.suggestions else "hidden"
    out.print(
        f"pushed {len(result.sample)} pairs to {result.workspace}/{result.dataset_name} "
        f"({result.created} new, {result.updated} updated, {result.total} in the dataset; "
        f"judge suggestions {shown}; {result.reviewers_per_record} reviewer(s) per pair): "
        f"{result.url}",
        markup=False,
        highlight=False,
    )


@review_app.command("pull")
def review_pull(
    dataset: Annotated[str, typer.Argument(help="Hub id org/name or a published folder")],
    to: Annotated[
        str | None,
        typer.Option("--to", help="publish the reviews to org/name or ./folder (default: DATASET)"),
    ] = None,
    dataset_name: Annotated[
        str | None, typer.Option(help="Argilla dataset (default: from DATASET, NAME-review)")
    ] = None,
    workspace: Annotated[str, typer.Option(help="Argilla workspace")] = "prefdelta",
    no_publish: Annotated[
        bool, typer.Option("--no-publish", help="only print the agreement")
    ] = False,
    tie_band: Annotated[
        float,
        typer.Option(
            help="score points: a judge delta with |delta| below it counts as the judge saying "
            "'same' (probability-weighted scores are almost never exactly equal; 0.25 is a "
            "quarter point on the default 1-5 scale, a gap no reviewer could be expected to "
            "see; 0 keeps only an exact 0)",
            min=0.0,
        ),
    ] = DEFAULT_TIE_BAND,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Collect submitted answers, un-blind them, and publish judge-human agreement."""
    quiet_libraries()
    from huggingface_hub.errors import HfHubHTTPError

    from prefdelta.review.pull import (
        agreement_rich_table,
        ceiling_rich_table,
        preference_rich_table,
        pull_reviews,
    )

    with user_errors(HfHubHTTPError, OSError):
        result = pull_reviews(
            dataset,
            to=to,
            dataset_name=dataset_name,
            workspace=workspace,
            api_url=api_url,
            api_key=api_key,
            publish=not no_publish,
            tie_band=tie_band,
            console=err,
        )
    if not result.rows:
        out.print(
            f"no submitted review yet in {result.workspace}/{result.dataset_name} "
            f"({result.records} records); nothing published",
            markup=False,
            highlight=False,
        )
        return
    out.print(agreement_rich_table(result))
    ceiling = ceiling_rich_table(result)
    if ceiling is not None:
        out.print(ceiling)
    out.print(preference_rich_table(result))
    if result.published is not None:
        p = result.published
        where = p.target if p.commit is None else f"{p.target}@{p.commit[:12]}"
        state = "published" if p.changed else "unchanged"
        out.print(f"{state}: {len(result.rows)} reviews in {where}", markup=False, highlight=False)
