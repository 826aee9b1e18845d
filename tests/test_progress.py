"""Progress a user sees when the build's output goes to a file or a CI log."""

from __future__ import annotations

import io
import time
from pathlib import Path

from rich.console import Console

from prefdelta.builders.progress import Finished, progress_line, store_progress
from prefdelta.builders.store import Kind, ResultStore


def test_progress_line_says_stage_count_rate_and_time_left() -> None:
    assert progress_line("generate a", 5, 20, 4, 8.0) == "generate a: 5/20 (25%), 0.50/s, ETA 30 s"
    assert progress_line("judge", 0, 10, 0, 3.0) == "judge: 0/10 (0%), rate not known yet"
    assert progress_line("judge", 10, 10, 10, 5.0) == "judge: 10/10 (100%), 2.00/s"
    assert progress_line("g", 1, 3601, 1, 1.0).endswith("ETA 1 h 00 min")


def test_without_a_terminal_the_build_prints_plain_lines_while_the_stage_runs(
    tmp_path: Path,
) -> None:
    """Lines come while the work goes on (not only when the stage ends), only when a
    count moved, and a last one at the end."""
    store = ResultStore(tmp_path / "store.sqlite")
    keys = [f"k{i}" for i in range(4)]
    store.put_many("generation", {"k0": {"trace": "reused"}})
    log = io.StringIO()
    console = Console(file=log, width=60)  # not a terminal
    with store_progress(console, "generation", {"generate a": keys}, store, every=0.05):
        store.put_many("generation", {"k1": {"trace": "x"}, "k2": {"trace": "y"}})
        while "3/4" not in log.getvalue():  # an event, not a deadline
            time.sleep(0.01)
        quiet = log.getvalue()
        time.sleep(0.3)  # nothing moves: nothing is printed
        assert log.getvalue() == quiet
        store.put_many("generation", {"k3": {"trace": "z"}})
    lines = log.getvalue().splitlines()
    [moving] = [line for line in lines if line.startswith("generate a: 3/4 (75%), ")]
    assert "/s, ETA" in moving
    assert lines[-1].startswith("generate a: 4/4 (100%)")
    assert all("━" not in line for line in lines)


class _CountingStore(ResultStore):
    """A store that notes how many keys each look at progress read."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.read: list[int] = []

    def written_since(self, kind: Kind, row: int) -> tuple[int, list[str]]:
        last, keys = super().written_since(kind, row)
        self.read.append(len(keys))
        return last, keys


def test_each_look_at_progress_reads_only_what_finished_since_the_last(tmp_path: Path) -> None:
    """A bar is redrawn every second: a look that read the whole stage each time would cost
    a paper-scale build more CPU the larger it is. Counts stay exact: keys of other stages
    are not counted, a key written again is counted once, a key in two groups in both."""
    store = _CountingStore(tmp_path / "store.sqlite")
    store.put_many("generation", {f"other{i}": {"trace": "t"} for i in range(50)})
    store.put_many("generation", {"a0": {"trace": "reused"}})
    store.put_many("judgment", {"a1": {"answer": "a judgment, not a generation"}})
    finished = Finished(store, "generation", {"a": ["a0", "a1", "a2", "a1"], "b": ["b0", "a2"]})
    assert finished.totals == {"a": 3, "b": 2}
    assert finished.counts() == {"a": 1, "b": 0}
    store.put_many("generation", {"a0": {"trace": "again"}, "a2": {"trace": "x"}})
    store.put_many("generation", {"other": {"trace": "y"}, "b0": {"trace": "z"}})
    assert finished.counts() == {"a": 2, "b": 2}
    assert finished.counts() == {"a": 2, "b": 2}
    assert store.read == [51, 3, 0]


def test_at_a_terminal_bars_show_each_group_and_are_drawn_at_each_look(tmp_path: Path) -> None:
    """A bar per group that ends at its count; drawn when the counts are read (once a
    second), not at rich's ten frames a second, which cost a long build seconds of CPU."""
    store = ResultStore(tmp_path / "store.sqlite")
    log = io.StringIO()
    console = Console(file=log, width=80, force_terminal=True)
    groups = {"generate a": ["a0", "a1"], "generate b": ["b0"]}
    with store_progress(console, "generation", groups, store):
        store.put_many("generation", {"a0": {"trace": "x"}, "b0": {"trace": "y"}})
        time.sleep(2.5)  # two looks at most, however slow the machine
    frames = log.getvalue().count("generate a")
    assert 1 <= frames <= 6, log.getvalue()  # ten a second would be 25
    last = log.getvalue().rsplit("generate a", 1)[1]
    assert "1/2" in last and "1/1" in last, log.getvalue()
