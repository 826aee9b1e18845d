"""What a build will cost before it runs: prompts, generations, judge calls, pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefdelta.builders.prompts import read_prompt_table
from prefdelta.recipe import BuildRecipe, PromptsConfig


@dataclass(frozen=True)
class BuildPlan:
    prompts: int | None  # None: unknown until the Hub dataset is read
    generations: dict[str, int | None]
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


def plan_build(recipe: BuildRecipe, prompts: int | None = None) -> BuildPlan:
    n = prompts if prompts is not None else count_local_prompts(recipe.prompts, recipe.base_dir)
    used = recipe.pairing.generator_names
    generations = {
        name: None if n is None else n * recipe.generators[name].samples_per_prompt for name in used
    }
    total = None if n is None else sum(c or 0 for c in generations.values())
    judge = recipe.judge
    calls = None if total is None else total * judge.samples
    max_calls = None if calls is None else calls * (1 + judge.max_retries)
    pairing = recipe.pairing
    if n is None:
        pairs = None
    elif pairing.strategy == "generators":
        chosen = recipe.generators[pairing.chosen or ""].samples_per_prompt
        pairs = sum(
            n * min(chosen, recipe.generators[r].samples_per_prompt) for r in pairing.rejected
        )
    else:
        pairs = n
    return BuildPlan(n, generations, calls, max_calls, pairs)
