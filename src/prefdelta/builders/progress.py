"""Progress of a build stage, read from the result store.

distilabel runs the steps in other processes; the store is what they all write to, so
counting finished keys there shows real progress without reaching into distilabel. Keys
are counted once each: traces with identical text share one judgment. Each look reads only
the rows written since the last (:class:`Finished`): a bar redrawn every second over a
stage of 16,000 traces would otherwise look all of them up each time.

On a terminal: a live bar per group. Anywhere else (a file, a CI log, a pipe): a plain
line per group every ``every`` seconds while it moves, with its rate and time left, so a
redirected build is never silent for the length of a stage. On both, a group that has had
no new answer for ``HEARTBEAT_S`` seconds says so, again every ``HEARTBEAT_S``, with how
many are still waiting and how long a request may take: a server that never answers shows
as a build that is waiting, not one that hangs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prefdelta.builders.store import Kind, ResultStore

__all__ = [
    "HEARTBEAT_S",
    "PLAIN_EVERY_S",
    "Finished",
    "progress_line",
    "store_progress",
    "waiting_line",
]

# Seconds between plain progress lines (PREFDELTA_PROGRESS_EVERY overrides it).
PLAIN_EVERY_S = 30.0
# Seconds without a new answer before a group says it is waiting (PREFDELTA_HEARTBEAT_S).
HEARTBEAT_S = 30.0


def progress_line(label: str, done: int, total: int, made: int, elapsed: float) -> str:
    """``label: done/total (pct), rate/s, ETA``; ``made``: what this run finished itself
    (reused results say nothing about speed)."""
    pct = 100.0 * done / total if total else 100.0
    line = f"{label}: {done}/{total} ({pct:.0f}%)"
    if made > 0 and elapsed > 0:
        rate = made / elapsed
        left = (total - done) / rate
        line += f", {rate:.2f}/s, ETA {_duration(left)}" if done < total else f", {rate:.2f}/s"
    elif done < total:
        line += ", rate not known yet"
    return line


def waiting_line(label: str, left: int, total: int, silent: float, note: str | None) -> str:
    """``label: left of total still waiting; no new answer for <silent>`` (and ``note``)."""
    line = f"{label}: {left} of {total} still waiting; no new answer for {_duration(silent)}"
    return line + (f" ({note})" if note else "")


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@contextmanager
def store_progress(
    console: Console,
    kind: Kind,
    groups: dict[str, list[str]],
    store: ResultStore,
    every: float | None = None,
    notes: dict[str, str] | None = None,
) -> Iterator[None]:
    """Progress per group of result keys (per generator, or one for the judge), and a
    heartbeat while a group waits; ``notes``: per group, said with its heartbeat (how long
    its requests may take)."""
    finished = Finished(store, kind, groups)
    beat = float(os.environ.get("PREFDELTA_HEARTBEAT_S", HEARTBEAT_S))
    with _heartbeat(console, finished, beat, notes or {}):
        if console.is_terminal:
            with _bars(console, finished):
                yield
            return
        with _plain(console, finished, every):
            yield


class Finished:
    """How many of each group's keys the store holds, kept up to date from the rows
    written since the last look (:meth:`ResultStore.written_since`), so a look costs what
    finished since, however large the stage. Safe to share between threads."""

    def __init__(self, store: ResultStore, kind: Kind, groups: dict[str, list[str]]) -> None:
        self.store, self.kind = store, kind
        self.totals = {label: len(set(keys)) for label, keys in groups.items()}
        self._groups_of: dict[str, list[str]] = {}
        for label, keys in groups.items():
            for key in set(keys):
                self._groups_of.setdefault(key, []).append(label)
        self._done = dict.fromkeys(groups, 0)
        self._row = 0
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        """Finished keys per group, now."""
        with self._lock:
            self._row, keys = self.store.written_since(self.kind, self._row)
            for key in keys:
                for label in self._groups_of.get(key, ()):
                    self._done[label] += 1
            return dict(self._done)


@contextmanager
def _heartbeat(
    console: Console, finished: Finished, every: float, notes: dict[str, str]
) -> Iterator[None]:
    """A waiting line for each unfinished group without a new answer for ``every`` s."""
    now = time.monotonic()
    last: dict[str, tuple[int, float]] = {label: (-1, now) for label in finished.totals}

    def beat() -> None:
        now = time.monotonic()
        for label, done in finished.counts().items():
            total = finished.totals[label]
            before, since = last[label]
            if done != before and before != -1:
                last[label] = (done, now)
                continue
            last[label] = (done, since)
            if done < total and now - since >= every:
                line = waiting_line(label, total - done, total, now - since, notes.get(label))
                console.print(line, markup=False, highlight=False, soft_wrap=True)

    with _every(every, beat):
        yield


@contextmanager
def _plain(console: Console, finished: Finished, every: float | None) -> Iterator[None]:
    interval = every or float(os.environ.get("PREFDELTA_PROGRESS_EVERY", PLAIN_EVERY_S))
    start = finished.counts()
    began = time.monotonic()
    shown: dict[str, int] = {}

    def report(final: bool) -> None:
        elapsed = time.monotonic() - began
        for label, done in finished.counts().items():
            total = finished.totals[label]
            if shown.get(label) == done:
                continue  # nothing new since the last line
            if final and done == start[label] and label not in shown and done == total:
                continue  # all of it reused: the summary says so
            shown[label] = done
            line = progress_line(label, done, total, done - start[label], elapsed)
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    with _every(interval, lambda: report(final=False)):
        yield
    report(final=True)


@contextmanager
def _bars(console: Console, finished: Finished) -> Iterator[None]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        auto_refresh=False,  # drawn at each look, not ten times a second: 1/7 of the CPU
    )
    tasks = {label: progress.add_task(label, total=n) for label, n in finished.totals.items()}

    def update() -> None:
        for label, done in finished.counts().items():
            progress.update(tasks[label], completed=done)
        progress.refresh()

    with progress:
        with _every(1.0, update):
            yield
        update()


@contextmanager
def _every(seconds: float, call: Callable[[], None]) -> Iterator[None]:
    """Run ``call`` every ``seconds`` in a thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            call()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
