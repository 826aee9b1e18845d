"""Load the recipe's problems: a Hub dataset through ``datasets``, or a local file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from prefdelta.recipe import BuildRecipe, RecipeError, resolve_path


@dataclass(frozen=True)
class Prompt:
    prompt_id: str  # sha256 of the prompt text: stable across builds and machines
    prompt: str
    reference: str | None


def prompt_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_prompts(recipe: BuildRecipe) -> tuple[list[Prompt], int]:
    """The prompts to build from, and how many duplicates were folded into one.

    Shuffled with the recipe's seed before ``limit``, so a limit takes a fair sample and
    the same recipe always takes the same one. Duplicate problems are folded (they would
    give duplicate pairs) and counted.
    """
    from datasets import load_dataset

    cfg = recipe.prompts
    where: str
    if cfg.path is not None:
        path = resolve_path(cfg.path, recipe.base_dir)
        where = str(path)
        kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[
            path.suffix.lower()
        ]
        ds = load_dataset(kind, data_files=str(path), split="train")
    else:
        where = f"{cfg.dataset} (split {cfg.split})"
        ds = load_dataset(cfg.dataset, cfg.subset, split=cfg.split, revision=cfg.revision)

    for field, column in (("column", cfg.column), ("reference_column", cfg.reference_column)):
        if column is not None and column not in ds.column_names:
            raise RecipeError(
                [
                    f"prompts.{field}: column {column!r} is not in {where}; "
                    f"columns: {', '.join(ds.column_names)}"
                ]
            )
    ds = ds.shuffle(seed=cfg.seed)

    prompts: list[Prompt] = []
    seen: set[str] = set()
    duplicates = 0
    for index, row in enumerate(ds):
        text = row[cfg.column]
        if not isinstance(text, str) or not text.strip():
            raise RecipeError(
                [
                    f"prompts.column: row {index} of {where} (after shuffling) has no text in "
                    f"{cfg.column!r}: {text!r}"
                ]
            )
        pid = prompt_id(text)
        if pid in seen:
            duplicates += 1
            continue
        seen.add(pid)
        ref = row[cfg.reference_column] if cfg.reference_column else None
        prompts.append(Prompt(pid, text, None if ref is None else str(ref)))
        if cfg.limit is not None and len(prompts) == cfg.limit:
            break
    if not prompts:
        raise RecipeError([f"prompts: {where} has no rows"])
    return prompts, duplicates
