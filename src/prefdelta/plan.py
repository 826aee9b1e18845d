"""What a build will cost before it runs: prompts, generations, judge calls, pairs, and
the tokens (and, with prices, the money) each model will take."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prefdelta.builders.prompts import Prompt, read_prompt_table
from prefdelta.recipe import BuildRecipe, ModelEndpoint, PromptsConfig


@dataclass(frozen=True)
class BuildPlan:
    prompts: int | None  # None: unknown until the Hub dataset is read
    generations: dict[str, int | None]  # model calls, per generator that calls a model
    given: dict[str, int | None]  # traces read, per dataset generator (no call, no cost)
    judge_calls: int | None
    max_judge_calls: int | None
    pairs: int | None

    @property
    def total_generations(self) -> int | None:
        counts = list(self.generations.values())
        return None if None in counts else sum(c or 0 for c in counts)


def count_local_prompts(prompts: PromptsConfig, base_dir: Path) -> int | None:
    """Rows in a local prompts file, read and its columns checked (a missing prompt or
    reference column is an error naming the file), capped by ``limit``; None for a Hub
    dataset, which is not read before the build. ``base_dir``: the recipe's folder."""
    cfg = prompts
    if cfg.path is None:
        return cfg.limit
    ds, _ = read_prompt_table(cfg, base_dir)
    return ds.num_rows if cfg.limit is None else min(ds.num_rows, cfg.limit)


def plan_build(
    recipe: BuildRecipe, prompts: int | None = None, loaded: Sequence[Prompt] | None = None
) -> BuildPlan:
    """``loaded``: the build's prompts, where they are read already: a dataset generator's
    traces are counted from them (unknown without)."""
    from prefdelta.builders.given import is_given, read_given

    n = prompts if prompts is not None else count_local_prompts(recipe.prompts, recipe.base_dir)
    used = recipe.pairing.generator_names
    records = read_given(recipe, loaded or [])[0]
    read = Counter(name for name, _, _ in records)
    # an empty read trace is never sent to the judge
    judged = Counter(name for (name, _, _), r in records.items() if r["trace"].strip())
    traces: dict[str, int | None] = {}
    for name in used:
        g = recipe.generators[name]
        if is_given(g):
            traces[name] = None if loaded is None else read[name]
        else:
            traces[name] = None if n is None else n * g.samples_per_prompt
    known = None not in traces.values()
    total = None
    if known:
        total = sum(
            judged[k] if is_given(recipe.generators[k]) else c or 0 for k, c in traces.items()
        )
    judge = recipe.judge
    # every judge of a panel is asked about every trace
    calls = None if total is None else total * judge.samples * len(judge.judges)
    max_calls = None if calls is None else calls * (1 + judge.max_retries)
    pairing = recipe.pairing
    if n is None:
        pairs = None
    elif pairing.strategy != "best-vs-worst":
        if any(is_given(recipe.generators[g]) for g in used):
            pairs = None if loaded is None else _read_pairs(recipe, loaded)
        else:
            chosen = recipe.generators[pairing.chosen or ""].samples_per_prompt
            pairs = sum(
                n * min(chosen, recipe.generators[r].samples_per_prompt) for r in pairing.rejected
            )
    else:
        pairs = n
    generations = {k: v for k, v in traces.items() if not is_given(recipe.generators[k])}
    given = {k: v for k, v in traces.items() if is_given(recipe.generators[k])}
    return BuildPlan(n, generations, given, calls, max_calls, pairs)


def _read_pairs(recipe: BuildRecipe, prompts: Sequence[Prompt]) -> int:
    """Pairs at most when a side's traces are read: per prompt, chosen's against each
    rejected's, as many as the fewer side has."""
    from prefdelta.builders.given import is_given, read_given

    read = Counter((name, pid) for name, pid, _ in read_given(recipe, prompts)[0])

    def count(name: str, pid: str) -> int:
        g = recipe.generators[name]
        return read[(name, pid)] if is_given(g) else g.samples_per_prompt

    return sum(
        min(count(chosen, p.prompt_id), count(r, p.prompt_id))
        for p in prompts
        for chosen, r in recipe.pairing.paired_generators
    )


