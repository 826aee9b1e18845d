"""The ``prefdelta`` command: validate, inspect, build, publish, review, train.

Each command is a thin shell over one stage module; errors a user can fix are printed as
one line each and exit with status 1, never as a traceback (``--debug`` shows it; a
build's is also kept in its folder's ``logs/``). Which errors those are, and how each is
said: :mod:`prefdelta.errors`. Every line goes through :func:`prefdelta.redact.redact`.

Why one module of this size: one thin function per command, each only parsing options and
printing; the work is in the stage modules.
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from typer.core import TyperGroup

from prefdelta.errors import PrefdeltaError, user_error_lines
from prefdelta.recipe import PUBLISH_HUB_ONLY, BuildRecipe, load_recipe
from prefdelta.redact import redact

if TYPE_CHECKING:
    from prefdelta.plan import TokenEstimate

DEBUG_ENV = "PREFDELTA_DEBUG"


class _Commands(TyperGroup):
    """The one catch point of every command (subgroups' included): an error a user meets
    (a type :func:`prefdelta.errors.register_user_error` knows) is one line and exit 1;
    anything else is a bug, shown as a plain Python traceback.
    Plain, because distilabel installs rich's traceback hook when it is imported, and that
    prints every frame's local variables (the loaded recipe's resolved secrets among them).
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # said and handled already
            raise
        except Exception as exc:
            lines = user_error_lines(exc)
            if lines is None:
                err.print(redact(_traceback(exc)).rstrip("\n"), markup=False, highlight=False)
                err.print(
                    "this is a bug in prefdelta: please report it with the traceback above",
                    markup=False,
                    highlight=False,
                )
            else:
                _report(exc, lines)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Commands,
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

# The build shows its own progress per stage; the libraries' own bars and notices (read at
# import, and inherited by distilabel's step processes) would bury it.
_QUIET = {
    "DISTILABEL_LOG_LEVEL": "WARNING",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _quiet_libraries() -> None:
    from pydantic.warnings import UnsupportedFieldAttributeWarning

    for var, value in _QUIET.items():
        os.environ.setdefault(var, value)
    # distilabel's RuntimeParameter puts Field(default=None) on a member of a union, which
    # pydantic warns about (twice) whenever distilabel.steps is imported
    warnings.filterwarnings(
        "ignore",
        message="The 'default' attribute with value None",
        category=UnsupportedFieldAttributeWarning,
    )
    warnings.filterwarnings("ignore", message=".*`torch_dtype` is deprecated")


ApiUrlOption = Annotated[
    str | None, typer.Option(help="Argilla URL (default: $ARGILLA_API_URL)", show_default=False)
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(help="Argilla API key (default: $ARGILLA_API_KEY)", show_default=False),
]
RecipeArg = Annotated[Path, typer.Argument(help="build recipe (YAML)", show_default=False)]


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help=f"on an error, print its full traceback too (or set {DEBUG_ENV}=1)",
        ),
    ] = False,
) -> None:
    """Options of every command, given before it: ``prefdelta --debug build ...``."""
    global _debug
    _debug = debug


_debug = False  # --debug, set for each invocation


def _debugging() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _write_log(folder: Path | None, text: str) -> Path | None:
    """``text`` in ``folder/logs/error-<time>.log``; None when it cannot be written (the
    disk is full, the folder is not there: a log never creates a build folder)."""
    from prefdelta.schema import LOGS

    if folder is None or not folder.is_dir():
        return None
    path = folder / LOGS / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def _report(
    exc: BaseException, lines: list[str], log_dir: Path | None = None, prefix: str = ""
) -> None:
    """Print ``lines`` (what happened, what to do) and where the traceback is: a library's
    or the system's error (not one of ours, whose line says it all) is logged in
    ``log_dir``; ``--debug`` prints it. Everything printed or logged is redacted."""
    trace = redact(_traceback(exc))
    if _debugging():
        err.print(trace.rstrip("\n"), markup=False, highlight=False)
    elif not isinstance(exc, PrefdeltaError):
        log = _write_log(log_dir, trace)
        where = f"the traceback is in {log}" if log else "rerun with --debug for the traceback"
        lines = [*lines[:-1], f"{lines[-1]} ({where})"]
    for line in lines:
        err.print(redact(f"{prefix}{line}"), markup=False, highlight=False)


