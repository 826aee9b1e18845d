"""A sweep's wall time: its runs one after another vs side by side, one per device slot.

``launch: {devices: [...]}`` trains each run as its own process, one per device entry at a
time. Against it, two baselines run in the same script on the same data: the in-process
sweep (no ``launch:``, the default), and the same process-per-run launch with a single
device (one run after another, paying the same process start-up per run). The runs are
tiny-model DPO runs on CPU (a synthetic published dataset, a random 2-layer Llama), so
process start-up is a large share of each run; on GPUs a paper run takes hours and the
start-up disappears, which is what the ``devices`` ratio approaches as runs grow
(``--steps``). On a CPU "devices" are only slots: ``--slots`` should not exceed the cores.

Run: ``python bench/sweep_parallel.py [--runs 4] [--steps 2 8] [--slots 2]``. Prints one
JSON line per sweep, then a table of wall times and ratios against the one-slot launch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the suite's synthetic build and tiny model


def _train_yaml(path: Path, published: Path, model: Path, steps: int) -> None:
    config = {
        "trainer": "dpo",
        "dataset": str(published),
        "model_name_or_path": str(model),
        "output_dir": str(path.parent / "unused"),
        "use_cpu": True,
        "bf16": False,
        "max_steps": steps,
        "per_device_train_batch_size": 2,
        "save_strategy": "no",
        "report_to": "none",
        "max_length": 256,
        "dimension": "step_coherence",
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def _sweep_yaml(root: Path, name: str, runs: int, launch: dict | None) -> Path:
    fractions = [round(0.2 + 0.2 * i, 1) for i in range((runs + 1) // 2)]
    config: dict = {
        "name": name,
        "train": "train.yaml",
        "output_dir": str(root / name),
        "delta": {"dimension": "step_coherence", "fractions": fractions, "random_seeds": [0]},
        "generator_pairs": None,
        "eval": {"generation": {"temperature": 0.0, "max_new_tokens": 4}, "limit": 2},
    }
    if launch is not None:
        config["launch"] = launch
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _timed_sweep(path: Path) -> float:
    from prefdelta.train.sweep import run_sweep

    start = time.monotonic()
    run_sweep(path, log=lambda line: None)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="training runs per sweep (even)")
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 8], help="steps per run")
    parser.add_argument("--slots", type=int, default=2, help="device slots side by side")
    args = parser.parse_args()

    from prefdelta.push import publish_build
    from support.build_fixtures import make_build
    from support.model_fixtures import build_tiny_model

    rows = []
    with tempfile.TemporaryDirectory(prefix="prefdelta-bench-sweep-") as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", seed=0)
        publish_build(
            make_build(root / "build", n_prompts=24, seed=5), root / "published", test_size=0.25
        )
        for steps in args.steps:
            work = root / f"steps{steps}"
            work.mkdir()
            _train_yaml(work / "train.yaml", root / "published", model, steps)
            variants = {
                "in_process": None,
                "launch_1_slot": {"devices": [0]},
                f"launch_{args.slots}_slots": {"devices": list(range(args.slots))},
            }
            for name, launch in variants.items():
                seconds = _timed_sweep(_sweep_yaml(work, name, args.runs, launch))
                row = {
                    "steps": steps,
                    "variant": name,
                    "runs": args.runs,
                    "seconds": round(seconds, 1),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)

    print()
    print(f"{'steps':>5}  {'variant':<16} {'seconds':>8}  {'vs launch_1_slot':>16}")
    for steps in args.steps:
        base = next(
            r["seconds"] for r in rows if r["steps"] == steps and r["variant"] == "launch_1_slot"
        )
        for r in (r for r in rows if r["steps"] == steps):
            print(
                f"{steps:>5}  {r['variant']:<16} {r['seconds']:>8.1f}  {r['seconds'] / base:>16.2f}"
            )


if __name__ == "__main__":
    main()
