"""A judge panel's scores: each judge's kept in its own columns, combined into the score the
deltas use, and the panel's agreement and per-judge validity in the build's summary.

The traces table of a panel build keeps every judge's view of each trace in columns named
by the judge (``scores_<judge>``, ``rationales_<judge>``, ``judge_status_<judge>``,
``judge_problem_<judge>``, ``judge_raw_<judge>``), and the usual columns hold the panel's:
``scores`` combines the judges' scores of each dimension (``judge.panel.combine``: mean or
median), ``score_spread`` is the population standard deviation across the judges,
``judge_status`` is ``ok`` only when every judge scored the trace (else the first failing
judge's status, and ``judge_problem`` names each judge that failed). A trace one judge
could not score is kept, with its status per judge, and counted per judge in the summary.

Inter-judge agreement is Krippendorff's alpha for interval data per dimension (and of the
aggregate), over the traces at least two judges scored, with a bootstrap 95% interval
over those traces (:mod:`prefdelta.stats`). Each judge's own validity checks are the
build's (:func:`~prefdelta.builders.judge.validity.judge_validity`) computed on that
judge's scores alone, so they can be read side by side.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from prefdelta.builders.deltas import aggregate, pair_deltas
from prefdelta.builders.judge.reader import spread
from prefdelta.builders.judge.validity import judge_validity, validity_rows
from prefdelta.recipe import BuildRecipe
from prefdelta.stats import krippendorff_alpha, krippendorff_interval

__all__ = [
    "JUDGE_COLUMNS",
    "alpha_entry",
    "combine_judges",
    "judge_columns",
    "panel_markdown",
    "panel_names",
    "panel_report",
    "panel_rows",
]

# each judge's own columns in a panel build's traces table: <column>_<judge>
JUDGE_COLUMNS = ("scores", "rationales", "judge_status", "judge_problem", "judge_raw")
MIN_UNITS = 10  # below this many traces scored by two judges, alpha reads "too few to tell"


def panel_names(recipe: BuildRecipe) -> list[str]:
    """The panel's judges, in order; none for a single judge (no per-judge columns)."""
    panel = recipe.judge.panel
    return [] if panel is None else [j.name for j in panel.judges]


def judge_columns(name: str, judged: Mapping[str, Any], dims: Sequence[str]) -> dict[str, Any]:
    """One judge's columns of a trace row (``judged``: its reader's outputs)."""
    ok = judged["judge_status"] == "ok"
    return {
        f"scores_{name}": {d: (float(judged["scores"][d]) if ok else None) for d in dims},
        f"rationales_{name}": {d: (judged["rationales"] or {}).get(d) for d in dims},
        f"judge_status_{name}": judged["judge_status"],
        f"judge_problem_{name}": judged.get("judge_problem"),
        f"judge_raw_{name}": list(judged["judge_raw"]),
    }


def combine_judges(
    by_judge: Mapping[str, Mapping[str, Any]], dims: Sequence[str], how: str
) -> dict[str, Any]:
    """The panel's judge outputs of one trace from each judge's (see the module docstring)."""
    failed = {n: j for n, j in by_judge.items() if j["judge_status"] != "ok"}
    first = next(iter(by_judge.values()))
    kinds = {j.get("score_kind") for j in by_judge.values()}
    fallbacks = [f"{n}: {j['score_fallback']}" for n, j in by_judge.items() if j["score_fallback"]]
    out: dict[str, Any] = {
        "scores": dict.fromkeys(dims),
        "score_spread": dict.fromkeys(dims),
        "score_kind": kinds.pop() if len(kinds) == 1 else "mixed",
        "score_probs": dict.fromkeys(dims),
        "score_fallback": "; ".join(fallbacks) or None,
        "rationales": first["rationales"],
        "judge_status": next(iter(failed.values()))["judge_status"] if failed else "ok",
        "judge_problem": "; ".join(
            f"{n}: {j.get('judge_problem') or j['judge_status']}" for n, j in failed.items()
        )
        or None,
        "judge_raw": [r for j in by_judge.values() for r in j["judge_raw"]],
        "judge_attempts": sum(int(j["judge_attempts"]) for j in by_judge.values()),
    }
    if failed:
        return out
    combine = statistics.median if how == "median" else statistics.fmean
    for d in dims:
        values = [float(j["scores"][d]) for j in by_judge.values()]
        out["scores"][d] = combine(values)
        out["score_spread"][d] = spread(values)
    return out


def _judge_view(traces: list[dict[str, Any]], name: str, recipe: BuildRecipe) -> list[dict]:
    """The traces as if ``name`` were the only judge: its scores, status and aggregate."""
    dims = recipe.judge.dimension_names
    view = []
    for t in traces:
        status = t.get(f"judge_status_{name}")
        scores = t.get(f"scores_{name}") or dict.fromkeys(dims)
        ok = status == "ok"
        view.append(
            t
            | {
                "scores": scores,
                "judge_status": status,
                "aggregate": aggregate(scores, dims, recipe.delta) if ok else None,
            }
        )
    return view


