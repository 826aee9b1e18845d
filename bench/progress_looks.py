"""CPU of one look at a stage's progress: the rows finished since the last look against a
count of every key of the stage, side by side, at several stage sizes.

A terminal's bars look every second, for as long as the stage runs, and a stage of N
traces at 64 slots runs about N x 1.65 s / 64 at lognormal latency (median 1 s, sigma 1):
a look that counts every key costs the build O(N) per second, O(N^2) in all. Each size
fills a store with a stage's keys, half of them finished, then times both looks after
40 more rows (one second's answers at that latency), and prints ms per look, their ratio,
and what a stage would spend on its looks at one a second (ms per trace).

    python bench/progress_looks.py                    # 4,000, 16,000 and 32,000 traces
    python bench/progress_looks.py --traces 1000 64000
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from prefdelta.builders.progress import Finished
from prefdelta.builders.store import ResultStore

NEW_PER_LOOK = 40
LOOKS = 30


def _key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def one(traces: int, folder: Path) -> tuple[float, float]:
    """ms of CPU per look: counting every key of two generators' groups; reading what is new."""
    store = ResultStore(folder / "store.sqlite")
    keys = [_key(i) for i in range(traces)]
    groups = {"generate a": keys[0::2], "generate b": keys[1::2]}
    store.put_many("generation", {k: {"trace": "t"} for k in keys[: traces // 2]})
    finished = Finished(store, "generation", groups)
    finished.counts()  # the first look reads what a rerun reuses, once
    written = traces // 2
    count_s = new_s = 0.0
    for _ in range(LOOKS):
        fresh = keys[written : written + NEW_PER_LOOK]
        store.put_many("generation", {k: {"trace": "t"} for k in fresh})
        written += len(fresh)
        started = time.process_time()
        counted = {label: store.count("generation", ks) for label, ks in groups.items()}
        count_s += time.process_time() - started
        started = time.process_time()
        seen = finished.counts()
        new_s += time.process_time() - started
        assert seen == counted, (seen, counted)
    return 1000 * count_s / LOOKS, 1000 * new_s / LOOKS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--traces", type=int, nargs="+", default=[4000, 16000, 32000])
    args = ap.parse_args()
    for traces in args.traces:
        with tempfile.TemporaryDirectory(prefix="progress-looks-") as folder:
            count_ms, new_ms = one(traces, Path(folder))
        stage_s = traces * 1.65 / 64
        per_trace = {
            name: ms * stage_s / traces for name, ms in (("all", count_ms), ("new", new_ms))
        }
        print(
            f"{traces:>6} traces: count every key {count_ms:.2f} ms/look, rows since the last "
            f"look {new_ms:.3f} ms/look, ratio {count_ms / new_ms:.0f}x; at a look a second "
            f"over {stage_s:.0f} s: {per_trace['all']:.3f} vs {per_trace['new']:.4f} ms/trace",
            flush=True,
        )


if __name__ == "__main__":
    main()
