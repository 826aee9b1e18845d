"""A content-addressed record of finished generations and judgments.

Resuming a build must not rest on distilabel's own cache, which hangs when it resumes an
interrupted run. Every model call is keyed by what determines its result (the generator's
or judge's config plus its input) and every finished result is committed here at once, so
a build killed at any point reruns only the calls that never finished, and a rerun with
only the judge changed regenerates nothing. A call that failed is not a result: only its
last error is kept (``failure``), so the build can say why it is incomplete.

SQLite in WAL mode: distilabel runs each step in its own process, and they all write here
concurrently; a crash can lose at most the batch in flight, never corrupt what is written.
A file damaged anyway (a disk fault, a copy cut short) is refused with a :class:`StoreError`
naming it, and :func:`repair_store` copies what can still be read into a fresh store.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefdelta.errors import PrefdeltaError

Kind = Literal["generation", "judgment", "failure"]
_KINDS: tuple[Kind, ...] = ("generation", "judgment", "failure")


class StoreError(PrefdeltaError):
    """The store file cannot be read or written: damaged, on a full or read-only disk."""


class StoreCorruptError(StoreError):
    """The store file is damaged: a rerun with ``--repair`` salvages what is readable."""


def store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """``exc``, raised by SQLite on ``path``, as one line that names the file and the way out."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StoreCorruptError(
            f"{path} is damaged ({exc}); run `prefdelta build RECIPE --repair` to copy its "
            f"readable rows into a fresh store (the damaged file is kept aside), or move the "
            f"build folder {path.parent} aside and rebuild (every model call is made again)"
        )
    if name.startswith("SQLITE_FULL"):
        return StoreError(
            f"{path}: no space left on the device; free some space, then rerun (finished "
            "work is kept)"
        )
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR")):
        return StoreError(
            f"{path} cannot be written ({exc}); choose a build folder on a writable disk (-o)"
        )
    return StoreError(f"{path}: {exc}; check the file, then rerun")


class ResultStore:
    """Finished model calls by key. Safe across processes; writes are idempotent."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._open: sqlite3.Connection | None = None
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
    def session(self) -> Iterator[ResultStore]:
        """Keep one connection open while the block runs, for many small commits (a row
        each): a connection per commit costs a WAL checkpoint each time the last one
        closes, about 10 ms of waiting here, which would stall every request in flight."""
        if self._open is not None:
            yield self
            return
        try:
            self._open = sqlite3.connect(self.path, timeout=120, isolation_level=None)
            self._open.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise store_error(self.path, exc) from exc
        try:
            yield self
        finally:
            db, self._open = self._open, None
            db.close()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self._open is not None:
            try:
                yield self._open
            except sqlite3.DatabaseError as exc:
                if self._open.in_transaction:
                    self._open.rollback()
                raise store_error(self.path, exc) from exc
            return
        try:
            db = sqlite3.connect(self.path, timeout=120, isolation_level=None)
            try:
                db.execute("PRAGMA synchronous=NORMAL")
                yield db
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise store_error(self.path, exc) from exc

    def check(self) -> None:
        """Raise :class:`StoreCorruptError` unless every page of the file reads back, so a
        build finds a damaged store before it makes a call, not after."""
        with self._connect() as db:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(1)")]
        if problems != ["ok"]:
            found = " ".join(problems[0].split())
            raise store_error(self.path, _corrupt(f"integrity check: {found}"))

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
        insert = f"INSERT OR IGNORE INTO {kind} (key, ref, value, created) VALUES (?, ?, ?, ?)"
        with self._connect() as db:
            if len(rows) == 1:  # one statement is its own transaction (a streamed row's
                db.execute(insert, rows[0])  # commit): no BEGIN and COMMIT to run around it
                return
            db.execute("BEGIN IMMEDIATE")
            db.executemany(insert, rows)
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

    def written_since(self, kind: Kind, row: int) -> tuple[int, list[str]]:
        """The keys of the rows committed after row number ``row`` (0: all of them), and
        the last row's number, to pass next time: a poll reads what is new, not the stage.
        Row numbers only grow: a generation or judgment is never deleted or replaced."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT rowid, key FROM {kind} WHERE rowid > ? ORDER BY rowid", (row,)
            ).fetchall()
        return (rows[-1][0] if rows else row), [k for _, k in rows]

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


