"""Load the recipe's problems: a Hub dataset through ``datasets``, or a local file."""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from prefdelta.recipe import PromptsConfig, RecipeError, resolve_path


@dataclass(frozen=True)
class Prompt:
    prompt_id: str  # sha256 of the prompt text: stable across builds and machines
    prompt: str
    reference: str | None
    # the other columns the recipe reads of this row (a dataset generator's traces)
    columns: Mapping[str, Any] = dataclass_field(default_factory=dict, compare=False, hash=False)
    # the prompt as the dataset's conversation (pairing strategy columns), published as is
    messages: tuple[Mapping[str, str], ...] | None = dataclass_field(
        default=None, compare=False, hash=False
    )


def prompt_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_KINDS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_LABELS = {"json": "JSON lines", "csv": "CSV", "parquet": "parquet"}


def check_text_file(path: Path, kind: str) -> None:
    """A local prompts file that cannot be text of its format is refused in one line:
    empty, not UTF-8 (Latin-1, UTF-16), or holding NUL bytes."""
    if not path.is_file():
        raise RecipeError([f"prompts.path: file not found: {path}"])
    if path.stat().st_size == 0:
        raise RecipeError([f"prompts.path: {path} is empty; expected {_LABELS[kind]} rows"])
    if kind == "parquet":
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and offset == 0:
                raise RecipeError([f"prompts.path: {path} is UTF-16 text; save it as UTF-8"])
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise RecipeError(
                    [
                        f"prompts.path: {path} is not UTF-8 text (byte 0x{chunk[exc.start]:02x} "
                        f"at offset {offset + exc.start}); save it as UTF-8"
                    ]
                ) from None
            if "\x00" in text:
                raise RecipeError([f"prompts.path: {path} holds NUL bytes; it is not a text file"])
            offset += len(chunk)
    if path.suffix.lower() == ".jsonl":
        _check_json_lines(path)


def _check_json_lines(path: Path) -> None:
    """Name the first line that is not a JSON object (datasets only says "trailing data")."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise RecipeError(
                    [f"prompts.path: {path}:{number}: not a JSON object ({exc.msg})"]
                ) from None
            if not isinstance(row, dict):
                raise RecipeError(
                    [
                        f"prompts.path: {path}:{number}: expected a JSON object, got {type(row).__name__}"
                    ]
                )
            for key, value in row.items():
                if isinstance(value, str):
                    try:
                        value.encode("utf-8")
                    except UnicodeEncodeError:
                        raise RecipeError(
                            [
                                f"prompts.path: {path}:{number}: {key!r} holds a lone surrogate "
                                "escape (\\ud800-\\udfff); it is not text"
                            ]
                        ) from None


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    from datasets.utils import logging as ds_logging

    was_on = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            ds_logging.enable_progress_bar()


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    message = " ".join(str(exc).split()) or type(exc).__name__
    return message[:300]


def read_prompt_table(config: PromptsConfig, base_dir: Path) -> tuple[Any, str]:
    """The prompts' table (a ``datasets.Dataset``) and where it came from, its prompt and
    reference columns checked: what ``validate`` and ``inspect`` read of a local file
    without models, and the build reads first."""
    from datasets import load_dataset

    cfg = config
    where: str
    if cfg.path is not None:
        path = resolve_path(cfg.path, base_dir)
        where = str(path)
        kind = _KINDS[path.suffix.lower()]
        check_text_file(path, kind)
        try:
            with _quiet_datasets():  # a local file reads in moments: no progress bars
                ds = load_dataset(kind, data_files=str(path), split="train")
        except Exception as exc:  # datasets wraps the reader's own error: say that one
            cause = _root_cause(exc)
            if "corresponds to no data" in cause:
                raise RecipeError([f"prompts.path: {path} has no rows"]) from None
            raise RecipeError(
                [f"prompts.path: cannot read {path} as {_LABELS[kind]}: {cause}"]
            ) from None
    else:
        where = f"{cfg.dataset} (split {cfg.split})"
        ds = load_dataset(cfg.dataset, cfg.subset, split=cfg.split, revision=cfg.revision)

    require_columns(
        ds,
        where,
        {"prompts.column": cfg.column, "prompts.reference_column": cfg.reference_column},
    )
    return ds, where


def require_columns(ds: Any, where: str, named: Mapping[str, str | None]) -> None:
    """Refuse a column the table ``ds`` (read from ``where``) lacks, naming the recipe field
    that names it and the columns there are. ``named``: recipe field -> column (None: unset)."""
    for field, column in named.items():
        if column is not None and column not in ds.column_names:
            raise RecipeError(
                [
                    f"{field}: column {column!r} is not in {where}; "
                    f"columns: {', '.join(ds.column_names)}"
                ]
            )


def load_prompts(
    config: PromptsConfig, base_dir: Path, columns: Mapping[str, str] | None = None
) -> tuple[list[Prompt], int]:
    """The prompts to build from, and how many duplicates were folded into one.

    Shuffled with the recipe's seed before ``limit``, so a limit takes a fair sample and
    the same recipe always takes the same one. Duplicate problems are folded (they would
    give duplicate pairs) and counted. ``base_dir`` is where a relative ``path`` is found
    (the recipe's folder). ``columns``: other columns each prompt carries, with the recipe
    field that names each (:func:`prefdelta.builders.given.given_columns`).
    """
    cfg = config
    if cfg.column is None:  # only a preference dataset's prompt may be its conversation
        raise RecipeError(["prompts.column: name the column holding the prompt text"])
    ds, where = read_prompt_table(cfg, base_dir)
    columns = columns or {}
    require_columns(ds, where, {named_by: column for column, named_by in columns.items()})
    ds = ds.shuffle(seed=cfg.seed)

    prompts: list[Prompt] = []
    seen: set[str] = set()
    duplicates = 0
    for index, row in enumerate(ds):
        text = row[cfg.column]
        if not isinstance(text, str) or not text.strip():
            raise RecipeError(
                [
                    f"prompts.column: row {index} of {where} (after shuffling) has no text in "
                    f"{cfg.column!r}: {text!r}"
                ]
            )
        pid = prompt_id(text)
        if pid in seen:
            duplicates += 1
            continue
        seen.add(pid)
        ref = row[cfg.reference_column] if cfg.reference_column else None
        extra = {c: row[c] for c in columns}
        prompts.append(Prompt(pid, text, None if ref is None else str(ref), extra))
        if cfg.limit is not None and len(prompts) == cfg.limit:
            break
    if not prompts:
        raise RecipeError([f"prompts: {where} has no rows"])
    return prompts, duplicates