def _pairs_view(
    pairs: list[dict[str, Any]], view: list[dict[str, Any]], recipe: BuildRecipe
) -> list[dict]:
    """The pairs with one judge's deltas (null where that judge missed a side)."""
    dims = recipe.judge.dimension_names
    by_key = {t["trace_key"]: t for t in view}
    out = []
    for p in pairs:
        c, r = by_key.get(p["chosen_trace_key"]), by_key.get(p["rejected_trace_key"])
        if c and r and c["judge_status"] == "ok" and r["judge_status"] == "ok":
            deltas: dict[str, Any] = pair_deltas(c["scores"], r["scores"], dims, recipe.delta)
        else:
            deltas = dict.fromkeys([*(f"delta_{d}" for d in dims), "delta"])
        out.append(p | deltas)
    return out


def alpha_entry(coders: list[list[float | None]]) -> dict[str, Any]:
    """Alpha of ``coders[judge][trace]`` (None: not scored), its interval, the traces two
    judges scored, and a verdict on Krippendorff's conventions (0.8, 0.667)."""
    units = sum(1 for u in zip(*coders, strict=True) if sum(v is not None for v in u) >= 2)
    alpha = krippendorff_alpha(coders) if units else None
    ci = krippendorff_interval(coders) if alpha is not None else None
    if alpha is None:
        label = "no traces scored by two judges" if not units else "no variation in the scores"
    elif units < MIN_UNITS:
        label = "too few to tell"
    elif ci is None:
        label = "no interval"
    elif ci[0] >= 0.8:  # Krippendorff's conventions: 0.8 reliable, under 0.667 not
        label = "judges agree (alpha >= 0.8)"
    elif ci[1] < 0:
        label = "judges disagree, beyond chance (alpha < 0)"
    elif ci[1] < 0.667:
        label = "judges disagree (alpha < 0.667)"
    else:
        label = "not clear (95% CI crosses 0.667 or 0.8)"
    return {"alpha": alpha, "ci95": list(ci) if ci else None, "n": units, "label": label}


def panel_report(
    recipe: BuildRecipe, traces: list[dict[str, Any]], pairs: list[dict[str, Any]]
) -> dict[str, Any]:
    """summary.json's ``judge_panel``: the judges, how they combine, how often each could
    not score a trace, their agreement per dimension, and each judge's own validity."""
    assert recipe.judge.panel is not None
    dims = recipe.judge.dimension_names
    names = list(recipe.judge.judges)
    views = {n: _judge_view(traces, n, recipe) for n in names}
    judged = [t for t in traces if t["judge_status"] != "empty_trace"]

    def coders(get: Any) -> list[list[float | None]]:
        return [[get(v) if v["judge_status"] == "ok" else None for v in views[n]] for n in names]

    return {
        "judges": {n: c.model for n, c in recipe.judge.judges.items()},
        "combine": recipe.judge.panel.combine,
        "judge_status": {
            n: dict(Counter(t.get(f"judge_status_{n}") for t in judged)) for n in names
        },
        "agreement": {
            "method": "Krippendorff's alpha (interval), over traces two or more judges "
            "scored; 95% percentile bootstrap over those traces",
            "aggregate": alpha_entry(coders(lambda v: v["aggregate"])),
            "dimensions": {d: alpha_entry(coders(lambda v, d=d: v["scores"][d])) for d in dims},
        },
        "by_judge": {
            n: judge_validity(
                views[n], _pairs_view(pairs, views[n], recipe), dims, recipe.pairing.strategy
            )
            for n in names
        },
    }


def _value(e: Mapping[str, Any]) -> str:
    if e["alpha"] is None:
        return "n/a"
    ci = e["ci95"]
    return f"{e['alpha']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def panel_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(check, value, n, verdict) rows of the judges' agreement."""
    agreement = report["agreement"]
    return [
        (f"inter-judge alpha: {name}", _value(e), f"{e['n']} traces", e["label"])
        for name, e in [("aggregate", agreement["aggregate"]), *agreement["dimensions"].items()]
    ]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def panel_markdown(report: Mapping[str, Any]) -> str:
    """The panel for the card: its judges, their agreement, their validity side by side."""
    names = list(report["judges"])
    lines = [
        f"A panel of {len(names)} judges scored every trace; each dimension's score is the "
        f"{report['combine']} of theirs (each judge's own: `scores_<judge>` in `traces`).",
        "",
        "| judge | model | " + " | ".join(["traces scored", "not scored"]) + " |",
        "| --- | --- | --- | --- |",
    ]
    for n in names:
        status = report["judge_status"].get(n, {})
        ok = status.get("ok", 0)
        lines.append(f"| {n} | `{report['judges'][n]}` | {ok} | {sum(status.values()) - ok} |")
    lines += ["", "| Check | Value [95% CI] | n | Verdict |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(_cell(c) for c in row)} |" for row in panel_rows(report)]
    per_judge = {n: {r[0]: r[1] for r in validity_rows(report["by_judge"][n])} for n in names}
    checks = list(dict.fromkeys(c for n in names for c in per_judge[n]))
    lines += [
        "",
        "Each judge's own validity checks, side by side (value [95% CI]):",
        "",
        "| Check | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for check in checks:
        cells = [_cell(per_judge[n].get(check, "n/a")) for n in names]
        lines.append(f"| {_cell(check)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
