"""Pairing strategies: which trace is chosen, which rejected.

``generators``: for each prompt, the chosen generator's sample i against each rejected
generator's sample i (the generator-gap sweep: one family of pairs per rejected
generator). ``best-vs-worst``: for each prompt, the judged trace with the highest aggregate
score in the pool against the lowest (sample-level only).

``columns``: a preference dataset's own pairs, each row's chosen side against its
rejected (the generators ``chosen`` and ``rejected``, sample i being the prompt's i-th row).

A trace with no text to train on makes no pair: one never generated (``finish_reason``
``error``) or one the generator answered empty (``judge_status`` ``empty_trace``); both
are rows of the traces table, counted in the summary. A generator pair needs both its
traces, matched by sample number. Under ``columns`` every row stays a pair: an empty side
is a pair without deltas, as an unjudged one.

Nothing is dropped silently. A generator pair whose traces were not both judged ``ok``
is still a generator-level pair: it is kept with null deltas and both judge statuses (a
delta filter never selects it), or dropped and counted, as the recipe says. Ties are
dropped and counted, or kept with delta 0.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefdelta.builders.deltas import GeneratorGap, aggregate, pair_deltas
from prefdelta.builders.judge.parsing import EMPTY_TRACE
from prefdelta.builders.keys import pair_id
from prefdelta.recipe import BuildRecipe

Trace = Mapping[str, Any]


@dataclass
class PairingReport:
    pairs: list[dict[str, Any]] = field(default_factory=list)
    ties_dropped: int = 0
    ties_kept: int = 0
    unjudged_kept: int = 0  # generator pairs kept with null deltas
    # judge status -> generator pairs one of whose traces it has (kept or dropped)
    unjudged: Counter[str] = field(default_factory=Counter)
    # best-vs-worst: judge status -> pool traces left out, and prompts left with < 2 judged
    unjudged_traces: Counter[str] = field(default_factory=Counter)
    too_few_judged: int = 0
    prompts_without_pair: int = 0

    def extend(self, other: PairingReport) -> None:
        """Add ``other``'s pairs and counts (a build pairs a chunk of prompts at a time)."""
        self.pairs += other.pairs
        self.ties_dropped += other.ties_dropped
        self.ties_kept += other.ties_kept
        self.unjudged_kept += other.unjudged_kept
        self.unjudged.update(other.unjudged)
        self.unjudged_traces.update(other.unjudged_traces)
        self.too_few_judged += other.too_few_judged
        self.prompts_without_pair += other.prompts_without_pair


def _conversation(role: str, content: str) -> list[dict[str, str]]:
    return [{"role": role, "content": content}]


def _pair_row(
    chosen: Trace,
    rejected: Trace,
    recipe: BuildRecipe,
    gaps: Mapping[tuple[str, str], GeneratorGap],
) -> dict[str, Any]:
    dims = recipe.judge.dimension_names
    gap = gaps[(chosen["generator"], rejected["generator"])]
    judged = chosen["judge_status"] == "ok" and rejected["judge_status"] == "ok"
    if judged:
        deltas = pair_deltas(chosen["scores"], rejected["scores"], dims, recipe.delta)
    else:
        deltas = {**{f"delta_{d}": None for d in dims}, "delta": None}
    row: dict[str, Any] = {
        "pair_id": pair_id(chosen["trace_key"], rejected["trace_key"]),
        "prompt_id": chosen["prompt_id"],
        "prompt": _conversation("user", chosen["prompt"]),
        "chosen": _conversation("assistant", chosen["trace"]),
        "rejected": _conversation("assistant", rejected["trace"]),
        "chosen_generator": chosen["generator"],
        "rejected_generator": rejected["generator"],
        "chosen_model": chosen["model"],
        "rejected_model": rejected["model"],
        "chosen_scores": _scores(chosen, dims),
        "rejected_scores": _scores(rejected, dims),
        **deltas,
        "generator_delta": gap.score_gap,
        "generator_accuracy_delta": gap.accuracy_gap,
        "chosen_correct": chosen.get("correct"),
        "rejected_correct": rejected.get("correct"),
        "judge_model": recipe.judge.model_label,
        "chosen_judge_status": chosen["judge_status"],
        "rejected_judge_status": rejected["judge_status"],
        "chosen_trace_key": chosen["trace_key"],
        "rejected_trace_key": rejected["trace_key"],
    }
    return row


def _scores(trace: Trace, dims: Sequence[str]) -> dict[str, float | None]:
    ok = trace["judge_status"] == "ok"
    return {d: float(trace["scores"][d]) if ok else None for d in dims}


def has_text(trace: Trace) -> bool:
    """Whether a trace has text to train on (it was generated, and not empty)."""
    return trace.get("finish_reason") != "error" and trace["judge_status"] != EMPTY_TRACE


def make_pairs(
    traces: Sequence[Trace],
    recipe: BuildRecipe,
    gaps: Mapping[tuple[str, str], GeneratorGap],
) -> PairingReport:
    """Pairs in a stable order (prompt order, then rejected generator, then sample), of
    the traces that have text (:func:`has_text`)."""
    by_prompt: dict[str, dict[str, list[Trace]]] = defaultdict(lambda: defaultdict(list))
    order: list[str] = []
    for t in traces:
        if t["prompt_id"] not in by_prompt:
            order.append(t["prompt_id"])
        samples = by_prompt[t["prompt_id"]][t["generator"]]
        if has_text(t) or recipe.pairing.strategy == "columns":
            samples.append(t)
    for per_gen in by_prompt.values():
        for samples in per_gen.values():
            samples.sort(key=lambda t: t["sample"])

    report = PairingReport()
    pairing = recipe.pairing
    dims = recipe.judge.dimension_names
    for pid in order:
        per_gen = by_prompt[pid]
        candidates: list[tuple[Trace, Trace]] = []
        if pairing.strategy != "best-vs-worst":
            for chosen_name, rejected_name in pairing.paired_generators:
                chosen_samples = per_gen.get(chosen_name, [])
                rejected = {t["sample"]: t for t in per_gen.get(rejected_name, [])}
                candidates += [
                    (c, rejected[c["sample"]]) for c in chosen_samples if c["sample"] in rejected
                ]
        else:
            pool = [t for g in pairing.pool for t in per_gen.get(g, [])]
            judged = [t for t in pool if t["judge_status"] == "ok"]
            for t in pool:
                if t["judge_status"] != "ok":
                    report.unjudged_traces[t["judge_status"]] += 1
            if len(judged) < 2:
                report.too_few_judged += 1
            else:
                # stable: among equal scores the earlier (pool order, sample) wins
                ranked = sorted(judged, key=lambda t: -aggregate(t["scores"], dims, recipe.delta))
                candidates.append((ranked[0], ranked[-1]))
        made = 0
        for chosen, rejected in candidates:
            bad = [t["judge_status"] for t in (chosen, rejected) if t["judge_status"] != "ok"]
            if bad:
                report.unjudged[bad[0]] += 1
                if pairing.unjudged == "drop":
                    continue
                report.unjudged_kept += 1
                report.pairs.append(_pair_row(chosen, rejected, recipe, gaps))
                made += 1
                continue
            row = _pair_row(chosen, rejected, recipe, gaps)
            if abs(row["delta"]) < 1e-9:
                if pairing.tie_policy == "drop":
                    report.ties_dropped += 1
                    continue
                report.ties_kept += 1
            report.pairs.append(row)
            made += 1
        if made == 0:
            report.prompts_without_pair += 1
    return report
