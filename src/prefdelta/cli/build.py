"""``prefdelta validate``, ``inspect``, ``build`` and ``publish``: a recipe, its plan,
its build and the published dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.syntax import Syntax
from rich.table import Table

from prefdelta.backends import calls_model, is_api
from prefdelta.cli.app import app, library_imports, out, quiet_libraries
from prefdelta.cli.errors import err, user_errors
from prefdelta.errors import PrefdeltaError
from prefdelta.recipe import PUBLISH_HUB_ONLY, BuildRecipe, load_recipe
from prefdelta.recipe.endpoints import MODEL_ONLY_FIELDS
from prefdelta.redact import redact

if TYPE_CHECKING:
    from prefdelta.plan import TokenEstimate

RecipeArg = Annotated[Path, typer.Argument(help="build recipe (YAML)", show_default=False)]


def _load(path: Path) -> BuildRecipe:
    with user_errors():
        return load_recipe(path)


@app.command()
def validate(recipe: RecipeArg) -> None:
    """Check a recipe; print every problem as `file:line: field: expected ...`."""
    from prefdelta.plan import count_local_prompts

    r = _load(recipe)
    with user_errors():
        # a local prompts file is read and its columns checked
        rows = count_local_prompts(r.prompts, r.base_dir)
    for name in r.unused_generators:
        err.print(f"warning: generator {name!r} is declared but pairing does not use it")
    read = f"; {rows} prompts in {r.prompts.path}" if r.prompts.path and rows is not None else ""
    out.print(f"ok: {recipe} is a valid recipe '{r.name}' (hash {r.content_hash()[:12]}){read}")


def resolved_recipe(r: BuildRecipe) -> dict[str, Any]:
    """The recipe as it will run: defaults filled in and resolved (the ties policy), and
    only the keys that apply (no ``rejected`` for best-vs-worst, no Hub-only ``private``,
    ``revision`` or ``tag`` for a folder target, no decoding or request settings for a
    generator whose traces are read from the dataset)."""
    resolved = r.model_dump(mode="json", exclude_none=True)
    for name, g in r.generators.items():
        if not calls_model(g.backend):
            for key in MODEL_ONLY_FIELDS:
                resolved["generators"][name].pop(key, None)
    pairing = resolved["pairing"]
    for key in ("rejected", "chosen") if r.pairing.strategy == "best-vs-worst" else ("pool",):
        pairing.pop(key, None)
    pairing["ties"] = r.pairing.tie_policy
    publish = resolved.get("publish")
    if publish is not None and r.publish is not None and not r.publish.repo_id:
        for key in PUBLISH_HUB_ONLY:
            publish.pop(key, None)
    return resolved


@app.command()
def inspect(
    recipe: RecipeArg,
    judge_prompt: Annotated[
        bool,
        typer.Option(
            "--judge-prompt",
            help="print exactly what the judge is asked about one trace (the build's first "
            "trace when it has been built, else the first prompt with a placeholder trace)",
        ),
    ] = False,
) -> None:
    """Show the resolved recipe and the plan: generations, judge calls, pairs."""
    quiet_libraries()  # before the builders import distilabel
    from prefdelta.builders.build import build_dir_for, stored_work
    from prefdelta.builders.given import load_build_prompts
    from prefdelta.plan import estimate_tokens, plan_build

    r = _load(recipe)
    if judge_prompt:
        _print_judge_prompt(r)
        return
    out.print(f"[bold]{r.name}[/]  hash {r.content_hash()[:12]}  ({recipe})")
    # wrapped to the width, never cropped: a rubric or a system prompt is read whole
    width = max(40, out.width - 8)
    text = redact(  # a ${VAR} resolved from the environment is shown as written
        yaml.safe_dump(resolved_recipe(r), sort_keys=False, width=width, allow_unicode=True)
    )
    if out.is_terminal:
        out.print(Syntax(text, "yaml", word_wrap=True))
    else:
        out.print(text.rstrip("\n"), markup=False, highlight=False)
    for where, endpoint in [*r.generators.items(), ("judge", r.judge)]:
        if endpoint.api_key:
            state = "set" if endpoint.api_key[2:-1] in os.environ else "NOT SET"
            out.print(f"{where}: api_key {endpoint.api_key} is {state}")
    prompts = None
    if r.prompts.path is not None:  # a Hub dataset is not read before the build
        with user_errors(log_dir=build_dir_for(r)):
            prompts, _ = load_build_prompts(r)
    with user_errors():
        plan = plan_build(r, loaded=prompts)

    def n(x: int | None) -> str:
        return "?" if x is None else f"{x:,}"

    table = Table(title="plan", show_header=True)
    table.add_column("step")
    table.add_column("count", justify="right")
    table.add_row("prompts", n(plan.prompts))
    for name, count in plan.generations.items():
        table.add_row(f"generations: {name}", n(count))
    for name, count in plan.given.items():  # no call, no cost: the traces are read
        column = r.generators[name].column
        table.add_row(f"traces read from column {column!r}: {name} (no calls)", n(count))
    table.add_row("judge calls", n(plan.judge_calls))
    table.add_row("judge calls, worst case with retries", n(plan.max_judge_calls))
    # what is paid per call: API models (a dataset's traces and local models cost none)
    api = [(g, c) for g, c in plan.generations.items() if is_api(r.generators[g].backend)]
    if is_api(r.judge.backend):
        api.append(("judge", plan.judge_calls))
    paid = None if any(c is None for _, c in api) else sum(c or 0 for _, c in api)
    table.add_row(f"API calls: {', '.join(g for g, _ in api) or 'none'}", n(paid))
    lost = ["traces the judge cannot score"]
    if r.pairing.tie_policy == "drop":
        lost.append("dropped ties")
    pairs = f"pairs ({r.pairing.strategy}), at most: before {' and '.join(lost)}"
    if r.pairing.strategy == "columns":
        pairs = "pairs (columns): one per row of the dataset, every one kept"
    table.add_row(pairs, n(plan.pairs))
    out.print(table)
    if plan.prompts is None:
        out.print("prompt count is known once the Hub dataset is read; set prompts.limit to fix it")
    if prompts is None:
        return
    with user_errors(log_dir=build_dir_for(r)):
        _print_token_estimates(estimate_tokens(r, prompts))
        stored = stored_work(r, build_dir_for(r), prompts)
    if stored is not None:
        parts = [f"{name} {done}/{total}" for name, (done, total) in stored.generations.items()]
        judged, needed = stored.judgments
        out.print(
            f"already in {build_dir_for(r)}'s store (a build reuses it): generations "
            f"{', '.join(parts)}; judgments {judged}/{needed} of the stored traces",
            soft_wrap=True,
        )


def _print_token_estimates(estimates: list[TokenEstimate]) -> None:
    from prefdelta.plan import CHARS_PER_TOKEN

    priced = any(e.cost is not None for e in estimates)
    table = Table(title="tokens (estimate)", show_header=True)
    for column in ("model", "calls", "prompt tokens", "answer tokens at most"):
        table.add_column(column, justify="left" if column == "model" else "right", overflow="fold")
    if priced:
        table.add_column("cost at most", justify="right")
    for e in estimates:
        how = "" if e.counted else " ~"
        row = [f"{e.name} ({e.model})", f"{e.calls:,}", f"{e.input_tokens:,}{how}"]
        row.append(f"{e.output_tokens:,}")
        if priced:
            row.append("no price" if e.cost is None else f"{e.cost:,.2f}")
        table.add_row(*row)
    out.print(table)
    out.print(
        "prompt tokens: a local generator's by its tokenizer, with its chat template; those "
        f"marked ~ at {CHARS_PER_TOKEN} characters a token (the judge's with each trace at "
        "its budget); answers at their max_new_tokens; the judge's first asks only (re-asks "
        "add up to max_retries more)",
        soft_wrap=True,
    )


def _print_judge_prompt(r: BuildRecipe) -> None:
    import pyarrow.parquet as pq

    from prefdelta.builders.build import build_dir_for
    from prefdelta.builders.given import load_build_prompts
    from prefdelta.builders.judge.prompt import judge_prompt
    from prefdelta.builders.judge.spec import JudgeSpec
    from prefdelta.builders.prompts import read_prompt_table
    from prefdelta.schema import TRACES_FILE

    traces = build_dir_for(r) / TRACES_FILE
    if traces.is_file():
        columns = ["prompt", "trace", "generator", "reference"]
        row = pq.read_table(traces, columns=columns).slice(0, 1).to_pylist()[0]
        prompt, trace, source = row["prompt"], row["trace"], f"{traces}, first trace"
        reference = row["reference"]
    else:
        prompt, reference = "(the problem)", "(its reference answer)"
        if r.prompts.path is not None and r.pairing.strategy == "columns":
            with user_errors():  # the prompt as the build reads it (maybe a conversation)
                prompt = load_build_prompts(r)[0][0].prompt
        elif r.prompts.path is not None:
            with user_errors():
                table, _ = read_prompt_table(r.prompts, r.base_dir)
            prompt = str(table[0][r.prompts.column])
            column = r.prompts.reference_column
            reference = None if column is None else table[0].get(column)
        trace, source = "(a generator's trace)", "not built yet: a placeholder trace"
    spec = JudgeSpec.resolve(r.judge, r.base_dir)
    if traces.is_file():  # what judge.reads has it read (unset: refused if over the context)
        from prefdelta.builders.judge_input import JudgeInput

        with user_errors():
            read = JudgeInput(spec, r.base_dir).read(prompt, trace)
        if read.text is None:
            err.print(f"{source}: {read.problem}", markup=False, highlight=False)
            return
        trace = read.text
    err.print(f"judge prompt ({source}):", markup=False, highlight=False)
    reference = None if reference is None else str(reference)
    messages = judge_prompt(spec, prompt, trace, reference)
    for m in messages:
        if len(messages) > 1:
            err.print(f"--- {m['role']}", markup=False, highlight=False)
        out.print(m["content"], markup=False, highlight=False)


@app.command()
def build(
    recipe: RecipeArg,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="build folder (default builds/NAME)")
    ] = None,
    no_publish: Annotated[
        bool, typer.Option("--no-publish", help="skip the recipe's publish target")
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="the build folder's store.sqlite is damaged: copy its readable rows into a "
            "fresh store (the damaged file is kept aside as store.sqlite.corrupt-<time>), "
            "then build the rest",
        ),
    ] = False,
) -> None:
    """Generate, judge, pair and compute deltas, then publish to the recipe's target.

    Rerun to resume: every finished generation and judgment is reused.
    """
    quiet_libraries()
    with library_imports():
        from prefdelta.builders.build import (
            BuildIncomplete,
            BuildInterrupted,
            build_dir_for,
            run_build,
        )
        from prefdelta.builders.runtime import frozen_heap

    with frozen_heap():  # what the imports made stays frozen until the command ends
        r = _load(recipe)
        with user_errors(log_dir=build_dir_for(r, output_dir)):
            try:
                run_build(r, output_dir, console=err, repair=repair)
            except BuildInterrupted as exc:  # Ctrl-C: the shell's code for SIGINT, 128 + 2
                err.print(str(exc), markup=False, highlight=False)
                raise typer.Exit(130) from None
            except BuildIncomplete as exc:
                unpublished = " Not published." if r.publish is not None and not no_publish else ""
                _fail(f"{exc}{unpublished}")
        if r.publish is not None and not no_publish:
            from prefdelta.push import publish_options, publish_target

            target = publish_target(r.publish)
            with user_errors():
                options = publish_options(r.publish, target)
            _publish(build_dir_for(r, output_dir), target, **options.as_kwargs(), after_build=True)


@app.command()
def publish(
    build_dir: Annotated[Path, typer.Argument(help="a finished build folder")],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="org/name on the Hub, or ./folder (default: the recipe's publish section)",
        ),
    ] = None,
    public: Annotated[bool, typer.Option("--public", help="create the Hub repo public")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Hub branch to commit to (default main)")
    ] = None,
    no_tag: Annotated[
        bool, typer.Option("--no-tag", help="do not tag the commit recipe-<hash12>")
    ] = False,
    test_size: Annotated[
        float | None,
        typer.Option(
            "--test-size",
            help="fraction of prompts held out as a `test` split; 0: no test split, "
            "whatever the recipe says",
        ),
    ] = None,
    sort_by: Annotated[
        str | None,
        typer.Option(
            "--sort-by",
            help="delta column the pairs are stored by, highest first (default: the "
            "recipe's publish.sort_by, else delta); filters on it skip whole row groups",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="publish into a folder or Hub repo that prefdelta did not publish (it "
            "has no .prefdelta-manifest.json), or whose files at prefdelta's paths it did "
            "not write: those files are replaced (listed first), no other file is touched",
        ),
    ] = False,
) -> None:
    """Publish a build to the Hub (one atomic commit) or a local folder, with its card."""
    from prefdelta.push import publish_options, publish_target
    from prefdelta.push.build_folder import read_recipe_text

    settings = None
    recipe_file = build_dir / "recipe.yaml"
    with user_errors():
        if recipe_file.is_file():
            settings = read_recipe_text(recipe_file.read_text("utf-8"), str(recipe_file)).publish
    target: str | Path
    if to is not None:
        target = to
    elif settings is not None:
        target = publish_target(settings)
    else:
        _fail(
            f"no --to given and {recipe_file} has no publish section; pass --to org/name|./folder"
        )
        return
    with user_errors():
        options = publish_options(
            settings,
            target,
            private=False if public else None,
            revision=revision,
            tag=False if no_tag else None,
            test_size=test_size,
            overwrite=True if overwrite else None,
            sort_by=sort_by,
        )
    _publish(build_dir, target, **options.as_kwargs())


def _fail(message: str) -> None:
    err.print(redact(message), markup=False, highlight=False)
    raise typer.Exit(1)


def _publish(
    build_dir: Path,
    target: str | Path,
    *,
    private: bool | None,
    revision: str | None,
    tag: bool | None,
    test_size: float | None,
    sort_by: str | None = None,
    overwrite: bool = False,
    license: str | None = None,
    after_build: bool = False,
) -> None:
    """Publish and say where; a failure is one line and exit status 1.

    The options come resolved: :func:`prefdelta.push.publish_options` gives them.
    ``after_build``: the failure also says that the build itself is complete and kept.
    """
    from huggingface_hub.errors import HfHubHTTPError

    from prefdelta.push import publish_build

    try:
        result = publish_build(
            build_dir,
            target,
            private=private,
            revision=revision,
            tag=tag,
            test_size=test_size,
            console=err,
            license=license,
            sort_by=sort_by,
            overwrite=overwrite,
        )
    except (PrefdeltaError, HfHubHTTPError, OSError) as exc:
        kept = (
            f" The build is complete and kept in {build_dir}; publish it once fixed with "
            f"`prefdelta publish {build_dir}`."
            if after_build
            else ""
        )
        _fail(" ".join(str(exc).split()) + kept)
        return
    where = result.target if result.commit is None else f"{result.target}@{result.commit[:12]}"
    state = "published" if result.changed else "unchanged"
    tag_note = f", tag {result.tag}" if result.tag else ""
    out.print(f"{state}: {where}{tag_note}", markup=False, highlight=False)
