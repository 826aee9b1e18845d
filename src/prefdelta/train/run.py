"""The trainers ``prefdelta train`` and ``prefdelta sweep`` can run, and running one.

One registry, so the CLI and the sweep dispatch the same way. Each entry names its
script module (:mod:`prefdelta.train.dpo`, :mod:`prefdelta.train.kto`), imported only when a
run starts (TRL and torch load with it), and what the sweep needs to tell two runs apart
without training: the script's data arguments and the examples a selection keeps.
Dependencies run one way: this module imports the scripts; the scripts import
:mod:`prefdelta.train.common`, which imports neither.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from prefdelta.train.common import TrainResult
from prefdelta.train.configs import (
    TRAINERS,
    DataArguments,
    KTODataArguments,
    TrainConfigError,
    parse_config,
    read_config,
    read_trainer,
)
from prefdelta.train.data import load_dpo_selection, load_kto_selection


def _dpo_script() -> ModuleType:
    from prefdelta.train import dpo

    return dpo


def _kto_script() -> ModuleType:
    from prefdelta.train import kto

    return kto


def _dpo_examples(args: DataArguments, config: dict[str, Any]) -> list[str]:
    return sorted(load_dpo_selection(args).dataset["pair_id"])


def _kto_examples(args: KTODataArguments, config: dict[str, Any]) -> list[str]:
    # the unpairing draws from the run's training seed (TRL's default 42)
    return sorted(load_kto_selection(args, seed=int(config.get("seed", 42))).dataset["trace_key"])


@dataclass(frozen=True)
class TrainerKind:
    """One trainer: its script, its data arguments, the examples a selection keeps."""

    name: str
    script: Callable[[], ModuleType]  # the module with DATACLASSES and main(); imports TRL
    data_arguments: type[DataArguments]
    # the sorted ids a selection trains on (pair ids, or trace keys for KTO), from the
    # data arguments and the run's whole config (KTO's seed is a training key)
    selected_ids: Callable[[Any, dict[str, Any]], list[str]]


# the same names as configs.TRAINERS, which validates `trainer:` keys
REGISTRY: dict[str, TrainerKind] = {
    "dpo": TrainerKind("dpo", _dpo_script, DataArguments, _dpo_examples),
    "kto": TrainerKind("kto", _kto_script, KTODataArguments, _kto_examples),
}


def run_script(
    trainer: TrainerKind, argv: Sequence[str], config: Mapping[str, Any] | None = None
) -> TrainResult:
    """Parse ``argv`` (``CONFIG.yaml [--key value ...]``) as the trainer's script would, and run it.

    ``config``: the config file, already read (:func:`~prefdelta.train.configs.read_config`).
    """
    script = trainer.script()
    return script.main(*parse_config(script.DATACLASSES, argv, runnable=True, config=config))


def run_config(
    config: str | Path, trainer: str | None = None, overrides: Sequence[str] = ()
) -> TrainResult:
    """``prefdelta train``: the script named by ``--trainer`` or the config's ``trainer:``,
    run in this process. ``overrides`` are ``key=value`` strings, as on TRL's command line."""
    if trainer is not None and trainer not in TRAINERS:
        raise TrainConfigError(f"--trainer: expected one of {', '.join(TRAINERS)}, got {trainer!r}")
    data = read_config(config)  # once: the trainer and every check read this mapping
    chosen = trainer or read_trainer(config, data)
    if chosen is None:
        raise TrainConfigError(
            f"{config}: set `trainer: dpo` or `trainer: kto` (or pass --trainer)"
        )
    argv = ["--config", str(config)]  # whatever its name ends with
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TrainConfigError(f"--set: expected key=value, got {item!r}")
        argv += [f"--{key.removeprefix('--')}", value]
    if trainer is not None:
        argv += ["--trainer", trainer]
    return run_script(REGISTRY[chosen], argv, config=data)
