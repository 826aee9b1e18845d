"""What a build will cost before it runs: prompts, generations, judge calls, pairs."""

from __future__ import annotations

from dataclasses import dataclass

from prefdelta.recipe import BuildRecipe, resolve_path


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


def count_local_prompts(recipe: BuildRecipe) -> int | None:
    """Rows in a local prompts file (None for Hub datasets), capped by ``limit``."""
    cfg = recipe.prompts
    if cfg.path is None:
        return cfg.limit
    path = resolve_path(cfg.path, recipe.base_dir)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(path).metadata.num_rows
    elif suffix == ".jsonl":
        with path.open("rb") as fh:
            rows = sum(1 for line in fh if line.strip())
    else:
        from datasets import load_dataset

        kind = "csv" if suffix == ".csv" else "json"
        rows = load_dataset(kind, data_files=str(path), split="train").num_rows
    return rows if cfg.limit is None else min(rows, cfg.limit)


def plan_build(recipe: BuildRecipe, prompts: int | None = None) -> BuildPlan:
    n = prompts if prompts is not None else count_local_prompts(recipe)
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
