"""Traces a dataset already holds: a ``backend: dataset`` generator reads them from the
prompts table's columns instead of calling a model (the R1 traces of OpenR1-Math-220k,
say, cost no regeneration).

Each trace becomes a stored generation like a generated one, under a key derived from
what the columns hold for it, so judging, pairing, resume and the tables treat both
alike: a rebuild reuses them, and a changed column re-keys only what changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prefdelta.backends import calls_model
from prefdelta.builders.columns import load_pair_prompts
from prefdelta.builders.keys import content_key
from prefdelta.builders.prompts import Prompt, load_prompts
from prefdelta.builders.verify import is_correct
from prefdelta.recipe import BuildRecipe, GeneratorConfig, RecipeError

UNKNOWN_FINISH = "unknown"  # the dataset gives no finish reason for the trace


def is_given(config: GeneratorConfig) -> bool:
    """The generator's traces are read from the prompts table, not generated."""
    return not calls_model(config.backend)


def given_columns(recipe: BuildRecipe) -> dict[str, str]:
    """Every prompts-table column the recipe's dataset generators read, with the recipe
    field that names it (for an error that points at the field)."""
    return {
        column: f"generators.{name}.{field}"
        for name in recipe.pairing.generator_names
        for field, column in recipe.generators[name].given_columns.items()
    }


def load_build_prompts(recipe: BuildRecipe) -> tuple[list[Prompt], int]:
    """The build's prompts, each with the columns its dataset generators read, and how many
    duplicates were folded; a preference dataset's (pairing strategy columns) row by row."""
    if recipe.pairing.strategy == "columns":
        return load_pair_prompts(recipe)
    return load_prompts(recipe.prompts, recipe.base_dir, given_columns(recipe))


def _cells(value: Any, field: str, prompt: Prompt, kinds: tuple[type, ...]) -> list[Any]:
    """One cell as a list of per-trace values: a scalar is one trace, a list one each."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    for item in items:
        if item is not None and not isinstance(item, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise RecipeError(
                [
                    f"{field}: prompt {prompt.prompt_id[:12]} holds {type(item).__name__} "
                    f"{item!r}; expected {names}, or a list of them"
                ]
            )
    return items


def given_records(name: str, config: GeneratorConfig, prompt: Prompt) -> list[dict[str, Any]]:
    """The stored-generation records of ``prompt``'s traces in ``config.column``: all of a
    list's elements, or its first ``samples_per_prompt`` when the recipe sets it. A
    missing text is kept as an empty trace (the build marks it ``empty_trace``)."""
    where = f"generators.{name}"
    value = prompt.columns.get(config.column or "")
    texts = _cells(value, f"{where}.column", prompt, (str,))  # a missing cell: one empty trace
    if "samples_per_prompt" in config.model_fields_set:
        texts = texts[: config.samples_per_prompt]

    def aligned(field: str, column: str | None, kinds: tuple[type, ...]) -> list[Any]:
        if column is None:
            return [None] * len(texts)
        cells = _cells(prompt.columns.get(column), f"{where}.{field}", prompt, kinds)
        if len(cells) == 1 and len(texts) > 1 and not isinstance(prompt.columns[column], list):
            cells = cells * len(texts)  # one value for every trace
        return (cells + [None] * len(texts))[: len(texts)]

    correct = aligned("correct_column", config.correct_column, (bool,))
    finish = aligned("finish_column", config.finish_column, (str,))
    tokens = aligned("tokens_column", config.tokens_column, (int,))
    return [
        {
            "trace": text or "",
            "finish_reason": finish[i] or UNKNOWN_FINISH,
            "output_tokens": -1 if tokens[i] is None else int(tokens[i]),
            "input_tokens": -1,
            "generation_status": "ok",
            "given_correct": correct[i],
        }
        for i, text in enumerate(texts)
    ]


def given_key(config: GeneratorConfig, prompt: str, sample: int, record: Mapping[str, Any]) -> str:
    """A read trace's store key: what it stands for and what the columns hold for it."""
    return content_key("given", config.model, prompt, sample, dict(record))


def shortfall(config: GeneratorConfig, read: int) -> int:
    """Traces a prompt lacks: short of ``samples_per_prompt`` when set, else of one."""
    wanted = config.samples_per_prompt if "samples_per_prompt" in config.model_fields_set else 1
    return max(0, wanted - read)


def correctness(gen: Mapping[str, Any], reference: str | None) -> tuple[bool | None, bool | None]:
    """A trace's ``correct``, and the verifier's own verdict where it was asked: the
    dataset's given correctness is kept as given; math-verify is still run against the
    reference answer, so disagreements can be counted."""
    computed = None if reference is None else is_correct(gen["trace"], reference)
    given = gen.get("given_correct")
    return (computed if given is None else given), computed


def given_summary(
    recipe: BuildRecipe,
    rows: Iterable[tuple[str, Mapping[str, Any], bool | None]],
    shortfalls: Mapping[str, int],
) -> dict[str, Any]:
    """Per dataset generator: traces read, traces short of ``samples_per_prompt``, and
    how often the given correctness and math-verify's disagree. ``rows``: (generator, stored
    record, math-verify's verdict or None) of each read trace."""
    names = [n for n in recipe.pairing.generator_names if is_given(recipe.generators[n])]
    out: dict[str, Any] = {
        n: {"traces": 0, "shortfall": shortfalls.get(n, 0), "correct_given": 0, "checked": 0}
        for n in names
    }
    disagree: Counter[str] = Counter()
    for name, gen, computed in rows:
        if name not in out:
            continue
        out[name]["traces"] += 1
        given = gen.get("given_correct")
        out[name]["correct_given"] += given is not None
        if given is not None and computed is not None:
            out[name]["checked"] += 1
            disagree[name] += given != computed
    for name in names:
        out[name]["correct_disagreements"] = disagree[name]
    return out


def read_given(
    recipe: BuildRecipe, prompts: Sequence[Prompt]
) -> tuple[dict[tuple[str, str, int], dict[str, Any]], dict[str, int]]:
    """Every read trace's record by (generator, prompt id, sample), and each dataset
    generator's shortfall."""
    records: dict[tuple[str, str, int], dict[str, Any]] = {}
    short: dict[str, int] = {}
    for name in recipe.pairing.generator_names:
        config = recipe.generators[name]
        if not is_given(config):
            continue
        short[name] = 0
        for p in prompts:
            found = given_records(name, config, p)
            short[name] += shortfall(config, len(found))
            for s, record in enumerate(found):
                records[(name, p.prompt_id, s)] = record
    return records, short
