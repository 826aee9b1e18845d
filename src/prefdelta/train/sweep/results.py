"""The sweep's results: each run's cached result, and the table, report and figures.

A run's ``trained.json`` names its selection, and each eval set's ``result.json`` its
model and prompts, so a rerun of the sweep skips what is finished and redoes what changed.
The comparisons are :mod:`prefdelta.train.sweep.analysis`, the figures
:mod:`prefdelta.train.sweep.plots`.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefdelta.stats import RESAMPLES
from prefdelta.train.sweep.analysis import COLUMNS, RunResult, SetFindings, analyse
from prefdelta.train.sweep.config import SweepConfig
from prefdelta.train.sweep.plots import plot_experiments


def read_cached_result(path: Path, key: str) -> dict[str, Any] | None:
    """The value a finished step left in ``path``, if it was for ``key``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data["value"] if data.get("key") == key else None


def write_cached_result(path: Path, key: str, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "value": value}, indent=2), encoding="utf-8")


def cache_answers(
    folder: Path, key: str, result: dict[str, Any], answers: list[dict[str, Any]]
) -> None:
    """Keep one eval set's result (under ``key``) and its answers (``answers.jsonl``)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "answers.jsonl").open("w", encoding="utf-8") as f:
        for a in answers:
            f.write(json.dumps(a) + "\n")
    write_cached_result(folder / "result.json", key, result)


# --------------------------------------------------------------------------- report


def write_results(
    results: Sequence[RunResult],
    out: Path,
    config: SweepConfig,
    dimension: str,
    notes: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """``results.csv``, ``results.md`` and a figure per experiment; returns the rows."""
    findings = analyse(results, config)
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for f in findings for r in f.rows]
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    figures = plot_experiments(findings, out, dimension)
    lines = _report(findings, config, dimension, notes, figures)
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


def _num(v: Any, signed: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:+.3f}" if signed else f"{v:.3f}"
    return str(v)


def _iv(est: float | None, low: float | None, high: float | None, signed: bool = False) -> str:
    if est is None:
        return ""
    return f"{_num(est, signed)} [{_num(low, signed)}, {_num(high, signed)}]"


def _report(
    findings: list[SetFindings],
    config: SweepConfig,
    dimension: str,
    notes: Sequence[str],
    figures: Sequence[str],
) -> list[str]:
    lines = [
        f"# Sweep {config.name}",
        "",
        "Accuracy of every run and of the untrained base model on each eval set, with 95% "
        "intervals: Wilson for an accuracy; a paired bootstrap over the same prompts "
        f"({RESAMPLES} resamples, seed {config.eval.bootstrap_seed}) for every difference. "
        "A difference is **significant** only where its interval excludes zero.",
        "",
        "Experiments: `delta`, the top k% of pairs by "
        f"`delta_{dimension}` against a random k% (k = 100% is all pairs); "
        "`generator_pair`, one run per (chosen, rejected) generator pair, its gain against "
        "the pair's measured generator delta; `correctness`, one run per verifier-"
        "correctness direction, all of one size.",
        "",
        *(f"![{Path(name).stem}]({name})" for name in figures),
    ]
    for f in findings:
        lines += ["", f"## Eval set `{f.name}` ({f.scorer}, {f.n_prompts} prompts)", ""]
        lines += [
            "| run | experiment | pairs | accuracy [95% CI] | gain over base [95% CI] "
            "| significant |",
            "|---|---|---|---|---|---|",
        ]
        for r in f.rows:
            lines.append(
                f"| {r['run']} | {r['experiment']} | {_num(r['pairs'])} | "
                f"{_iv(r['accuracy'], r['accuracy_low'], r['accuracy_high'])} | "
                f"{_iv(r['gain'], r['gain_low'], r['gain_high'], True)} | "
                f"{_num(r['significant'])} |"
            )
        if f.top_vs_random:
            lines += [
                "",
                f"### Top k% by `delta_{dimension}` against random k%",
                "",
                "| k | top k% | random k%: mean ± sd (min-max, seeds) | top - random [95% CI] "
                "| significant |",
                "|---|---|---|---|---|",
            ]
            for c in f.top_vs_random:
                top = c["top"]
                spread = ""
                if top is not None and top["selection"] == "all":
                    spread = "all pairs (one run)"
                elif c["random_mean"] is not None:
                    sd = "" if c["random_sd"] is None else f" ± {c['random_sd']:.3f}"
                    seeds = len(c["random"])
                    spread = (
                        f"{c['random_mean']:.3f}{sd} ({c['random_min']:.3f}-"
                        f"{c['random_max']:.3f}, {seeds})"
                    )
                d = c["difference"]
                lines.append(
                    f"| {100 * c['k']:g}% | {_num(top['accuracy'] if top else None)} | "
                    f"{spread} | "
                    f"{_iv(d.estimate, d.low, d.high, True) if d else 'same run'} | "
                    f"{_num(d.significant) if d else ''} |"
                )
        if f.generator:
            lines += [
                "",
                "### Gain against the generator delta",
                "",
                "| generator pair | generator_delta | accuracy gap | pairs | gain [95% CI] |",
                "|---|---|---|---|---|",
            ]
            for p in f.generator:
                lines.append(
                    f"| {p['generator_pair']} | {_num(p['generator_delta'])} | "
                    f"{_num(p['generator_accuracy_delta'])} | {_num(p['pairs'])} | "
                    f"{_iv(p['gain'], p['gain_low'], p['gain_high'], True)} |"
                )
            lines += ["", f.slope_note[0].upper() + f.slope_note[1:] + "."]
        if f.correctness:
            lines += [
                "",
                "### Correctness directions",
                "",
                "| direction | pairs | accuracy [95% CI] | gain over base [95% CI] | significant |",
                "|---|---|---|---|---|",
            ]
            for r in f.correctness:
                lines.append(
                    f"| {r['correctness']} | {_num(r['pairs'])} | "
                    f"{_iv(r['accuracy'], r['accuracy_low'], r['accuracy_high'])} | "
                    f"{_iv(r['gain'], r['gain_low'], r['gain_high'], True)} | "
                    f"{_num(r['significant'])} |"
                )
    lines += ["", "## What the numbers say", ""]
    for f in findings:
        lines.append(f"- {_verdict(f)}")
    lines += [f"- Note: {n}" for n in notes]
    return lines


def _verdict(f: SetFindings) -> str:
    diffs = f.differences
    real = [d for d in diffs if d.significant]
    widths = [r["accuracy_high"] - r["accuracy_low"] for r in f.rows]
    half = statistics.fmean(widths) / 2 if widths else 0.0
    head = f"`{f.name}`: {len(real)} of {len(diffs)} differences are significant at 95%."
    if not real:
        return (
            f"{head} On {f.n_prompts} prompts an accuracy's interval is about ±{half:.2f} "
            "wide, so none of these differences can be told from noise; more eval prompts "
            "(or larger gaps) are needed before reading anything into them."
        )
    return f"{head} The others' intervals (about ±{half:.2f} per accuracy) include zero."