@contextmanager
def user_errors(
    *also: type[BaseException], prefix: str = "", log_dir: Path | None = None
) -> Iterator[None]:
    """Print an error meant for the user (any type :mod:`prefdelta.errors` phrases: ours,
    OS and database errors; and the library errors in ``also``) as its lines, then exit 1.
    ``log_dir``: a build folder, where a library's error keeps its traceback. Any other
    exception is a bug and keeps its traceback."""
    try:
        yield
    except Exception as exc:
        lines = user_error_lines(exc)
        if lines is None and isinstance(exc, also):
            lines = [" ".join(str(exc).split())]
        if lines is None:
            raise
        _report(exc, lines, log_dir, prefix)
        raise typer.Exit(1) from None


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
    ``revision`` or ``tag`` for a folder target)."""
    resolved = r.model_dump(mode="json", exclude_none=True)
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
    _quiet_libraries()  # before the builders import distilabel
    from prefdelta.builders.build import build_dir_for, stored_work
    from prefdelta.builders.prompts import load_prompts
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
    with user_errors():
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
    lost = ["traces the judge cannot score"]
    if r.pairing.tie_policy == "drop":
        lost.append("dropped ties")
    table.add_row(
        f"pairs ({r.pairing.strategy}), at most: before {' and '.join(lost)}", n(plan.pairs)
    )
    out.print(table)
    if plan.prompts is None:
        out.print("prompt count is known once the Hub dataset is read; set prompts.limit to fix it")
    if r.prompts.path is None:  # a Hub dataset is not read before the build
        return
    with user_errors(log_dir=build_dir_for(r)):
        prompts, _ = load_prompts(r.prompts, r.base_dir)
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
    from prefdelta.builders.judge import judge_prompt
    from prefdelta.builders.prompts import read_prompt_table
    from prefdelta.schema import TRACES_FILE

    traces = build_dir_for(r) / TRACES_FILE
    if traces.is_file():
        first = pq.read_table(traces, columns=["prompt", "trace", "generator"]).slice(0, 1)
        row = first.to_pylist()[0]
        prompt, trace, source = row["prompt"], row["trace"], f"{traces}, first trace"
    else:
        prompt = "(the problem)"
        if r.prompts.path is not None:
            with user_errors():
                table, _ = read_prompt_table(r.prompts, r.base_dir)
            prompt = str(table[0][r.prompts.column])
        trace, source = "(a generator's trace)", "not built yet: a placeholder trace"
    err.print(f"judge prompt ({source}):", markup=False, highlight=False)
    messages = judge_prompt(r.judge, prompt, trace, r.base_dir)
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
    _quiet_libraries()
    from prefdelta.builders.build import (
        BuildIncomplete,
        BuildInterrupted,
        build_dir_for,
        run_build,
    )

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


@app.command()
def train(
    config: Annotated[
        Path, typer.Argument(help="training config (YAML): TRL keys plus the dataset filter")
    ],
    trainer: Annotated[
        str | None,
        typer.Option("--trainer", help="dpo or kto (default: the config's `trainer:`)"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a config key, e.g. --set top_fraction=0.5"),
    ] = None,
) -> None:
    """DPO or KTO on a delta-filtered split with TRL, in this process.

    For several GPUs: accelerate launch -m prefdelta.train.dpo CONFIG.yaml
    """
    from prefdelta.train.run import run_config

    with user_errors(prefix="error: "):
        result = run_config(config, trainer, set_ or [])
    c = result.counts
    if "desirable" in c:  # KTO: unpaired examples, however many pairs they came from
        n = c["desirable"] + c["undesirable"]
        made_of = f" from {c['pairs_selected']} pairs" if "pairs_selected" in c else ""
        what = f"{n} examples ({c['desirable']} desirable, {c['undesirable']} undesirable){made_of}"
    else:
        what = f"{c.get('pairs_selected', 0)} pairs"
    loss = "" if result.train_loss is None else f", train loss {result.train_loss:.4f}"
    out.print(f"trained: {result.output_dir} ({what}{loss})", markup=False, highlight=False)


@app.command()
def sweep(config: Annotated[Path, typer.Argument(help="sweep config (YAML)")]) -> None:
    """The paper's delta and generator-pair sweeps: train, evaluate, table and plot."""
    from prefdelta.train.sweep import run_sweep

    with user_errors(prefix="error: "):
        run_sweep(config, log=lambda line: err.print(line, markup=False, highlight=False))


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
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Send a delta-stratified, blinded sample to Argilla (re-push upserts, never duplicates)."""
    _quiet_libraries()
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
        f"judge suggestions {shown}): {result.url}",
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
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Collect submitted answers, un-blind them, and publish judge-human agreement."""
    _quiet_libraries()
    from huggingface_hub.errors import HfHubHTTPError

    from prefdelta.review.pull import agreement_rich_table, preference_rich_table, pull_reviews

    with user_errors(HfHubHTTPError, OSError):
        result = pull_reviews(
            dataset,
            to=to,
            dataset_name=dataset_name,
            workspace=workspace,
            api_url=api_url,
            api_key=api_key,
            publish=not no_publish,
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
    out.print(preference_rich_table(result))
    if result.published is not None:
        p = result.published
        where = p.target if p.commit is None else f"{p.target}@{p.commit[:12]}"
        state = "published" if p.changed else "unchanged"
        out.print(f"{state}: {len(result.rows)} reviews in {where}", markup=False, highlight=False)
