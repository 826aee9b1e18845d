"""Delta-filtered load: parquet filter pushdown vs full load then ``Dataset.filter``.

A synthetic one-million-pair dataset in the published layout (the ``pairs`` schema of
``prefdelta.builders.build``, ordered by ``prefdelta.push.layout.sort_pairs`` and written
by ``write_table``, so the rows and row groups are what ``prefdelta publish`` writes), then:

- pushdown: ``load_dataset(folder, "pairs", split="train",
  filters=[("delta_step_coherence", ">=", 2)])``;
- baseline: ``load_dataset(folder, "pairs", split="train")`` then
  ``.filter(lambda r: r["delta_step_coherence"] >= 2)``;
- also shown, not a goal: the same baseline with the fastest Python filter
  (``batched=True, input_columns=[...]``), so the comparison is not only against the
  slowest way to write it.

Each runs in a fresh subprocess with its own empty ``HF_DATASETS_CACHE`` (nothing cached
helps), timing load + filter and reading peak RSS with ``resource.getrusage`` there.
Layouts (``--sort-by``): pairs stored by the filtered column (``publish.sort_by:
delta_step_coherence``, as the paper recipe publishes), by the aggregate ``delta`` (the
default), and in build order (``none``). ``--trace-chars`` pads the traces to a realistic
length (chosen ~N characters, rejected ~N/2); the default keeps them a few words long.

Run: ``.venv/bin/python bench/filter_load.py [--rows 1000000] [--sort-by ...]
[--trace-chars 2000] [--threshold 2]``. Prints the ratios against the goals (>= 20x
faster, <= 1/5 of the peak memory); exits 0 either way. Results: ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEED_GOAL = 20.0
MEMORY_GOAL = 0.2
DIMENSIONS = ["factuality", "strategy_coherence", "step_coherence", "numerical_precision"]
COLUMN = "delta_step_coherence"
THRESHOLD = 2

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import datasets
datasets.disable_progress_bars()
folder, mode, column, threshold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rss_imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t1 = time.perf_counter()
if mode == "pushdown":
    ds = datasets.load_dataset(folder, "pairs", split="train", filters=[(column, ">=", threshold)])
else:
    ds = datasets.load_dataset(folder, "pairs", split="train")
    if mode == "filter":
        ds = ds.filter(lambda r: r[column] >= threshold)
    else:
        ds = ds.filter(lambda xs: [x >= threshold for x in xs], batched=True, input_columns=[column])
t2 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"rows": len(ds), "seconds": t2 - t1, "import_seconds": t1 - t0,
                              "peak_rss_mb": rss / 1024, "import_rss_mb": rss_imported / 1024}))
"""


