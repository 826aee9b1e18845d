"""A result store whose whole tables tests can read: ``InspectableStore``.

Why here: a build only ever asks the store for the keys it planned, so counting or listing a
whole table is something only tests' assertions need, and it stays out of ``ResultStore``.
The reads open the store's file (``ResultStore.path``) on a connection of their own that
refuses writes (``PRAGMA query_only``), as another process reading a build's store would.
A ``mode=ro`` connection is not used: it could not checkpoint the WAL on close, so it would
leave ``-wal``/``-shm`` files behind that the store's own connections remove.

Import it where a test module checks a store:
``from support.store_fixtures import InspectableStore``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

from prefdelta.builders.store import Kind, ResultStore


class InspectableStore(ResultStore):
    """A :class:`ResultStore` (opened, and created if missing, the same way) that also counts
    and lists whole tables."""

    @contextmanager
    def _read_only(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=120, isolation_level=None)) as db:
            db.execute("PRAGMA query_only=ON")
            yield db

    def count_all(self, kind: Kind) -> int:
        """How many rows ``kind``'s table holds."""
        with self._read_only() as db:
            return int(db.execute(f"SELECT COUNT(*) FROM {kind}").fetchone()[0])

    def all_values(self, kind: Kind) -> dict[str, dict[str, Any]]:
        """Every row of ``kind``'s table: key -> decoded value."""
        with self._read_only() as db:
            rows = db.execute(f"SELECT key, value FROM {kind}").fetchall()
        return {k: json.loads(v) for k, v in rows}