CHARS_PER_TOKEN = 4  # the usual rule of thumb for English and math text


@dataclass(frozen=True)
class TokenEstimate:
    """One model's share of a build: prompts in and answers out (their ``max_new_tokens``:
    an upper bound). A local generator's prompts are counted by its own tokenizer, with its
    chat template (``counted``); the others' from their characters, at
    :data:`CHARS_PER_TOKEN`."""

    name: str  # a generator, or "judge"
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float | None  # with the model's price; None without one
    counted: bool = False  # input_tokens from the model's tokenizer, not from characters

    @staticmethod
    def of(
        name: str,
        endpoint: ModelEndpoint,
        calls: int,
        chars: int,
        out: int,
        tokens: int | None = None,
    ) -> TokenEstimate:
        tokens_in = tokens if tokens is not None else -(-chars // CHARS_PER_TOKEN)
        price = endpoint.price
        cost = None
        if price is not None:
            cost = (tokens_in * price.input_per_mtok + out * price.output_per_mtok) / 1e6
        return TokenEstimate(name, endpoint.model, calls, tokens_in, out, cost, tokens is not None)


def estimate_tokens(recipe: BuildRecipe, prompts: Sequence[Prompt]) -> list[TokenEstimate]:
    """Tokens per generator and for the judge (first asks; re-asks can multiply the
    judge's by up to ``1 + max_retries``), from the build's ``prompts`` themselves. The
    judge's prompts hold traces not yet written: they are counted at their budget, from
    characters."""
    from prefdelta.builders.given import is_given, read_given
    from prefdelta.builders.judge.prompt import judge_prompt
    from prefdelta.builders.judge.spec import JudgeSpec
    from prefdelta.builders.judge_input import read_chars
    from prefdelta.builders.prompt_length import prompt_token_counts
    from prefdelta.builders.traces import chat_for

    out: list[TokenEstimate] = []
    judge = recipe.judge
    judge_calls = judge_chars = 0  # the problems and traces each judge reads
    by_id = {p.prompt_id: p for p in prompts}
    for (name, pid, _), record in read_given(recipe, prompts)[0].items():
        # a read trace costs no generation; the judge reads what judge.reads says of it (an
        # empty one: never)
        if record["trace"].strip() and name in recipe.pairing.generator_names:
            read = read_chars(judge.reads, record["trace"], CHARS_PER_TOKEN)
            judge_chars += (len(by_id[pid].prompt) + read) * judge.samples
            judge_calls += judge.samples
    for name in recipe.pairing.generator_names:
        g = recipe.generators[name]
        if is_given(g):
            continue
        n = g.samples_per_prompt
        chars = sum(len(m["content"]) for p in prompts for m in chat_for(g, p.prompt)) * n
        calls = len(prompts) * n
        counts = prompt_token_counts(g, prompts, recipe.base_dir)
        tokens = None if counts is None else sum(counts) * n
        budget = calls * g.generation.max_new_tokens
        out.append(TokenEstimate.of(name, g, calls, chars, budget, tokens))
        # each trace reaches the judge with its problem; a trace is at most its budget
        trace_chars = g.generation.max_new_tokens * CHARS_PER_TOKEN
        if judge.reads is not None and judge.reads.max_tokens is not None:  # its cut reasoning
            trace_chars = min(trace_chars, judge.reads.max_tokens * CHARS_PER_TOKEN)
        judge_chars += sum(len(p.prompt) + trace_chars for p in prompts) * n * judge.samples
        judge_calls += calls * judge.samples
    for name, config in judge.judges.items():  # one judge, or each of a panel's
        # the judge's own words around each problem and trace: its messages with both empty
        spec = JudgeSpec.resolve(config, recipe.base_dir)
        frame = sum(len(m["content"]) for m in judge_prompt(spec, "", ""))
        chars = judge_chars + frame * judge_calls
        budget = judge_calls * config.token_budget
        label = "judge" if name == "judge" else f"judge {name}"
        out.append(TokenEstimate.of(label, config, judge_calls, chars, budget))
    return out
