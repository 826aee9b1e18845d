"""The sweep's runs: which training runs each experiment needs, planned before any trains.

From the sweep config and a few columns of the training split (generator pairs, one
delta, the verifier's verdicts): one run per k and seed, per generator pair and per
correctness direction. A run is only its selection keys; the rest of its training config
is the sweep's base config, so what differs between runs is exactly what they select.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefdelta.loading import CORRECTNESS, CORRECTNESS_DIRECTIONS
from prefdelta.train.sweep.config import SELECTION_KEYS, CorrectnessSweep, SweepConfig, SweepError


@dataclass(frozen=True)
class RunSpec:
    """One training run of the sweep."""

    name: str
    experiment: str  # delta | generator_pair | correctness
    selection: str  # top | random | all | pair | correctness
    fraction: float | None = None
    seed: int | None = None
    generator_pair: str | None = None
    correctness: str | None = None
    pairs: int | None = None  # correctness runs: each direction's draw, all of one size

    def keys(self, dimension: str) -> dict[str, Any]:
        """The selection keys this run sets (the others are reset to their defaults)."""
        out: dict[str, Any] = dict.fromkeys(SELECTION_KEYS)
        out["selection_seed"] = 0
        out["dimension"] = dimension
        if self.selection == "top":
            out["top_fraction"] = self.fraction
        elif self.selection == "random":
            out["random_fraction"] = self.fraction
            out["selection_seed"] = self.seed
        elif self.selection == "pair":
            out["generator_pairs"] = [self.generator_pair]
        elif self.selection == "correctness":
            out["correctness"] = self.correctness
            out["num_pairs"] = self.pairs
            out["selection_seed"] = self.seed
        return out

    def meta(self) -> dict[str, Any]:
        """What a results row says about the run."""
        return {
            "run": self.name,
            "experiment": self.experiment,
            "selection": self.selection,
            "fraction": self.fraction,
            "seed": self.seed,
            "generator_pair": self.generator_pair,
            "correctness": self.correctness,
        }


def plan_runs(config: SweepConfig, available_pairs: list[str]) -> list[RunSpec]:
    """Every run, once: k = 100% is one `all` run, shared by the top and random lines."""
    runs: list[RunSpec] = []
    if config.delta is not None:
        d = config.delta
        for k in d.fractions:
            pct = f"{100 * k:g}"
            if k >= 1.0:
                runs.append(RunSpec("all", "delta", "all", 1.0))
                continue
            runs.append(RunSpec(f"top{pct}-{d.dimension}", "delta", "top", k))
            for seed in d.random_seeds:
                runs.append(RunSpec(f"random{pct}-seed{seed}", "delta", "random", k, seed))
    if config.generator_pairs is not None:
        pairs = available_pairs if config.generator_pairs == "all" else config.generator_pairs
        for pair in pairs:
            if pair not in available_pairs:
                raise SweepError(
                    [
                        f"generator_pairs: {pair!r} is not in the dataset; "
                        f"present: {', '.join(available_pairs) or 'none'}"
                    ]
                )
            runs.append(
                RunSpec(
                    f"pair-{pair.replace(':', '-vs-')}",
                    "generator_pair",
                    "pair",
                    generator_pair=pair,
                )
            )
    return runs


def correctness_runs(
    config: CorrectnessSweep, counts: dict[str, int]
) -> tuple[list[RunSpec], list[str]]:
    """One run per correctness direction, each a draw of the same number of pairs.

    The size is ``config.pairs``, or else the smallest direction that has ``min_pairs``:
    directions then differ only in what their pairs are, not in how many. A direction
    with too few pairs is skipped, its count said.
    """
    notes: list[str] = []
    enough = {d: n for d, n in counts.items() if d in config.directions and n >= config.min_pairs}
    size = config.pairs or (min(enough.values()) if enough else None)
    runs: list[RunSpec] = []
    for d in config.directions:
        n = counts.get(d, 0)
        if size is None or n < config.min_pairs or n < size:
            need = config.min_pairs if size is None or n < config.min_pairs else size
            what = "min_pairs" if need == config.min_pairs and n < config.min_pairs else "pairs"
            notes.append(
                f"skipping correctness {d}: {n} pair(s) in the training split, fewer than "
                f"{what} ({need})"
            )
            continue
        runs.append(
            RunSpec(
                f"correct-{d}",
                "correctness",
                "correctness",
                seed=config.seed,
                correctness=d,
                pairs=size,
            )
        )
    return runs, notes


def direction_counts(chosen: list[bool | None], rejected: list[bool | None]) -> dict[str, int]:
    """Pairs per correctness direction (pairs the verifier could not check count nowhere)."""
    counts = dict.fromkeys(CORRECTNESS_DIRECTIONS, 0)
    for c, r in zip(chosen, rejected, strict=True):
        row = {"chosen_correct": c, "rejected_correct": r}
        for d in CORRECTNESS_DIRECTIONS:
            if all(row[col] is value for col, value in CORRECTNESS[d]):
                counts[d] += 1
    return counts


def generator_gaps(values: dict[str, list[Any]]) -> dict[str, tuple[float | None, float | None]]:
    """chosen:rejected -> its measured (judge-score gap, verifier-accuracy gap)."""
    out: dict[str, tuple[float | None, float | None]] = {}
    score = values.get("generator_delta") or [None] * len(values["chosen_generator"])
    accuracy = values.get("generator_accuracy_delta") or [None] * len(score)
    for c, r, s, a in zip(
        values["chosen_generator"], values["rejected_generator"], score, accuracy, strict=True
    ):
        known = out.get(f"{c}:{r}", (None, None))
        out[f"{c}:{r}"] = (
            known[0] if known[0] is not None else s,
            known[1] if known[1] is not None else a,
        )
    return out


def drop_unrankable(
    runs: list[RunSpec], column: str, values: list[Any]
) -> tuple[list[RunSpec], str | None]:
    """Without a single scored pair there is no top k%: those runs are dropped, and said so.

    The random k% and generator-pair runs still mean something (a build whose judge
    scored nothing still has its generator-level pairs), so the sweep goes on without them.
    """
    if any(v is not None for v in values):
        return runs, None
    kept = [r for r in runs if r.selection != "top"]
    dropped = len(runs) - len(kept)
    return kept, (
        f"skipping {dropped} top-k run(s): none of the {len(values)} pairs has a {column} "
        "(the judge scored no pair on both sides); random and generator-pair runs go ahead"
    )