def _corrupt(message: str) -> sqlite3.DatabaseError:
    exc = sqlite3.DatabaseError(message)
    exc.sqlite_errorname = "SQLITE_CORRUPT"  # type: ignore[attr-defined]
    return exc


@dataclass
class StoreRepair:
    """What :func:`repair_store` saved: rows per table, and the rows it could not read."""

    aside: Path  # where the damaged file now is
    salvaged: dict[str, int] = field(default_factory=dict)
    lost: int = 0  # rows that exist but could not be read
    uncounted: list[str] = field(default_factory=list)  # tables whose losses are unknown

    def describe(self) -> str:
        kept = ", ".join(f"{kind} {n}" for kind, n in self.salvaged.items())
        lost = f"{self.lost} unreadable row(s) lost"
        if self.uncounted:
            lost += f" (and an unknown number from {', '.join(self.uncounted)})"
        return (
            f"salvaged {sum(self.salvaged.values())} row(s) ({kept}); {lost}; the damaged "
            f"file is kept as {self.aside}"
        )


def repair_store(path: str | Path) -> StoreRepair | None:
    """Move a damaged store aside (``<name>.corrupt-<time>``, with its WAL) and copy every
    row that can still be read into a fresh store at ``path``. Nothing is deleted. None when
    there is no store, or it reads back whole (nothing to repair)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        ResultStore(path).check()
        return None
    except StoreCorruptError:
        pass
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():  # an earlier repair's file is never overwritten
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    report = StoreRepair(aside)
    rows: dict[Kind, list[tuple[Any, ...]]] = {}
    try:
        with closing(sqlite3.connect(aside, isolation_level=None)) as src:
            src.execute("PRAGMA query_only=ON")
            for kind in _KINDS:
                rows[kind], lost = _salvage(src, kind)
                if lost is None:
                    report.uncounted.append(kind)
                report.lost += lost or 0
    except sqlite3.DatabaseError:  # not a database at all: nothing to read
        report.uncounted = [k for k in _KINDS if k not in rows]
    fresh = path.with_name(f".{path.name}.repair")
    fresh.unlink(missing_ok=True)
    store = ResultStore(fresh)
    with store._connect() as db:
        db.execute("BEGIN IMMEDIATE")
        for kind, found in rows.items():
            db.executemany(
                f"INSERT OR IGNORE INTO {kind} (key, ref, value, created) VALUES (?, ?, ?, ?)",
                found,
            )
        db.execute("COMMIT")
    os.replace(fresh, path)  # the store's last connection has folded its WAL in
    report.salvaged = {kind: len(rows.get(kind, [])) for kind in _KINDS}
    return report


def _salvage(src: sqlite3.Connection, kind: Kind) -> tuple[list[tuple[Any, ...]], int | None]:
    """The readable rows of one table, and how many rows could not be read (None: not
    known, the damage hides how many rows the table had). A scan stops at the first damaged
    page; the rows after it are then looked up one by one, by rowid."""
    rows: list[tuple[Any, ...]] = []
    lost = 0
    last = 0
    select = f"SELECT rowid, key, ref, value, created FROM {kind}"

    def keep(row: tuple[Any, ...]) -> None:
        nonlocal lost
        try:
            json.loads(row[3])
            rows.append(row[1:])
        except (TypeError, ValueError):  # a value cut short is no result
            lost += 1

    try:
        for row in src.execute(f"{select} ORDER BY rowid"):
            keep(row)
            last = row[0]
        return rows, lost
    except sqlite3.DatabaseError:
        pass
    try:
        high = src.execute(f"SELECT max(rowid) FROM {kind}").fetchone()[0] or last
    except sqlite3.DatabaseError:  # the rows after the damage cannot even be counted
        return rows, None
    for rowid in range(last + 1, high + 1):
        try:
            row = src.execute(f"{select} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            lost += 1
            continue
        if row is not None:
            keep(row)
    return rows, lost
