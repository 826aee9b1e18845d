"""Loading the recipe's problems from local files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefdelta.builders.prompts import load_prompts, prompt_id
from prefdelta.recipe import RecipeError, parse_recipe

RECIPE = """
name: p
prompts: {{path: {path}, column: {column}, reference_column: answer, limit: {limit}, seed: 3}}
generators: {{g: {{model: m, backend: transformers}}, h: {{model: m, backend: transformers}}}}
pairing: {{chosen: g, rejected: h}}
judge: {{model: j, backend: transformers}}
"""


def _recipe(
    tmp_path: Path,
    rows: list[dict],
    column: str = "problem",
    limit: int = 100,
    suffix: str = ".jsonl",
):
    path = tmp_path / f"p{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pandas as pd

        pd.DataFrame(rows).to_csv(path, index=False)
    text = RECIPE.format(path=path.name, column=column, limit=limit)
    return parse_recipe(text, source="r.yaml", base_dir=tmp_path)


ROWS = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(20)]


def test_limit_takes_a_seeded_sample(tmp_path: Path) -> None:
    r = _recipe(tmp_path, ROWS, limit=5)
    first, _ = load_prompts(r.prompts, r.base_dir)
    again, _ = load_prompts(r.prompts, r.base_dir)
    assert [p.prompt for p in first] == [p.prompt for p in again]
    assert len(first) == 5
    assert [p.prompt for p in first] != [row["problem"] for row in ROWS[:5]]  # shuffled
    for p in first:
        assert p.prompt_id == prompt_id(p.prompt)
        assert int(p.reference) == 2 * int(p.prompt.split()[2])


def test_duplicates_are_folded_and_counted(tmp_path: Path) -> None:
    rows = ROWS[:3] + ROWS[:2]
    r = _recipe(tmp_path, rows)
    prompts, duplicates = load_prompts(r.prompts, r.base_dir)
    assert len(prompts) == 3 and duplicates == 2


def test_csv(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, ROWS[:4], suffix=".csv")
    prompts, _ = load_prompts(recipe.prompts, recipe.base_dir)
    assert sorted(p.prompt for p in prompts) == sorted(r["problem"] for r in ROWS[:4])


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    with pytest.raises(
        RecipeError, match=r"column 'question' is not in .*; columns: problem, answer"
    ):
        r = _recipe(tmp_path, ROWS, column="question")
        load_prompts(r.prompts, r.base_dir)


def test_empty_prompt_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"has no text in 'problem'"):
        r = _recipe(tmp_path, [{"problem": "  ", "answer": "1"}])
        load_prompts(r.prompts, r.base_dir)
