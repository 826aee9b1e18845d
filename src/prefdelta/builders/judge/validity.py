"""Judge validity: three checks of the judge that every build reports.

A preference dataset is only as good as the judge that scored it, and the judge can be
wrong in ways the deltas alone never show. Each check compares the judge against
something it did not see:

- **verifier agreement**: where a prompt has a reference answer, math-verify says which
  traces are correct. If the judge's scores cannot tell correct traces from incorrect
  ones (ROC AUC near 0.5), it is not seeing correctness, whatever its rationales say.
- **generator order** (strategy ``generators`` only): the recipe pairs a stronger
  generator against weaker ones. If the judge does not usually score the chosen
  generator's trace higher, it does not see the generator gap the dataset is built on.
  Under ``best-vs-worst`` the judge itself picks the chosen trace, so the check would
  only measure the judge against itself: it is reported as not applicable.
- **length bias**: LLM judges are known to prefer longer answers, and "is the chosen
  trace just the longer one?" is the first thing a reviewer asks. The Pearson correlation
  between a pair's delta and its chosen-minus-rejected token difference answers it.

When the judge was shown the reference answers (``judge.show_reference``), the verifier
agreement no longer measures it independently: the report says so beside the AUC.

Every figure carries its count and a 95% interval, and the labels are deliberately
conservative: whenever the interval includes the chance value (AUC 0.5, win fraction
0.5, r 0) the label says so, and with too few observations it says "too few to tell".
These measure the judge, not the data. Pure functions over the plain-dict rows of the
build's tables; the intervals come from :mod:`prefdelta.stats`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prefdelta.stats import auc_interval, mann_whitney_auc, pearson, pearson_interval, wilson

__all__ = [
    "MIN_CLASS",
    "MIN_N",
    "generator_order",
    "judge_validity",
    "length_bias",
    "validity_markdown",
    "validity_rows",
    "verifier_agreement",
]

MIN_N = 10  # below this many observations a check reads "too few to tell"
MIN_CLASS = 5  # ...and so does an AUC whose smaller class is under this (its SE collapses)

TOO_FEW = "too few to tell"
ORDER_METHOD = "delta > 0 is a win; win fraction among untied pairs, 95% Wilson interval"
NOT_APPLICABLE_BVW = "not applicable: best-vs-worst picks the chosen trace by the judge score"
NOT_INDEPENDENT = (
    "not independent: the judge was shown the reference answers (judge.show_reference), "
    "so the verifier AUC no longer measures the judge independently"
)


def _constant(values: Sequence[float]) -> bool:
    return all(v == values[0] for v in values)


def _auc_label(ci: tuple[float, float], n_pos: int, n_neg: int) -> str:
    if n_pos + n_neg < MIN_N or min(n_pos, n_neg) < MIN_CLASS:
        return TOO_FEW
    if ci[0] > 0.5:
        return "agrees with the verifier"
    if ci[1] < 0.5:
        return "inverted: scores favour incorrect traces"
    return "near chance (95% CI includes 0.5)"


def _win_label(ci: tuple[float, float], n_untied: int) -> str:
    if n_untied < MIN_N:
        return TOO_FEW
    if ci[0] > 0.5:
        return "sees the generator gap"
    if ci[1] < 0.5:
        return "inverted: prefers the rejected generator"
    return "near chance (95% CI includes 0.5)"


def _r_label(ci: tuple[float, float] | None, n: int) -> str:
    if n < MIN_N or ci is None:
        return TOO_FEW
    if ci[0] > 0:
        return "favours longer traces"
    if ci[1] < 0:
        return "favours shorter traces"
    return "no clear length bias (95% CI includes 0)"


# --- checks -------------------------------------------------------------------------------


def _auc_entry(scored: list[tuple[float, bool]], no_data_reason: str) -> dict[str, Any]:
    pos = [s for s, ok in scored if ok]
    neg = [s for s, ok in scored if not ok]
    entry: dict[str, Any] = {
        "auc": None,
        "ci95": None,
        "n": len(scored),
        "n_correct": len(pos),
        "n_incorrect": len(neg),
        "label": "",
        "reason": None,
    }
    if not scored:
        entry["reason"] = no_data_reason
    elif not neg:
        entry["reason"] = "no incorrect traces"
    elif not pos:
        entry["reason"] = "no correct traces"
    if entry["reason"] is not None:
        entry["label"] = entry["reason"]
        return entry
    auc = mann_whitney_auc(pos, neg)
    ci = auc_interval(auc, len(pos), len(neg))
    entry.update(auc=auc, ci95=list(ci), label=_auc_label(ci, len(pos), len(neg)))
    return entry


def verifier_agreement(
    traces: Iterable[Mapping[str, Any]], dimensions: Sequence[str]
) -> dict[str, Any]:
    """ROC AUC of each dimension's score, and of the aggregate, for correct vs incorrect."""
    traces = list(traces)
    with_ref = [t for t in traces if t.get("correct") is not None]
    judged = [t for t in with_ref if t.get("judge_status") == "ok"]
    if not with_ref:
        reason = "no references"
    elif not judged:
        reason = "no judged traces with references"
    else:
        reason = "no scores"

    def scored(get: Any) -> list[tuple[float, bool]]:
        out = []
        for t in judged:
            value = get(t)
            if value is not None:
                out.append((float(value), bool(t["correct"])))
        return out

    return {
        "method": "Mann-Whitney AUC (ties half); 95% CI from the Hanley & McNeil 1982 SE",
        "n_with_reference": len(with_ref),
        "n_judged": len(judged),
        "aggregate": _auc_entry(scored(lambda t: t.get("aggregate")), reason),
        "dimensions": {
            d: _auc_entry(scored(lambda t, d=d: (t.get("scores") or {}).get(d)), reason)
            for d in dimensions
        },
    }


