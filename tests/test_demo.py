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
    assert summary["prompts"] == 16 and summary["traces"] == 32
    assert sum(summary["judge_status"].values()) == 32  # every judgment kept, ok or not
    # the schema-enforced judge: (nearly) every judgment usable, (nearly) every pair scored
    assert summary["judge_status"].get("ok", 0) >= 0.95 * 32, summary["judge_status"]
    assert "careful vs hasty" in summary["generator_pairs"]
    # generation is real: the careful generator writes longer traces than the hasty one
    import pyarrow.parquet as pq

    traces = pq.read_table(build / "traces.parquet").to_pylist()
    tokens = {
        g: [t["output_tokens"] for t in traces if t["generator"] == g] for g in ("careful", "hasty")
    }
    assert sum(tokens["careful"]) / 16 > 2 * sum(tokens["hasty"]) / 16  # budgets 160 vs 40
    pairs = pq.read_table(build / "pairs.parquet").to_pylist()
    columns = [f"delta_{d}" for d in summary["dimensions"]] + ["delta"]
    complete = [p for p in pairs if all(p[c] is not None for c in columns)]
    assert len(complete) >= 0.9 * len(pairs) and len(pairs) == 16
    validity = summary["judge_validity"]
    assert validity["verifier_agreement"]["n_judged"] >= 0.95 * 32
    assert validity["generator_order"]["overall"]["n_pairs"] == len(complete)

    published = tmp_path / "outputs" / "demo"
    assert (published / "README.md").is_file() and (published / "recipe.yaml").is_file()
    from datasets import load_dataset

    loaded = load_dataset(str(published), "pairs", split="train")
    everything = load_dataset(str(published), "traces", split="train")
    assert loaded.num_rows == summary["pairs"]
    assert everything.num_rows == 32
    assert "published" in proc.stdout
    card = (published / "README.md").read_text()
    assert "### Judge validity" in card and "verifier AUC: aggregate" in card
    assert (published / "plots" / "delta_step_coherence.png").is_file()
