"""The embedded demo, end to end, as a new user runs it: build, publish to a folder, load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_recipe_builds_publishes_and_loads(tmp_path: Path) -> None:
    build = tmp_path / "build"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefdelta",
            "build",
            str(ROOT / "recipes" / "demo.yaml"),
            "-o",
            str(build),
        ],
        cwd=tmp_path,  # the recipe publishes to outputs/demo under the working directory
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    # distilabel logs to stdout (its RichHandler), the build's own messages go to stderr
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    summary = json.loads((build / "summary.json").read_text())
    assert summary["prompts"] == 8 and summary["traces"] == 16
    assert sum(summary["judge_status"].values()) == 16  # every judgment kept, ok or not
    assert "careful vs hasty" in summary["generator_pairs"]
    # generation is real: the careful generator writes longer traces than the hasty one
    import pyarrow.parquet as pq

    traces = pq.read_table(build / "traces.parquet").to_pylist()
    tokens = {
        g: [t["output_tokens"] for t in traces if t["generator"] == g] for g in ("careful", "hasty")
    }
    assert sum(tokens["careful"]) / 8 > 2 * sum(tokens["hasty"]) / 8  # budgets 160 vs 40

    published = tmp_path / "outputs" / "demo"
    assert (published / "README.md").is_file() and (published / "recipe.yaml").is_file()
    from datasets import load_dataset

    pairs = load_dataset(str(published), "pairs", split="train")
    everything = load_dataset(str(published), "traces", split="train")
    assert pairs.num_rows == summary["pairs"]
    assert everything.num_rows == 16
    assert "published" in proc.stdout