def _order_entry(deltas: Sequence[float]) -> dict[str, Any]:
    n = len(deltas)
    higher = sum(1 for d in deltas if d > 0)
    lower = sum(1 for d in deltas if d < 0)
    ties = n - higher - lower
    untied = higher + lower
    entry: dict[str, Any] = {
        "n_pairs": n,
        "higher": higher,
        "lower": lower,
        "ties": ties,
        "higher_fraction": higher / n if n else None,
        "lower_fraction": lower / n if n else None,
        "tie_fraction": ties / n if n else None,
        "n_untied": untied,
        "win_fraction": None,
        "ci95": None,
        "label": "",
        "reason": None,
    }
    if not n:
        entry["reason"] = entry["label"] = "no judged pairs"
        return entry
    if not untied:
        entry["reason"] = entry["label"] = "all pairs tied"
        return entry
    win = wilson(higher, untied)
    ci = (win.low, win.high)
    entry.update(win_fraction=higher / untied, ci95=list(ci), label=_win_label(ci, untied))
    return entry


def generator_order(pairs: Iterable[Mapping[str, Any]], strategy: str) -> dict[str, Any]:
    """How often the judge scored the chosen generator's trace higher, overall and per pair."""
    if strategy != "generators":
        reason = (
            NOT_APPLICABLE_BVW
            if strategy == "best-vs-worst"
            else f"not applicable: strategy {strategy!r} has no generator order"
        )
        return {
            "applicable": False,
            "reason": reason,
            "method": ORDER_METHOD,
            "overall": None,
            "by_pair": {},
        }
    judged = [p for p in pairs if p.get("delta") is not None]
    by_pair: dict[str, list[float]] = {}
    for p in judged:
        key = f"{p['chosen_generator']} vs {p['rejected_generator']}"
        by_pair.setdefault(key, []).append(float(p["delta"]))
    return {
        "applicable": True,
        "reason": None,
        "method": ORDER_METHOD,
        "overall": _order_entry([float(p["delta"]) for p in judged]),
        "by_pair": {k: _order_entry(v) for k, v in by_pair.items()},
    }


def _r_entry(xs: list[float], ys: list[float], x_name: str) -> dict[str, Any]:
    n = len(xs)
    entry: dict[str, Any] = {"r": None, "ci95": None, "n": n, "label": "", "reason": None}
    if n < 2:
        entry["reason"] = "no pairs with deltas and token counts" if not n else "one pair"
    elif _constant(xs):
        entry["reason"] = f"no variation in {x_name}"
    elif _constant(ys):
        entry["reason"] = "no variation in output_tokens difference"
    if entry["reason"] is not None:
        entry["label"] = entry["reason"]
        return entry
    r = pearson(xs, ys)
    assert r is not None  # both sides vary
    ci = pearson_interval(xs, ys)
    entry.update(r=r, ci95=list(ci) if ci else None, label=_r_label(ci, n))
    return entry


