"""Finished build folders without running a model: synthetic traces through the real pairing.

Why: publish, loading and training tests need a build folder that is exactly what
``prefdelta build`` writes (the same schemas, pairing, deltas, summary and file hashes)
in milliseconds. Traces and judge scores are made up with a seeded RNG; everything after
that (pairs, deltas, generator gaps, summary.json) comes from prefdelta's own builders.

Import what a test needs: ``from support.build_fixtures import make_build``.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prefdelta.builders.deltas import aggregate, generator_gap, generator_means
from prefdelta.builders.pairs import make_pairs
from prefdelta.builders.summary import build_summary
from prefdelta.recipe import BuildRecipe, parse_recipe
from prefdelta.schema import (
    HASHED_FILES,
    PAIRS_FILE,
    RECIPE_FILE,
    SUMMARY,
    TRACES_FILE,
    pairs_schema,
    traces_schema,
)

DIMENSIONS = ("factuality", "strategy_coherence", "step_coherence", "numerical_precision")
GENERATORS = {  # name -> (model, score range, accuracy)
    "strong": ("org/strong-reasoner", (3, 5), 0.8),
    "weak": ("org/weak-reasoner", (2, 4), 0.5),
    "weaker": ("org/weaker-reasoner", (1, 3), 0.2),
}

RECIPE = """\
name: {name}
description: Synthetic build for tests; the scores are random, not judged.
prompts: {{dataset: example/math-problems, column: problem, reference_column: answer, seed: {seed}}}
generators:
  strong:
    model: org/strong-reasoner
    backend: openai
    base_url: http://127.0.0.1:9/v1
    api_key: ${{TEST_REASONER_API_KEY}}
    description: the stronger generator (stands for an R1-class model)
  weak:
    model: org/weak-reasoner
    backend: vllm
    description: a weaker generator
  weaker:
    model: org/weaker-reasoner
    backend: vllm
    description: the weakest generator
pairing: {{chosen: strong, rejected: [weak, weaker], unjudged: {unjudged}}}
judge:
  model: org/judge
  backend: vllm
  dimensions: [{dimensions}]
delta: {{aggregate: mean}}
publish: {{repo_id: tester/{name}, private: true}}
"""

STATUSES = ("parse_error", "refused", "truncated")


def recipe_text(
    name: str = "synthetic",
    seed: int = 0,
    dims: tuple[str, ...] = DIMENSIONS,
    unjudged: str = "drop",
) -> str:
    return RECIPE.format(name=name, seed=seed, dimensions=", ".join(dims), unjudged=unjudged)


def _trace(
    recipe: BuildRecipe, rng: random.Random, i: int, generator: str, failure_rate: float
) -> dict[str, Any]:
    dims = recipe.judge.dimension_names
    model, (low, high), accuracy = GENERATORS[generator]
    prompt = f"Problem {i}: what is {i} * {i + 1}?"
    status = "ok" if rng.random() >= failure_rate else rng.choice(STATUSES)
    ok = status == "ok"
    scores = {d: (float(rng.randint(low, high)) if ok else None) for d in dims}
    key = hashlib.sha256(f"{generator}:{i}".encode()).hexdigest()
    return {
        "trace_key": key,
        "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
        "prompt": prompt,
        "reference": str(i * (i + 1)),
        "generator": generator,
        "model": model,
        "sample": 0,
        "trace": f"[{generator}] Step 1: multiply {i} by {i + 1}. Answer: {i * (i + 1)}",
        "finish_reason": "stop",
        "output_tokens": rng.randint(20, 400),
        "correct": rng.random() < accuracy,
        "scores": scores,
        "aggregate": aggregate(scores, dims, recipe.delta) if ok else None,
        "score_spread": dict.fromkeys(dims),
        "score_kind": "sampled" if ok else None,
        "score_probs": dict.fromkeys(dims),
        "score_fallback": None,
        "rationales": {d: (f"{d}: looks fine" if ok else None) for d in dims},
        "judge_status": status,
        "judge_problem": None if ok else f"synthetic {status}",
        "judge_raw": [f'{{"status": "{status}"}}'],
        "judge_attempts": 1 if ok else 2,
        "judge_model": recipe.judge.model,
    }


def make_build(
    root: Path,
    *,
    name: str = "synthetic",
    n_prompts: int = 30,
    seed: int = 0,
    score_seed: int | None = None,
    failure_rate: float = 0.1,
    dims: tuple[str, ...] = DIMENSIONS,
    unjudged: str = "drop",
) -> Path:
    """Write a finished build folder at ``root`` and return it.

    ``unjudged="keep"`` keeps generator pairs the judge could not score, with null deltas.

    ``seed`` goes into the recipe (so it changes the recipe hash); ``score_seed`` only
    changes the made-up traces and scores (same recipe, different content).
    """
    text = recipe_text(name, seed, dims, unjudged)
    recipe = parse_recipe(text, source="recipe.yaml")
    rng = random.Random(seed if score_seed is None else score_seed)
    traces = [
        _trace(recipe, rng, i, g, failure_rate)
        for i in range(n_prompts)
        for g in recipe.pairing.generator_names
    ]
    names = recipe.judge.dimension_names
    means = generator_means(traces, names, recipe.delta)
    gaps = {
        (recipe.pairing.chosen or "", r): generator_gap(means, recipe.pairing.chosen or "", r)
        for r in recipe.pairing.rejected
    }
    report = make_pairs(traces, recipe, gaps)
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(traces, traces_schema(names)), root / TRACES_FILE)
    pq.write_table(pa.Table.from_pylist(report.pairs, pairs_schema(names)), root / PAIRS_FILE)
    (root / RECIPE_FILE).write_text(text, encoding="utf-8")
    summary = build_summary(recipe, [None] * n_prompts, 0, traces, report, gaps, means)  # type: ignore[list-item]
    summary["files"] = {
        f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in HASHED_FILES
    }
    (root / SUMMARY).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return root


def build_pairs(root: Path) -> list[dict[str, Any]]:
    """The pairs of a build folder, as rows (what a published `pairs` split must return)."""
    return pq.read_table(root / PAIRS_FILE).to_pylist()
