"""``prefdelta train`` and ``prefdelta sweep``: TRL on a delta-filtered split, and the
paper's experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefdelta.cli.app import app, out
from prefdelta.cli.errors import err, user_errors


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