def length_bias(
    traces: Iterable[Mapping[str, Any]],
    pairs: Iterable[Mapping[str, Any]],
    dimensions: Sequence[str],
) -> dict[str, Any]:
    """Pearson r of each pair's delta against chosen-minus-rejected output tokens."""
    tokens = {t["trace_key"]: t.get("output_tokens") for t in traces}
    known: list[tuple[Mapping[str, Any], float]] = []
    unknown_tokens = 0
    for p in pairs:
        c, r = tokens.get(p.get("chosen_trace_key")), tokens.get(p.get("rejected_trace_key"))
        if c is None or r is None or c < 0 or r < 0:
            unknown_tokens += 1
            continue
        known.append((p, float(c - r)))

    def entry(column: str) -> dict[str, Any]:
        rows = [(float(p[column]), diff) for p, diff in known if p.get(column) is not None]
        return _r_entry([x for x, _ in rows], [y for _, y in rows], column)

    return {
        "method": "Pearson r of delta vs chosen - rejected output_tokens; 95% CI by Fisher z",
        "n_unknown_tokens": unknown_tokens,
        "aggregate": entry("delta"),
        "dimensions": {d: entry(f"delta_{d}") for d in dimensions},
    }


def judge_validity(
    traces: Iterable[Mapping[str, Any]],
    pairs: Iterable[Mapping[str, Any]],
    dimensions: Sequence[str],
    strategy: str,
    reference_shown: bool = False,
) -> dict[str, Any]:
    """All three checks as one JSON-serialisable dict (summary.json's ``judge_validity``);
    ``reference_shown``: the judge saw the reference answers the verifier checks against."""
    traces, pairs = list(traces), list(pairs)
    agreement = verifier_agreement(traces, dimensions)
    agreement["independent"] = not reference_shown
    return {
        "strategy": strategy,
        "dimensions": list(dimensions),
        "verifier_agreement": agreement,
        "generator_order": generator_order(pairs, strategy),
        "length_bias": length_bias(traces, pairs, dimensions),
    }


# --- presentation -------------------------------------------------------------------------


def _value(point: float | None, ci: Sequence[float] | None) -> str:
    if point is None:
        return "n/a"
    if ci is None:
        return f"{point:.2f}"
    return f"{point:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def validity_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(check, value, n, verdict) rows for the terminal table and the dataset card."""
    rows: list[tuple[str, str, str, str]] = []
    va = report["verifier_agreement"]
    if va.get("independent") is False:
        rows.append(("verifier AUC", "-", "-", NOT_INDEPENDENT))
    for name, e in [("aggregate", va["aggregate"]), *va["dimensions"].items()]:
        n = f"{_plural(e['n'], 'trace')} ({e['n_correct']} correct)"
        rows.append((f"verifier AUC: {name}", _value(e["auc"], e["ci95"]), n, e["label"]))
    go = report["generator_order"]
    if not go["applicable"]:
        rows.append(("generator order", "n/a", "-", go["reason"]))
    else:
        for name, e in [("overall", go["overall"]), *go["by_pair"].items()]:
            n = f"{_plural(e['n_pairs'], 'pair')} ({e['ties']} tied)"
            rows.append(
                (f"generator order: {name}", _value(e["win_fraction"], e["ci95"]), n, e["label"])
            )
    lb = report["length_bias"]
    for name, e in [("aggregate", lb["aggregate"]), *lb["dimensions"].items()]:
        rows.append(
            (
                f"length bias r: {name}",
                _value(e["r"], e["ci95"]),
                _plural(e["n"], "pair"),
                e["label"],
            )
        )
    return rows


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def validity_markdown(report: Mapping[str, Any]) -> str:
    """The rows as a markdown table under a one-line reminder of what they measure."""
    lines = [
        "These checks measure the judge, not the data: a weak verdict means the judge's "
        "scores, and so the deltas, deserve less trust.",
        "",
        "| Check | Value [95% CI] | n | Verdict |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {' | '.join(_cell(c) for c in row)} |" for row in validity_rows(report)]
    return "\n".join(lines) + "\n"
