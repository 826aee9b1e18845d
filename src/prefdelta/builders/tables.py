"""A build's tables, written a chunk of prompts at a time.

A build of thousands of prompts with long traces must not hold every text at once: its
end reads the store a chunk of prompts at a time (all of a prompt's traces together, since
pairs are made within a prompt), writes that chunk's rows, and keeps of each row only what
the summary and the pairing need (:func:`light`: no texts). The files are written hidden
and put in place only once every chunk is in, so a failure never leaves half a table.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["CHUNK_PROMPTS", "PAIR_TEXTS", "TableFiles", "light", "prompt_chunks", "trace_texts"]

CHUNK_PROMPTS = 256  # prompts whose traces are read and written at a time

# the columns that hold texts: what a light row leaves out
PAIR_TEXTS = frozenset({"prompt", "chosen", "rejected"})
_TRACE_TEXTS = ("prompt", "trace", "rationales", "judge_raw", "judge_reasoning")
_JUDGE_TEXTS = ("rationales", "judge_raw")  # of a panel judge's own columns

T = TypeVar("T")


def trace_texts(judges: Iterable[str]) -> frozenset[str]:
    """The text columns of a traces row (a panel's ``judges``' own included)."""
    return frozenset([*_TRACE_TEXTS, *(f"{c}_{n}" for n in judges for c in _JUDGE_TEXTS)])


def light(row: Mapping[str, Any], texts: frozenset[str]) -> dict[str, Any]:
    """``row`` without its ``texts`` columns: what the summary reads of it."""
    return {k: v for k, v in row.items() if k not in texts}


def prompt_chunks(
    items: Sequence[T], prompt_id: Callable[[T], str], size: int | None = None
) -> Iterator[list[T]]:
    """Consecutive runs of ``items`` of ``size`` prompts each (default
    :data:`CHUNK_PROMPTS`); a prompt's items, consecutive in ``items``, stay in one run."""
    size = size or CHUNK_PROMPTS
    chunk: list[T] = []
    seen = 0
    last = None
    for item in items:
        pid = prompt_id(item)
        if pid != last:
            if seen == size:
                yield chunk
                chunk, seen = [], 0
            seen += 1
            last = pid
        chunk.append(item)
    if chunk:
        yield chunk


class TableFiles:
    """Parquet tables in ``folder`` (name -> schema), written a chunk of rows at a time to
    hidden files (``.<name>.tmp``) and put in place, each at once, when the block ends
    without an error; on an error (a full disk) none of them is left behind."""

    def __init__(self, folder: Path, schemas: Mapping[str, pa.Schema]) -> None:
        self.folder = folder
        self.schemas = dict(schemas)
        self.writers: dict[str, pq.ParquetWriter] = {}

    def _tmp(self, name: str) -> Path:
        return self.folder / f".{name}.tmp"

    def __enter__(self) -> TableFiles:
        try:
            for name, schema in self.schemas.items():
                self.writers[name] = pq.ParquetWriter(self._tmp(name), schema)
        except BaseException:
            self._drop()
            raise
        return self

    def write(self, name: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            table = pa.Table.from_pylist(rows, schema=self.schemas[name])
            self.writers[name].write_table(table)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._drop()
            return
        try:
            for writer in self.writers.values():
                writer.close()
            for name in self.schemas:
                os.replace(self._tmp(name), self.folder / name)
        except BaseException:  # a full disk leaves no half-written table behind
            self._drop()
            raise

    def _drop(self) -> None:
        for writer in self.writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        for name in self.schemas:
            self._tmp(name).unlink(missing_ok=True)
