"""The ``prefdelta`` Typer app, its ``review`` group and the options of every command;
the commands are in :mod:`~prefdelta.cli.build`, :mod:`~prefdelta.cli.train` and
:mod:`~prefdelta.cli.review`, each a thin shell over one stage module."""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console

from prefdelta.cli.errors import DEBUG_ENV, Commands, set_debug

app = typer.Typer(
    cls=Commands,
    name="prefdelta",
    help="Reasoning preference datasets by generator- and sample-level delta.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
review_app = typer.Typer(help="Human spot-checks in Argilla.", no_args_is_help=True)
app.add_typer(review_app, name="review")

out = Console(soft_wrap=True)

# The build shows its own progress per stage; the libraries' own bars and notices (read at
# import, and inherited by distilabel's step processes) would bury it.
_QUIET = {
    "DISTILABEL_LOG_LEVEL": "WARNING",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def quiet_libraries() -> None:
    """Before a command imports the libraries: their own progress bars and notices off."""
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


@contextmanager
def library_imports() -> Iterator[None]:
    """Import a command's libraries with the collector off, and freeze what they made.

    distilabel, datasets, pandas and scipy make some 240,000 objects that live as long as
    the command. Collecting while they load frees next to nothing and costs a build 0.2-0.3
    s of CPU; frozen (``gc.freeze``), they are walked by no later collection either. The
    command then runs in :func:`prefdelta.builders.runtime.frozen_heap`, whose end hands
    them back to the collector, so that the interpreter's exit frees them as it always
    did: modules built with nanobind report objects still alive then as leaks.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()  # before the collector is back on: else it walks them all at once
    finally:
        if enabled:
            gc.enable()


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
    set_debug(debug)
