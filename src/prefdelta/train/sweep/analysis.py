"""The sweep's comparisons on each eval set: every run against the base model, top k%
against random k%, gain against the generator delta, the correctness directions.

Every difference is paired over the same prompts (:mod:`prefdelta.stats`): one seed per
eval set, so all of them see the same bootstrap resamples. The report
(:mod:`prefdelta.train.sweep.results`) and the figures (:mod:`prefdelta.train.sweep.plots`)
both read what :func:`analyse` returns.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefdelta.stats import Interval, gain_slope, paired_difference, wilson
from prefdelta.train.sweep.config import SweepConfig


@dataclass
class RunResult:
    """One run (or the base model): what it is and trained on, and its result per eval set."""

    info: dict[str, Any]
    evals: dict[str, dict[str, Any]]  # eval set -> accuracy, correct, n_eval, outcomes


COLUMNS = (
    "run",
    "experiment",
    "selection",
    "fraction",
    "seed",
    "generator_pair",
    "correctness",
    "eval_set",
    "scorer",
    "pairs",
    "train_loss",
    "generator_delta",
    "generator_accuracy_delta",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "correct",
    "n_eval",
    "gain",
    "gain_low",
    "gain_high",
    "significant",
    "model_dir",
)


@dataclass
class SetFindings:
    """One eval set's comparisons: every run against the base, and each experiment's."""

    name: str
    scorer: str
    n_prompts: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    top_vs_random: list[dict[str, Any]] = field(default_factory=list)
    generator: list[dict[str, Any]] = field(default_factory=list)
    slope: Interval | None = None
    intercept: float | None = None
    slope_note: str = ""
    correctness: list[dict[str, Any]] = field(default_factory=list)

    @property
    def differences(self) -> list[Interval]:
        """Every difference the report tests: each trained model's gain over the base (a
        model reported under two experiments counts once), and top minus random."""
        gains = {r["model_dir"]: r["_gain"] for r in self.rows if r["_gain"] is not None}
        return [*gains.values()] + [c["difference"] for c in self.top_vs_random if c["difference"]]


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def analyse(results: Sequence[RunResult], config: SweepConfig) -> list[SetFindings]:
    """Per eval set: rows with accuracy and gain intervals, and the three experiments."""
    findings = []
    base = next(r for r in results if r.info["experiment"] == "base")
    for s in config.eval.sets:
        base_out = base.evals[s.name]["outcomes"]
        seed = config.eval.bootstrap_seed
        f = SetFindings(s.name, s.scorer, len(base_out))
        for r in results:
            ev = r.evals[s.name]
            acc = wilson(ev["correct"], ev["n_eval"])
            gain = None if r is base else paired_difference(ev["outcomes"], base_out, seed=seed)
            f.rows.append(
                {
                    **r.info,
                    "eval_set": s.name,
                    "scorer": s.scorer,
                    "accuracy": _round(acc.estimate),
                    "accuracy_low": _round(acc.low),
                    "accuracy_high": _round(acc.high),
                    "correct": ev["correct"],
                    "n_eval": ev["n_eval"],
                    "gain": None if gain is None else _round(gain.estimate),
                    "gain_low": None if gain is None else _round(gain.low),
                    "gain_high": None if gain is None else _round(gain.high),
                    "significant": None if gain is None else gain.significant,
                    "_gain": gain,
                    "_outcomes": ev["outcomes"],
                }
            )
        _top_vs_random(f, seed)
        _generator_gap(f, base_out, seed)
        f.correctness = [r for r in f.rows if r["experiment"] == "correctness"]
        findings.append(f)
    return findings


def _top_vs_random(f: SetFindings, seed: int) -> None:
    delta = [r for r in f.rows if r["experiment"] == "delta"]
    for k in sorted({float(r["fraction"]) for r in delta}):
        at_k = [r for r in delta if float(r["fraction"]) == k]
        full = next((r for r in at_k if r["selection"] == "all"), None)
        top = full or next((r for r in at_k if r["selection"] == "top"), None)
        randoms = [full] if full else [r for r in at_k if r["selection"] == "random"]
        accs = [r["accuracy"] for r in randoms]
        entry: dict[str, Any] = {
            "k": k,
            "top": top,
            "random": randoms,
            "random_mean": statistics.fmean(accs) if accs else None,
            "random_sd": statistics.stdev(accs) if len(accs) > 1 else None,
            "random_min": min(accs) if accs else None,
            "random_max": max(accs) if accs else None,
            "difference": None,
        }
        if top is not None and randoms and not full:
            mean_random = np.mean([r["_outcomes"] for r in randoms], axis=0)
            entry["difference"] = paired_difference(top["_outcomes"], mean_random, seed=seed)
        f.top_vs_random.append(entry)


def _generator_gap(f: SetFindings, base_out: list[bool], seed: int) -> None:
    points = [r for r in f.rows if r["experiment"] == "generator_pair"]
    f.generator = points
    if not points:
        return
    use = "generator_delta"
    if all(p["generator_delta"] is None for p in points):
        use = "generator_accuracy_delta"
    known = [p for p in points if p[use] is not None]
    if len({p[use] for p in known}) < 2:
        f.slope_note = (
            f"no slope: it needs at least two generator pairs with different {use} "
            f"(this sweep has {len(known)} with a measured gap)"
        )
        return
    f.slope, f.intercept = gain_slope(
        [p[use] for p in known], [p["_outcomes"] for p in known], base_out, seed=seed
    )
    f.slope_note = (
        f"slope {f.slope.estimate:+.3f} accuracy per unit of {use}, 95% interval "
        f"[{f.slope.low:+.3f}, {f.slope.high:+.3f}] (least squares over {len(known)} pairs; "
        "the interval resamples eval prompts, not training runs)"
    )
