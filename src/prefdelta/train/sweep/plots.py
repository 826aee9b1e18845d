"""One figure per experiment of the sweep, every point with its 95% error bar.

- ``top_vs_random.png``: accuracy against k, top k% by delta and random k% (the seeds'
  mean, each seed as a dot), the base model as a band;
- ``gain_vs_generator_delta.png``: gain over the base against each generator pair's
  measured delta, with the fitted line;
- ``correctness.png``: accuracy per correctness direction, the base model as a band.

Each has one panel per eval set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefdelta.train.sweep.analysis import SetFindings

FIGURES = {  # experiment -> its figure
    "delta": "top_vs_random.png",
    "generator_pair": "gain_vs_generator_delta.png",
    "correctness": "correctness.png",
}


def figure_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The figures a sweep with these rows draws, in experiment order."""
    present = {r["experiment"] for r in rows}
    return [name for exp, name in FIGURES.items() if exp in present]


def _errors(rows: Sequence[dict[str, Any]], low: str, high: str, mid: str) -> list[list[float]]:
    return [
        [r[mid] - r[low] for r in rows],
        [r[high] - r[mid] for r in rows],
    ]


def _base_band(ax: Any, base: dict[str, Any]) -> None:
    ax.axhline(base["accuracy"], color="black", linestyle=":", label="base model")
    ax.axhspan(base["accuracy_low"], base["accuracy_high"], color="grey", alpha=0.15)


def plot_experiments(findings: Sequence[SetFindings], out: Path, dimension: str) -> list[str]:
    """Draw the figures of the experiments present; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    n = len(findings)
    if any(f.top_vs_random for f in findings):
        fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.2), squeeze=False)
        for ax, f in zip(axes[0], findings, strict=True):
            _top_vs_random(ax, f, dimension)
        drawn.append(_save(fig, out / FIGURES["delta"], plt))
    if any(f.generator for f in findings):
        fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.2), squeeze=False)
        for ax, f in zip(axes[0], findings, strict=True):
            _gain_vs_gap(ax, f)
        drawn.append(_save(fig, out / FIGURES["generator_pair"], plt))
    if any(f.correctness for f in findings):
        fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.2), squeeze=False)
        for ax, f in zip(axes[0], findings, strict=True):
            _correctness(ax, f)
        drawn.append(_save(fig, out / FIGURES["correctness"], plt))
    return drawn


def _save(fig: Any, path: Path, plt: Any) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _base(f: SetFindings) -> dict[str, Any]:
    return next(r for r in f.rows if r["experiment"] == "base")


def _top_vs_random(ax: Any, f: SetFindings, dimension: str) -> None:
    _base_band(ax, _base(f))
    tops = [(100 * c["k"], c["top"]) for c in f.top_vs_random if c["top"] is not None]
    if tops:
        rows = [t[1] for t in tops]
        ax.errorbar(
            [t[0] for t in tops],
            [r["accuracy"] for r in rows],
            yerr=_errors(rows, "accuracy_low", "accuracy_high", "accuracy"),
            fmt="o-",
            capsize=3,
            label=f"top k% by {dimension}",
        )
    # at k = 100% the "random" run is the all-pairs run itself: drawn once, as top
    rand = [c for c in f.top_vs_random if c["random"] and c["random"][0] is not c["top"]]
    if rand:
        ks = [100 * c["k"] + 1.0 for c in rand]  # nudged right so the bars do not overlap
        means = [c["random_mean"] for c in rand]
        # the bar: the widest Wilson interval among the seeds' runs
        lows = [
            m - min(r["accuracy_low"] for r in c["random"])
            for m, c in zip(means, rand, strict=True)
        ]
        highs = [
            max(r["accuracy_high"] for r in c["random"]) - m
            for m, c in zip(means, rand, strict=True)
        ]
        ax.errorbar(
            ks, means, yerr=[lows, highs], fmt="s--", capsize=3, label="random k% (seeds' mean)"
        )
        for k, c in zip(ks, rand, strict=True):
            ax.scatter(
                [k] * len(c["random"]),
                [r["accuracy"] for r in c["random"]],
                s=12,
                color="grey",
                alpha=0.6,
                zorder=3,
            )
    ax.set_xlabel("k (% of pairs trained on)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{f.name}: top-k vs random-k (95% intervals)")
    ax.legend(fontsize=8)


def _gain_vs_gap(ax: Any, f: SetFindings) -> None:
    use = "generator_delta"
    if all(p["generator_delta"] is None for p in f.generator):
        use = "generator_accuracy_delta"
    points = [p for p in f.generator if p[use] is not None]
    ax.axhline(0.0, color="black", linestyle=":", label="base model (gain 0)")
    if points:
        ax.errorbar(
            [p[use] for p in points],
            [p["gain"] for p in points],
            yerr=_errors(points, "gain_low", "gain_high", "gain"),
            fmt="o",
            capsize=3,
            label="generator pair",
        )
        for p in points:
            ax.annotate(
                p["generator_pair"],
                (p[use], p["gain"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    if f.slope is not None and f.intercept is not None:
        xs = [min(p[use] for p in points), max(p[use] for p in points)]
        s = f.slope
        ax.plot(
            xs,
            [f.intercept + s.estimate * x for x in xs],
            "-",
            color="tab:red",
            label=f"fit: slope {s.estimate:+.3f} [{s.low:+.3f}, {s.high:+.3f}]",
        )
    else:
        ax.text(0.02, 0.04, f.slope_note, transform=ax.transAxes, fontsize=7, wrap=True)
    ax.set_xlabel(use.replace("_", " ") + " (chosen - rejected)")
    ax.set_ylabel("gain over the base model")
    ax.set_title(f"{f.name}: gain against the generator delta")
    ax.legend(fontsize=8)


def _correctness(ax: Any, f: SetFindings) -> None:
    _base_band(ax, _base(f))
    rows = f.correctness
    if rows:
        ax.errorbar(
            range(len(rows)),
            [r["accuracy"] for r in rows],
            yerr=_errors(rows, "accuracy_low", "accuracy_high", "accuracy"),
            fmt="o",
            capsize=4,
            color="tab:blue",
        )
        ax.set_xticks(
            range(len(rows)),
            [f"{r['correctness']}\n({r['pairs']} pairs)" for r in rows],
            fontsize=8,
        )
        ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{f.name}: correctness directions (95% intervals)")
    ax.legend(fontsize=8)