def make_dataset(
    folder: Path,
    rows: int,
    sort_by: str,
    threshold: float = THRESHOLD,
    trace_chars: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """Write ``rows`` synthetic pairs in the published layout; return their delta spread.

    ``sort_by`` is the publish option (``none``: rows in build order); ``trace_chars`` pads
    each chosen trace to about that many characters (rejected: half), as real traces are.
    """
    import numpy as np
    import pyarrow as pa
    from huggingface_hub import DatasetCardData

    from prefdelta.push.card import configs_metadata
    from prefdelta.push.layout import data_path, sort_pairs, write_table
    from prefdelta.schema import pairs_schema

    rng = np.random.default_rng(seed)
    schema = pairs_schema(DIMENSIONS)
    ids = np.arange(rows)
    prompt_ids = ids // 2  # two pairs per prompt (two rejected generators)

    def flat(values: object, kind: pa.DataType | None = None) -> pa.Array:
        # pyarrow returns a ChunkedArray for large numpy string arrays; nested arrays need one
        array = pa.array(values, kind)
        return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array

    def text(prefix: str, values: np.ndarray, pad: int = 0) -> pa.Array:
        short = flat(np.char.add(prefix, values.astype(str)), pa.string())
        if not pad:
            return short
        filler = pa.array([("Let me check that step again. " * (pad // 30 + 1))[:pad]])
        import pyarrow.compute as pc

        return pc.binary_join_element_wise(filler.take(np.zeros(rows, dtype=np.int64)), short, "")

    def conversation(role: str, contents: pa.Array) -> pa.Array:
        roles = flat(np.full(rows, role), pa.string())
        messages = pa.StructArray.from_arrays([roles, contents], names=["role", "content"])
        offsets = pa.array(np.arange(rows + 1, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, messages)

    chosen = {d: rng.integers(2, 6, rows).astype(float) for d in DIMENSIONS}
    rejected = {d: rng.integers(1, 5, rows).astype(float) for d in DIMENSIONS}

    def scores(values: dict[str, np.ndarray]) -> pa.Array:
        return pa.StructArray.from_arrays(
            [pa.array(values[d]) for d in DIMENSIONS], names=DIMENSIONS
        )

    rejected_gen = np.where(ids % 2 == 0, "weak", "weaker")
    columns: dict[str, pa.Array] = {
        "pair_id": text("pair-", ids),
        "prompt_id": text("prompt-", prompt_ids),
        "prompt": conversation(
            "user", text("What is the sum of the first n odd numbers? n=", prompt_ids)
        ),
        "chosen": conversation(
            "assistant", text("Step 1: pair terms. Step 2: n^2. Answer: ", ids, trace_chars)
        ),
        "rejected": conversation(
            "assistant", text("The answer is probably ", ids, trace_chars // 2)
        ),
        "chosen_generator": pa.array(np.full(rows, "strong")),
        "rejected_generator": pa.array(rejected_gen),
        "chosen_model": pa.array(np.full(rows, "org/strong-reasoner")),
        "rejected_model": pa.array(np.char.add("org/", rejected_gen)),
        "chosen_scores": scores(chosen),
        "rejected_scores": scores(rejected),
    }
    for d in DIMENSIONS:
        columns[f"delta_{d}"] = pa.array(chosen[d] - rejected[d])
    columns["delta"] = pa.array(sum(chosen[d] - rejected[d] for d in DIMENSIONS) / len(DIMENSIONS))
    columns["generator_delta"] = pa.array(np.where(rejected_gen == "weak", 1.0, 2.1))
    columns["generator_accuracy_delta"] = pa.array(np.where(rejected_gen == "weak", 0.3, 0.6))
    columns["chosen_correct"] = pa.array(rng.random(rows) < 0.8)
    columns["rejected_correct"] = pa.array(rng.random(rows) < 0.4)
    columns["judge_model"] = pa.array(np.full(rows, "org/judge"))
    columns["chosen_judge_status"] = pa.array(np.full(rows, "ok"))
    columns["rejected_judge_status"] = pa.array(np.full(rows, "ok"))
    columns["chosen_trace_key"] = text("trace-c-", ids)
    columns["rejected_trace_key"] = text("trace-r-", ids)
    table = pa.table([columns[f.name] for f in schema], schema=schema)
    if sort_by != "none":
        table = sort_pairs(table, sort_by)
    write_table(table, folder / data_path("pairs", "train"))
    pairs_only = DatasetCardData(configs=configs_metadata(["train"])[:1])
    (folder / "README.md").write_text(f"---\n{pairs_only.to_yaml()}\n---\n", encoding="utf-8")
    import pyarrow.parquet as pq

    path = folder / data_path("pairs", "train")
    values = table.column(COLUMN).to_numpy()
    return {
        "selected": float((values >= threshold).mean()),
        "row_groups": pq.read_metadata(path).num_row_groups,
        "bytes": path.stat().st_size,
    }


def _child(args: list[str], what: str, env: dict[str, str] | None = None) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"could not {what}:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def run(folder: Path, mode: str, threshold: float = THRESHOLD) -> dict[str, float]:
    """One load in a fresh process with an empty datasets cache."""
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        env = {**os.environ, "HF_DATASETS_CACHE": cache, "HF_HUB_OFFLINE": "1"}
        return _child(["-c", CHILD, str(folder), mode, COLUMN, str(threshold)], mode, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--sort-by",
        nargs="+",
        default=[COLUMN, "delta", "none"],
        help="publish layouts to measure: the column pairs are stored by (none: build order)",
    )
    parser.add_argument("--trace-chars", type=int, default=0, help="pad chosen traces to this")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help=f"min {COLUMN}")
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # internal: child mode
    args = parser.parse_args()
    if args.make:
        info = make_dataset(args.make, args.rows, args.sort_by[0], args.threshold, args.trace_chars)
        print("RESULT " + json.dumps(info))
        return
    for sort_by in args.sort_by:
        measure(args.rows, sort_by, args.threshold, args.trace_chars)


def measure(rows: int, sort_by: str, threshold: float, trace_chars: int) -> None:
    """Make one layout and time the three loads on it."""
    # Linux carries ru_maxrss across fork+exec: this process stays small (stdlib only) so
    # the children's peak RSS is their own. The dataset is made in a child too.
    with tempfile.TemporaryDirectory(prefix="bench-filter-load-") as tmp:
        folder = Path(tmp) / "dataset"
        folder.mkdir(parents=True)
        started = time.perf_counter()
        command = [__file__, "--make", str(folder), "--rows", str(rows), "--sort-by", sort_by]
        command += ["--threshold", str(threshold), "--trace-chars", str(trace_chars)]
        info = _child(command, "make the dataset")
        print(
            f"\n== layout: pairs stored by {sort_by} ==\n"
            f"dataset: {rows:,} pairs, {info['row_groups']} row groups, "
            f"{info['bytes'] / 2**20:.0f} MiB parquet, {info['selected']:.1%} have {COLUMN} >= "
            f"{threshold:g}; traces padded to {trace_chars} chars; "
            f"written in {time.perf_counter() - started:.1f} s"
        )
        results = {mode: run(folder, mode, threshold) for mode in ("pushdown", "filter", "batched")}

    kept = {m: r["rows"] for m, r in results.items()}
    assert len(set(kept.values())) == 1, f"the three loads disagree: {kept}"
    print(f"{'method':<44}{'rows':>10}{'seconds':>10}{'peak RSS MiB':>14}{'above import':>14}")
    names = {
        "pushdown": "load_dataset(filters=...)  [pushdown]",
        "filter": "load_dataset + .filter(lambda r: ...)",
        "batched": "load_dataset + .filter(batched, 1 column)",
    }
    for mode, r in results.items():
        print(
            f"{names[mode]:<44}{r['rows']:>10,}{r['seconds']:>10.2f}{r['peak_rss_mb']:>14.0f}"
            f"{r['peak_rss_mb'] - r['import_rss_mb']:>14.0f}"
        )
    push, base, fast = results["pushdown"], results["filter"], results["batched"]
    speed = base["seconds"] / push["seconds"]
    memory = push["peak_rss_mb"] / base["peak_rss_mb"]
    above = (push["peak_rss_mb"] - push["import_rss_mb"]) / max(
        base["peak_rss_mb"] - base["import_rss_mb"], 1e-9
    )
    print(
        f"speed-up vs .filter(lambda): {speed:.1f}x (goal >= {SPEED_GOAL:.0f}x: "
        f"{'met' if speed >= SPEED_GOAL else 'MISSED'})"
    )
    print(
        f"peak memory vs .filter(lambda): {memory:.2f} of the baseline (goal <= {MEMORY_GOAL}: "
        f"{'met' if memory <= MEMORY_GOAL else 'MISSED'}); above the import baseline: {above:.2f}"
    )
    print(f"speed-up vs the batched one-column filter: {fast['seconds'] / push['seconds']:.1f}x")


if __name__ == "__main__":
    main()
