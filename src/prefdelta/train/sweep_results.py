"""The sweep's results: each run's cached result, and the table and plot of them all.

A run's ``result.json`` holds its row under a key naming its selection and the eval,
so a rerun of the sweep skips what is finished and redoes what changed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def read_cached_result(folder: Path, key: str) -> dict[str, Any] | None:
    """The row a finished run (or base model) left in ``folder``, if it was for ``key``."""
    try:
        data = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data["row"] if data.get("key") == key else None


def cache_result(
    folder: Path, key: str, row: dict[str, Any], answers: list[dict[str, Any]]
) -> None:
    """Keep a run's row (under ``key``) and its answers (``answers.jsonl``) in ``folder``."""
    with (folder / "answers.jsonl").open("w", encoding="utf-8") as f:
        for a in answers:
            f.write(json.dumps(a) + "\n")
    (folder / "result.json").write_text(
        json.dumps({"key": key, "row": row}, indent=2), encoding="utf-8"
    )


# --------------------------------------------------------------------------- table and plot

COLUMNS = (
    "run",
    "experiment",
    "selection",
    "fraction",
    "seed",
    "generator_pair",
    "pairs",
    "train_loss",
    "accuracy",
    "correct",
    "n_eval",
    "model_dir",
)


def write_results(
    rows: list[dict[str, Any]], out: Path, name: str, dimension: str, notes: Sequence[str] = ()
) -> None:
    """``results.csv``, ``results.md`` (a table per experiment) and ``results.png``."""
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    shown = [c for c in COLUMNS if c != "model_dir"]
    lines = [f"# Sweep {name}", ""]
    lines += [
        f"Accuracy on held-out prompts (math-verify against the references). Experiment "
        f"`delta`: top k% by `delta_{dimension}` vs a random k%; `generator_pair`: one run "
        "per (chosen, rejected) generator pair; `base`: the untrained model.",
        "",
        "| " + " | ".join(shown) + " |",
        "|" + "---|" * len(shown),
    ]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in shown) + " |" for r in rows]
    lines += ["", *(f"Note: {n}" for n in notes)] if notes else []
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_results(rows, out / "results.png", dimension)


def plot_results(rows: list[dict[str, Any]], path: Path, dimension: str) -> Path:
    """Accuracy vs k (top k% and mean random k%) and per generator pair, base as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next((r["accuracy"] for r in rows if r["experiment"] == "base"), None)
    full = next((r for r in rows if r["selection"] == "all"), None)
    delta_rows = [r for r in rows if r["experiment"] == "delta"]
    pair_rows = [r for r in rows if r["experiment"] == "generator_pair"]
    panels = int(bool(delta_rows)) + int(bool(pair_rows)) or 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax_iter = iter(axes[0])
    if delta_rows:
        ax = next(ax_iter)
        for selection, style in (("top", "o-"), ("random", "s--")):
            by_k: dict[float, list[float]] = {}
            for r in delta_rows:
                if r["selection"] in (selection, "all"):
                    by_k.setdefault(float(r["fraction"]), []).append(r["accuracy"])
            if not any(r["selection"] == selection for r in delta_rows):
                continue
            ks = sorted(by_k)
            means = [sum(by_k[k]) / len(by_k[k]) for k in ks]
            label = f"top k% by {dimension}" if selection == "top" else "random k% (mean)"
            ax.plot([100 * k for k in ks], means, style, label=label)
            if selection == "random":
                for k in ks:
                    ax.scatter([100 * k] * len(by_k[k]), by_k[k], s=10, alpha=0.4, color="grey")
        if base is not None:
            ax.axhline(base, color="black", linestyle=":", label="base model")
        ax.set_xlabel("k (% of pairs trained on)")
        ax.set_ylabel("held-out accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("sample-level delta")
        ax.legend(fontsize=8)
    if pair_rows:
        ax = next(ax_iter)
        bars = [(r["generator_pair"], r["accuracy"]) for r in pair_rows]
        if full is not None:
            bars.append(("all pairs", full["accuracy"]))
        ax.bar(range(len(bars)), [b[1] for b in bars], color="tab:blue")
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=20, fontsize=8)
        if base is not None:
            ax.axhline(base, color="black", linestyle=":", label="base model")
            ax.legend(fontsize=8)
        ax.set_ylabel("held-out accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title("generator-level delta (chosen:rejected)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
