"""The ``prefdelta`` command: validate, inspect, build, publish, review, train.

Each command is a thin shell over one stage module; errors a user can fix are printed as
one line each and exit with status 1, never as a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from prefdelta.recipe import BuildRecipe, RecipeError, load_recipe

app = typer.Typer(
    name="prefdelta",
    help="Reasoning preference datasets by generator- and sample-level delta.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
review_app = typer.Typer(help="Human spot-checks in Argilla.", no_args_is_help=True)
app.add_typer(review_app, name="review")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

RecipeArg = Annotated[Path, typer.Argument(help="build recipe (YAML)", show_default=False)]


def _load(path: Path) -> BuildRecipe:
    try:
        return load_recipe(path)
    except RecipeError as exc:
        for line in exc.lines:
            err.print(line, markup=False, highlight=False)
        raise typer.Exit(1) from None


def _not_yet(what: str) -> None:
    err.print(f"`prefdelta {what}` is not available in this version of prefdelta yet.")
    raise typer.Exit(2)


@app.command()
def validate(recipe: RecipeArg) -> None:
    """Check a recipe; print every problem as `file:line: field: expected ...`."""
    r = _load(recipe)
    for name in r.unused_generators:
        err.print(f"warning: generator {name!r} is declared but pairing does not use it")
    out.print(f"ok: {recipe} is a valid recipe '{r.name}' (hash {r.content_hash()[:12]})")


@app.command()
def inspect(recipe: RecipeArg) -> None:
    """Show the resolved recipe and the plan: generations, judge calls, pairs."""
    from prefdelta.plan import plan_build

    r = _load(recipe)
    resolved = r.model_dump(mode="json", exclude_none=True)
    out.print(f"[bold]{r.name}[/]  hash {r.content_hash()[:12]}  ({recipe})")
    out.print(Syntax(yaml.safe_dump(resolved, sort_keys=False, width=100), "yaml"))
    for where, endpoint in [*r.generators.items(), ("judge", r.judge)]:
        if endpoint.api_key:
            import os

            state = "set" if endpoint.api_key[2:-1] in os.environ else "NOT SET"
            out.print(f"{where}: api_key {endpoint.api_key} is {state}")
    plan = plan_build(r)

    def n(x: int | None) -> str:
        return "?" if x is None else f"{x:,}"

    table = Table(title="plan", show_header=True)
    table.add_column("step")
    table.add_column("count", justify="right")
    table.add_row("prompts", n(plan.prompts))
    for name, count in plan.generations.items():
        table.add_row(f"generations: {name}", n(count))
    table.add_row("judge calls", n(plan.judge_calls))
    table.add_row("judge calls, worst case with retries", n(plan.max_judge_calls))
    tie_note = " (before dropped ties)" if r.pairing.tie_policy == "drop" else ""
    table.add_row(f"pairs ({r.pairing.strategy}){tie_note}", n(plan.pairs))
    out.print(table)
    if plan.prompts is None:
        out.print("prompt count is known once the Hub dataset is read; set prompts.limit to fix it")


@app.command()
def build(recipe: RecipeArg) -> None:
    """Generate, judge, pair and compute deltas (cached and resumable)."""
    _load(recipe)
    _not_yet("build")


@app.command()
def publish(build_dir: Annotated[Path, typer.Argument(help="a finished build folder")]) -> None:
    """Publish a build to the Hub or a local folder."""
    _not_yet("publish")


@app.command()
def train(config: Annotated[Path, typer.Argument(help="training config (YAML)")]) -> None:
    """DPO or KTO on a delta-filtered split with TRL."""
    _not_yet("train")


@app.command()
def sweep(config: Annotated[Path, typer.Argument(help="sweep config (YAML)")]) -> None:
    """The paper's delta and generator-pair sweeps."""
    _not_yet("sweep")


@review_app.command("serve")
def review_serve() -> None:
    """Start a local Argilla server."""
    _not_yet("review serve")


@review_app.command("push")
def review_push(dataset: str) -> None:
    """Send a delta-stratified, blinded sample to Argilla."""
    _not_yet("review push")


@review_app.command("pull")
def review_pull(dataset: str) -> None:
    """Collect human answers and judge-human agreement."""
    _not_yet("review pull")
