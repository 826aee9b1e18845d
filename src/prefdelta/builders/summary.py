"""The build's summary: what ``summary.json`` records and what the terminal shows at the
end of a build (counts, statuses, deltas per generator pair, the judge's validity)."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from prefdelta.builders.columns import agreement_line, label_agreement
from prefdelta.builders.judge.validity import judge_validity, validity_rows
from prefdelta.builders.panel import panel_report, panel_rows
from prefdelta.builders.prompts import Prompt
from prefdelta.recipe import BuildRecipe

__all__ = ["TokenUsage", "build_summary", "no_pairs_reason", "print_summary"]


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    qs = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "q25": qs[0],
        "median": qs[1],
        "q75": qs[2],
        "max": max(values),
    }


def build_summary(
    recipe: BuildRecipe,
    prompts: list[Prompt],
    duplicates: int,
    traces: list[dict[str, Any]],
    report: Any,
    gaps: dict[tuple[str, str], Any],
    means: dict[str, tuple[float | None, float | None, int]],
) -> dict[str, Any]:
    dims = [*recipe.judge.dimension_names]
    pairs = report.pairs
    judged_pairs = [p for p in pairs if p["delta"] is not None]
    per_pair: dict[str, Any] = {}
    for (c, r), gap in gaps.items():
        subset = [p for p in pairs if p["chosen_generator"] == c and p["rejected_generator"] == r]
        judged = [p for p in subset if p["delta"] is not None]
        if recipe.pairing.strategy == "best-vs-worst" and not subset:
            continue
        columns = [*(f"delta_{d}" for d in dims), "delta"]
        per_pair[f"{c} vs {r}"] = {
            "pairs": len(subset),
            "judged_pairs": len(judged),
            "generator_delta": gap.score_gap,
            "generator_accuracy_delta": gap.accuracy_gap,
            "mean_delta": {
                col.removeprefix("delta_"): (
                    statistics.fmean(p[col] for p in judged) if judged else None
                )
                for col in columns
            },
        }
    summary: dict[str, Any] = {
        "name": recipe.name,
        "recipe_hash": recipe.content_hash(),
        "prompts": len(prompts),
        "duplicate_prompts_folded": duplicates,
        "traces": len(traces),
        "pairs": len(pairs),
        "judged_pairs": len(judged_pairs),
        "judge_status": dict(Counter(t["judge_status"] for t in traces)),
        "score_kind": dict(Counter(t.get("score_kind") for t in traces if t.get("score_kind"))),
        "score_fallback": dict(
            Counter(t.get("score_fallback") for t in traces if t.get("score_fallback"))
        ),
        "judge_validity": judge_validity(
            traces, pairs, dims, recipe.pairing.strategy, bool(recipe.judge.show_reference)
        ),
        **({"judge_panel": panel_report(recipe, traces, pairs)} if recipe.judge.panel else {}),
        "finish_reason": dict(Counter(t["finish_reason"] for t in traces)),
        "ties_dropped": report.ties_dropped,
        "ties_kept": report.ties_kept,
        "unjudged_pairs": dict(report.unjudged),
        "unjudged_pairs_kept": report.unjudged_kept,
        "unjudged_traces_left_out": dict(report.unjudged_traces),
        "prompts_too_few_judged": report.too_few_judged,
        "prompts_without_pair": report.prompts_without_pair,
        "dimensions": dims,
        "delta_stats": {d: _stats([p[f"delta_{d}"] for p in judged_pairs]) for d in dims}
        | {"delta": _stats([p["delta"] for p in judged_pairs])},
        "generator_pairs": per_pair,
        "generators": {
            g: {
                "mean_score": m[0],
                "accuracy": m[1],
                "judged_traces": m[2],
                "output_tokens": sum(
                    max(0, t["output_tokens"] or 0) for t in traces if t["generator"] == g
                ),
            }
            for g, m in means.items()
        },
    }
    if recipe.pairing.strategy == "columns":  # the dataset's labels, as the judge sees them
        summary["label_agreement"] = label_agreement(pairs, dims)
    return summary


def no_pairs_reason(summary: dict[str, Any]) -> str:
    """Why a build made no pair, in the same words whatever the pairing strategy."""
    why = []
    if summary.get("prompts_too_few_judged"):
        why.append(
            f"{summary['prompts_too_few_judged']} of {summary['prompts']} prompts had fewer "
            "than 2 traces the judge scored (best-vs-worst ranks judged traces only)"
        )
    dropped = sum(summary["unjudged_pairs"].values()) - summary["unjudged_pairs_kept"]
    if dropped:
        why.append(
            f"{dropped} pairs had a trace the judge could not score (pairing.unjudged: drop)"
        )
    if summary["ties_dropped"]:
        why.append(f"{summary['ties_dropped']} pairs were ties (pairing.ties: drop)")
    empty = sum((summary.get("empty_traces") or {}).values())
    if empty:
        why.append(f"{empty} traces were empty (never paired)")
    if not why:
        why.append(f"no prompt gave traces to pair ({summary['traces']} traces)")
    status = ", ".join(f"{k}: {v}" for k, v in sorted(summary["judge_status"].items()))
    return "; ".join(why) + f". Judge status of the traces: {status} (raw answers: judge_raw)"


class TokenUsage:
    """Tokens the stored answers took, as their backends reported them, added up one
    answer at a time (a build's end reads them a chunk at a time): per generator (its
    stored generations) and for the judge (every attempt of every stored judgment, re-asks
    included); a reused answer counts once, as it was made. ``unknown``: answers whose
    backend reported no count (they add nothing to the sums)."""

    def __init__(self, generators: Iterable[str]) -> None:
        self.generators = {name: _no_tokens() for name in generators}
        self.judge = _no_tokens()

    def generation(self, name: str, record: Mapping[str, Any]) -> None:
        _add_tokens(self.generators[name], record.get("input_tokens"), record.get("output_tokens"))

    def judgment(self, judgment: Mapping[str, Any]) -> None:
        for sample in judgment.get("judge_answers") or []:
            for attempt in sample:
                if attempt.get("text") is not None:  # a failed call spent nothing we know of
                    _add_tokens(self.judge, attempt.get("input_tokens"), attempt.get("tokens"))

    def summary(self) -> dict[str, Any]:
        return {"generators": self.generators, "judge": self.judge}


def _no_tokens() -> dict[str, int]:
    return dict.fromkeys(("calls", "input", "output", "unknown_input", "unknown_output"), 0)


def _add_tokens(usage: dict[str, int], inp: Any, out: Any) -> None:
    usage["calls"] += 1
    if isinstance(inp, int) and inp >= 0:
        usage["input"] += inp
    else:
        usage["unknown_input"] += 1
    if isinstance(out, int) and out >= 0:
        usage["output"] += out
    else:
        usage["unknown_output"] += 1


def print_summary(summary: dict[str, Any], console: Console) -> None:
    reused = summary.get("reused", {})
    console.print(
        f"[bold]{summary['name']}[/]: {summary['pairs']} pairs ({summary['judged_pairs']} judged) "
        f"from {summary['traces']} traces "
        f"over {summary['prompts']} prompts"
        + (f" ({summary['seconds']} s)" if "seconds" in summary else "")
    )
    if reused:
        console.print(
            f"reused {reused['generations']} generations and {reused['judgments']} judgments; "
            f"made {reused['generated']} generations and {reused['judged']} judgments"
        )
    refused = summary.get("refused_prompts") or []
    if refused:
        console.print(
            f"[yellow]{len(refused)} prompts refused as too long[/] (not generated; listed "
            "under refused_prompts in summary.json): "
            + ", ".join(r["prompt_id"][:12] for r in refused),
            soft_wrap=True,
        )
    for name, g in (summary.get("given_traces") or {}).items():
        console.print(
            f"{name}: {g['traces']} traces read from the dataset, no call made"
            + (
                f"; [yellow]{g['shortfall']} short of samples_per_prompt[/]"
                if g["shortfall"]
                else ""
            )
            + (
                f"; its correctness disagrees with math-verify's on {g['correct_disagreements']} "
                f"of {g['checked']}"
                if g["checked"]
                else ""
            ),
            soft_wrap=True,
        )
    cut = summary["finish_reason"].get("length", 0)
    if cut:
        console.print(
            f"[yellow]{cut} of {summary['traces']} generations stopped at max_new_tokens[/] "
            "(finish_reason length): their traces are cut off; raise the generator's "
            "generation.max_new_tokens to let them finish"
            + (" (a dataset's traces are as it gives them)" if summary.get("given_traces") else "")
        )
    empty = summary.get("empty_traces") or {}
    if empty:
        by = ", ".join(f"{g}: {n}" for g, n in sorted(empty.items()))
        console.print(
            f"[yellow]{sum(empty.values())} of {summary['traces']} traces are empty[/] "
            f"({by}): the generator answered no text; kept in traces.parquet (judge_status "
            "empty_trace), not sent to the judge, never paired",
            soft_wrap=True,
        )
    _print_reads(summary, console)
    status = ", ".join(f"{k}: {v}" for k, v in sorted(summary["judge_status"].items()))
    console.print(f"judge status: {status}")
    panel = summary.get("judge_panel")
    if panel:  # each judge's own: a trace is scored when every judge scored it
        for name, counts in panel["judge_status"].items():
            said = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
            console.print(f"  judge {name} ({panel['judges'][name]}): {said}", soft_wrap=True)
    tokens = summary.get("tokens")
    if tokens:
        parts = [
            f"{name} {u['input']:,} in / {u['output']:,} out"
            for name, u in {**tokens["generators"], "judge": tokens["judge"]}.items()
        ]
        unknown = sum(
            u["unknown_input"] + u["unknown_output"]
            for u in [*tokens["generators"].values(), tokens["judge"]]
        )
        note = f" ({unknown} counts not reported by the backend)" if unknown else ""
        console.print(f"tokens: {'; '.join(parts)}{note}", soft_wrap=True)
    kinds = summary.get("score_kind") or {}
    if kinds:
        console.print("scores: " + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())))
    for why, n in (summary.get("score_fallback") or {}).items():
        console.print(f"  sampled, not expected ({n}): {why}")
    if summary["unjudged_pairs"]:
        lost = ", ".join(f"{k}: {v}" for k, v in summary["unjudged_pairs"].items())
        fate = "kept without deltas" if summary["unjudged_pairs_kept"] else "dropped"
        console.print(f"pairs the judge could not score ({fate}): {lost}")
    left_out = summary.get("unjudged_traces_left_out") or {}
    if left_out:
        lost = ", ".join(f"{k}: {v}" for k, v in sorted(left_out.items()))
        console.print(f"traces the judge could not score, left out of the pools: {lost}")
    console.print(
        f"ties dropped: {summary['ties_dropped']}, ties kept: {summary['ties_kept']}, "
        f"prompts without a pair: {summary['prompts_without_pair']}"
    )
    if summary.get("label_agreement"):
        console.print(agreement_line(summary["label_agreement"]), soft_wrap=True)
    if not summary["pairs"]:
        console.print(f"[yellow]no pairs: {no_pairs_reason(summary)}[/]")
    if summary["pairs"] and not summary["judged_pairs"]:
        console.print(
            "[yellow]no pair has sample-level deltas: the judge scored no pair's two traces "
            "(its raw answers are in traces.parquet, column judge_raw). The pairs are still "
            "generator-level pairs; deltas need a judge model that can follow the rubric.[/]"
        )
    table = Table(title="mean delta, chosen - rejected")
    table.add_column("")
    pairs = summary["generator_pairs"]
    for name in pairs:
        table.add_column(name, justify="right")

    def f(x: float | None) -> str:
        return "—" if x is None else f"{x:+.2f}"

    table.add_row("pairs", *[str(info["pairs"]) for info in pairs.values()])
    table.add_row("judged pairs", *[str(info["judged_pairs"]) for info in pairs.values()])
    table.add_row("generator delta", *[f(info["generator_delta"]) for info in pairs.values()])
    for d in [*summary["dimensions"], "delta"]:
        table.add_row(d, *[f(info["mean_delta"][d]) for info in pairs.values()])
    console.print(table)
    if summary.get("judge_validity"):
        validity = Table(title="judge validity (measures the judge, not the data)")
        for column in ("check", "value [95% CI]", "n", "verdict"):
            validity.add_column(column, overflow="fold")
        for row in validity_rows(summary["judge_validity"]):
            validity.add_row(*row)
        for row in panel_rows(summary["judge_panel"]) if summary.get("judge_panel") else []:
            validity.add_row(*row)
        console.print(validity)


def _print_reads(summary: dict[str, Any], console: Console) -> None:
    """What the judge read (judge.reads): traces cut for it, and those it was not sent."""
    reads = summary.get("judge_reads") or {}

    def by(counts: dict[str, int]) -> str:
        return ", ".join(f"{g}: {n}" for g, n in sorted(counts.items()))

    if reads.get("cut"):
        console.print(
            f"{sum(reads['cut'].values())} traces had their reasoning cut for the judge "
            f"({by(reads['cut'])}), as judge.reads says",
            soft_wrap=True,
        )
    over = reads.get("over_context") or {}
    if over:
        ids = ", ".join(r["trace_key"][:12] for r in reads["over_context_traces"])
        console.print(
            f"[yellow]{sum(over.values())} of {summary['traces']} traces are too long for the "
            f"judge[/] ({by(over)}; bound {reads['bound']:,} tokens: {reads['bound_why']}): kept "
            "in traces.parquet (judge_status over_context), not sent to the judge, listed "
            f"under judge_reads.over_context_traces in summary.json: {ids}",
            soft_wrap=True,
        )
    if reads.get("empty_part"):
        console.print(
            f"[yellow]{sum(reads['empty_part'].values())} traces have nothing in the part the "
            f"judge reads[/] ({by(reads['empty_part'])}): judge_status empty_part, not judged",
            soft_wrap=True,
        )
