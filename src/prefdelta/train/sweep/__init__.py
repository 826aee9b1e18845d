"""``prefdelta sweep``: the paper's three experiments (top-k vs random-k, generator gap,
correctness directions) as one command.

:mod:`~prefdelta.train.sweep.run` runs a sweep; :mod:`~prefdelta.train.sweep.config` is
its YAML schema, :mod:`~prefdelta.train.sweep.plan` the runs it plans,
:mod:`~prefdelta.train.sweep.launch` runs them as processes,
:mod:`~prefdelta.train.sweep.evaluate` has every model answer the eval sets,
:mod:`~prefdelta.train.sweep.analysis` compares the answers,
:mod:`~prefdelta.train.sweep.results` and :mod:`~prefdelta.train.sweep.plots` write the
report and figures. Imports among them run one way, from ``run`` down to ``config`` (the
import contract in pyproject.toml checks it).
"""

from prefdelta.train.sweep.config import SweepError, load_sweep
from prefdelta.train.sweep.plan import (
    RunSpec,
    correctness_runs,
    direction_counts,
    drop_unrankable,
    plan_runs,
)
from prefdelta.train.sweep.run import run_sweep

__all__ = [
    "RunSpec",
    "SweepError",
    "correctness_runs",
    "direction_counts",
    "drop_unrankable",
    "load_sweep",
    "plan_runs",
    "run_sweep",
]
