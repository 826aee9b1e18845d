"""Delta histograms for the dataset card, as PNG files in the published layout.

Why files, not inline images: the Hub renders relative image links in a card, and a PNG
in the repo stays inspectable on its own. matplotlib's object API with the Agg canvas is
used directly (no pyplot), so plotting never touches global backend state, and the same
data gives the same bytes: re-publishing an unchanged build changes nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefdelta.push.build_folder import Build


@dataclass(frozen=True)
class Plot:
    path: str  # relative to the layout root, e.g. plots/delta_step_coherence.png
    title: str


def _bins(values: list[float]) -> Any:
    """One bar per attainable value when deltas sit on a grid (integer scores, or their
    mean over k dimensions: steps of 1/k); otherwise 30 even bins."""
    import numpy as np

    if not values:
        return np.linspace(-1.0, 1.0, 11)
    uniq = sorted({round(v, 9) for v in values})
    low, high = uniq[0], uniq[-1]
    if len(uniq) == 1:
        return np.array([low - 0.5, low + 0.5])
    step = min(b - a for a, b in itertools.pairwise(uniq))
    on_grid = all(abs((v - low) / step - round((v - low) / step)) < 1e-6 for v in uniq)
    if on_grid and (high - low) / step <= 80:
        return np.arange(low - step / 2, high + step, step)
    return np.linspace(low, high, 31)


def _histogram(
    out: Path, values: list[float], title: str, xlabel: str, marker: float | None = None
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if values:
        ax.hist(values, bins=_bins(values), color="#4c72b0", edgecolor="white")
        ax.axvline(0.0, color="#888888", linewidth=1.0)
    else:
        ax.text(0.5, 0.5, "no pairs", ha="center", va="center", transform=ax.transAxes)
    if marker is not None:
        ax.axvline(marker, color="#c44e52", linestyle="--", label=f"generator delta {marker:+.2f}")
        ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", metadata={"Software": None})


def write_plots(build: Build, root: Path) -> list[Plot]:
    """One histogram per dimension (and the aggregate), one per generator pair; a column
    or a generator pair without a single delta gets none (the card says so instead)."""
    pairs = build.pairs
    plots: list[Plot] = []
    for dim in [*build.dimensions, None]:
        column = "delta" if dim is None else f"delta_{dim}"
        name = "aggregate delta" if dim is None else dim
        values = [v for v in pairs.column(column).to_pylist() if v is not None]
        if not values:
            continue
        rel = f"plots/{column}.png"
        _histogram(root / rel, values, f"{name} (n={len(values)})", f"{column} (chosen - rejected)")
        plots.append(Plot(rel, name))
    chosen = pairs.column("chosen_generator").to_pylist()
    rejected = pairs.column("rejected_generator").to_pylist()
    deltas = pairs.column("delta").to_pylist()
    for label, info in (build.summary.get("generator_pairs") or {}).items():
        c, _, r = label.partition(" vs ")
        values = [
            d
            for d, cg, rg in zip(deltas, chosen, rejected, strict=True)
            if cg == c and rg == r and d is not None
        ]
        if not values:
            continue
        rel = f"plots/pair_{c}__vs__{r}.png"
        gap = info.get("generator_delta")
        _histogram(
            root / rel,
            values,
            f"{c} vs {r}: aggregate delta (n={len(values)})",
            "delta (chosen - rejected)",
            marker=gap,
        )
        plots.append(Plot(rel, f"{c} vs {r}"))
    return plots
