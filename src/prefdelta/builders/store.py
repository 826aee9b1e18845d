"""A content-addressed record of finished generations and judgments.

Resuming a build must not rest on distilabel's own cache, which hangs when it resumes an
interrupted run. Every model call is keyed by what determines its result (the generator's
or judge's config plus its input) and every finished result is committed here at once, so
a build killed at any point reruns only the calls that never finished, and a rerun with
only the judge changed regenerates nothing. A call that failed is not a result: only its
last error is kept (``failure``), so the build can say why it is incomplete.

SQLite in WAL mode: distilabel runs each step in its own process, and they all write here
concurrently; a crash can lose at most the batch in flight, never corrupt what is written.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

Kind = Literal["generation", "judgment", "failure"]
_KINDS: tuple[Kind, ...] = ("generation", "judgment", "failure")


class ResultStore:
    """Finished model calls by key. Safe across processes; writes are idempotent."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            for kind in _KINDS:
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {kind} ("
                    " key TEXT PRIMARY KEY, ref TEXT, value TEXT NOT NULL, created REAL NOT NULL)"
                )
                db.execute(f"CREATE INDEX IF NOT EXISTS {kind}_ref ON {kind} (ref)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    def get_many(self, kind: Kind, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, dict[str, Any]] = {}
        with self._connect() as db:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, value FROM {kind} WHERE key IN ({marks})", chunk
                ).fetchall()
                found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(
        self,
        kind: Kind,
        items: dict[str, dict[str, Any]],
        refs: dict[str, str] | None = None,
    ) -> None:
        """Commit a batch at once; a key written before keeps its first value.

        ``refs`` tags each key with what it belongs to (a judgment with its trace), so
        progress can be counted without reading the values.
        """
        if not items:
            return
        now = time.time()
        refs = refs or {}
        rows = [(k, refs.get(k), json.dumps(v, ensure_ascii=False), now) for k, v in items.items()]
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                f"INSERT OR IGNORE INTO {kind} (key, ref, value, created) VALUES (?, ?, ?, ?)", rows
            )
            db.execute("COMMIT")

    def put_failures(self, errors: dict[str, str]) -> None:
        """The last error of each failed call, by the key its result would have had."""
        if not errors:
            return
        now = time.time()
        rows = [
            (k, None, json.dumps({"error": e}, ensure_ascii=False), now) for k, e in errors.items()
        ]
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR REPLACE INTO failure (key, ref, value, created) VALUES (?, ?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")

    def count(self, kind: Kind, keys: Iterable[str], *, by: Literal["key", "ref"] = "key") -> int:
        """How many of ``keys`` (matched on key or on ref) are finished; cheap to poll."""
        wanted = list(dict.fromkeys(keys))
        total = 0
        with self._connect() as db:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                total += db.execute(
                    f"SELECT COUNT(*) FROM {kind} WHERE {by} IN ({marks})", chunk
                ).fetchone()[0]
        return total

    def existing(self, kind: Kind, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` are finished, without reading (or decoding) their values."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        with self._connect() as db:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT key FROM {kind} WHERE key IN ({marks})", chunk)
                found.update(k for (k,) in rows)
        return found
