"""Checks of a training config's values before TRL builds its configs from them.

Why here and not left to TRL: ``TrlParser`` passes a YAML value to ``DPOConfig`` as it is
(``learning_rate: [1, 2]`` is accepted, and fails deep inside torch's optimizer), answers a
command-line value argparse cannot convert with the whole usage (some 150 lines), and a model
or output folder that cannot be used fails only after the dataset is loaded, as a traceback
from transformers. Each check here names the file (or the command line), the key, the value
given, what is expected and what to do, in one line.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import os
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Union

from prefdelta.errors import PrefdeltaError
from prefdelta.locations import is_local_path


class TrainConfigError(PrefdeltaError, ValueError):
    """A training config or dataset that cannot be used; ``str()`` is one line to act on."""


_BOOL_WORDS = {"true", "false", "yes", "no", "t", "f", "y", "n", "1", "0"}  # transformers' own


@functools.lru_cache(maxsize=8)
def _fields(dataclass_types: tuple[type, ...]) -> dict[str, tuple[Any, Any]]:
    """name -> (type hint, default) over the dataclasses, the first one naming it winning."""
    out: dict[str, tuple[Any, Any]] = {}
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init and f.name not in out:
                out[f.name] = (hints.get(f.name, Any), f.default)
    return out


def _parses(kind: type, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        kind(value)
    except ValueError:
        return False
    return True


def _choices(union: Any) -> tuple[Any, ...]:
    """A union's members; ``SomeEnum | str`` (transformers' ``lr_scheduler_type``, ``optim``,
    the strategies) is the enum alone: the string is its value spelled out, not any string."""
    args = typing.get_args(union)
    named = [a for a in args if a is not type(None)]
    if len(named) == 2 and str in named:
        (other,) = (a for a in named if a is not str)
        if isinstance(other, type) and issubclass(other, enum.Enum):
            return tuple(a for a in args if a is not str)
    return args


def fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from YAML, or a command-line string) can be what ``hint`` declares.

    Strings that convert are accepted where argparse converts them (``5e-7`` is a string to
    YAML, a float to argparse); containers are checked as containers only. A type this does
    not know is left to TRL's own checks.
    """
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(fits(value, arg) for arg in _choices(hint))
    if hint is type(None):
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool) or (isinstance(value, str) and value.lower() in _BOOL_WORDS)
    if hint is int:
        return (isinstance(value, int) and not isinstance(value, bool)) or _parses(int, value)
    if hint is float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number or _parses(float, value)
    if hint is str:
        return isinstance(value, str)
    if hint is list or origin is list:
        return isinstance(value, list | tuple | str)
    if hint is dict or origin is dict:
        return isinstance(value, dict | str)  # transformers reads a JSON string too
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {m.value for m in hint}
    return True


def describe(hint: Any) -> str:
    """What ``hint`` expects, in words (``null`` left unsaid: it is never what is missing)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in _choices(hint) if a is not type(None)]
        return " or ".join(dict.fromkeys(describe(a) for a in args)) or "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in hint)
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    if hint in words:
        return words[hint]
    if hint is list or origin is list:
        return "a list"
    if hint is dict or origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def check_values(values: Mapping[str, Any], dataclass_types: Sequence[type], source: str) -> None:
    """Each known key's value against its field's type; the first misfit is a one-line error.

    ``source`` is the config file, or "command line" (whose values are all strings).
    """
    known = _fields(tuple(dataclass_types))
    for key, value in values.items():
        if key not in known:
            continue
        hint, default = known[key]
        if fits(value, hint):
            continue
        note = ""
        if isinstance(value, bool) and fits("no", hint):
            note = " (YAML reads an unquoted no, yes, on or off as true or false: quote the word)"
        usable = isinstance(default, int | float | str) and not isinstance(default, bool)
        example = f"give e.g. {default!r} (its default)" if usable else "fix it"
        raise TrainConfigError(
            f"{source}: {key}: expected {describe(hint)}, got {value!r}{note}; "
            f"{example} or leave it out"
        )


def command_line_values(args: Sequence[str]) -> dict[str, str]:
    """``--key value`` and ``--key=value`` pairs of a command line (a bare ``--flag`` is a
    switch and has no value to check)."""
    out: dict[str, str] = {}
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        key, sep, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if sep:
            out[key] = value
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[key] = args[i + 1]
    out.pop("config", None)
    return out


# --------------------------------------------------------------------------- paths


def check_output_dir(output_dir: str | None, source: str) -> None:
    """A folder the run can create or write into (checked now, not after loading the data)."""
    if not output_dir:
        return
    path = Path(output_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise TrainConfigError(
            f"{source}: output_dir: {output_dir} is a file, not a folder; give a folder "
            "(it is created if missing) for the trained model"
        )
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise TrainConfigError(
            f"{source}: output_dir: cannot create {output_dir}: {existing} is a file; give a "
            "folder path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TrainConfigError(
            f"{source}: output_dir: cannot write to {existing}; give a folder you can write to"
        )


@contextmanager
def _hub_logs_quiet() -> Iterator[None]:
    """huggingface_hub logs each retry of an unreachable Hub: the error below says it once."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_model(name: str | None, revision: str | None, source: str) -> None:
    """The base model can be loaded: a folder that exists, or a Hub model this machine can get.

    A ``.gguf`` file is left to :func:`prefdelta.train.configs.resolve_model`, which finds it
    (inside an installed package too) or says where it looked. A Hub id is checked by fetching
    its ``config.json``, which transformers fetches first anyway: from the cache when it is
    there, so an offline machine with the model cached trains as before.
    """
    if not name or name.endswith(".gguf"):
        return
    key = f"{source}: model_name_or_path"
    if is_local_path(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise TrainConfigError(
                f"{key}: no such folder {name} (relative to {Path.cwd()}); give a model "
                "folder, a .gguf file or a Hub id (org/name)"
            )
        if not path.is_dir():
            raise TrainConfigError(
                f"{key}: {name} is a file; give the model's folder (with config.json), a .gguf "
                "file or a Hub id (org/name)"
            )
        return
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f"{name}@{revision}" if revision not in (None, "main") else name
    try:
        with _hub_logs_quiet():
            hf_hub_download(name, "config.json", revision=revision)
    except HFValidationError:
        raise TrainConfigError(
            f"{key}: {name!r} is neither a folder here nor a Hub id (org/name); give a model "
            "folder (./path), a .gguf file or a Hub id"
        ) from None
    except LocalEntryNotFoundError:
        offline = constants.is_offline_mode()
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise TrainConfigError(
            f"{key}: {at} is not in the local Hub cache and {why} ({constants.ENDPOINT}); "
            f"download it once online (`hf download {name}`) or give a local model folder"
        ) from None
    except GatedRepoError:
        raise TrainConfigError(
            f"{key}: {name} is gated on the Hub: accept its terms on its page and log in "
            "(`hf auth login`)"
        ) from None
    except RepositoryNotFoundError:
        raise TrainConfigError(
            f"{key}: no model {name} on the Hub ({constants.ENDPOINT}), or it is private; "
            "check the id, or log in (`hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise TrainConfigError(
            f"{key}: {name} has no revision {revision!r}; give a branch, tag or commit it has"
        ) from None
    except RemoteEntryNotFoundError:
        raise TrainConfigError(
            f"{key}: {at} has no config.json, so transformers cannot load it; for a GGUF "
            "model give the path of its .gguf file"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise TrainConfigError(
            f"{key}: cannot fetch {at} from the Hub: {' '.join(str(exc).split())[:200]}"
        ) from None
