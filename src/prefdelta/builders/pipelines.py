"""The build's two distilabel pipelines: generate, then judge.

Generation and judging run as two pipelines, each skipped when the store already holds
all its results. Two, not one, so that a judge-only change never loads a generator, and
so that on a GPU the judge gets the memory the generators held. Each can run on Ray
(``pipeline.ray()``) when the recipe says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts, StepInput
from distilabel.typing import StepOutput

from prefdelta.backends import is_local
from prefdelta.builders.judge.spec import JudgeSpec
from prefdelta.builders.judge.task import ReasoningJudge, judge_from_spec
from prefdelta.builders.keys import judged_ref, judgment_key
from prefdelta.builders.store import ResultStore
from prefdelta.builders.traces import TraceGeneration, model_group
from prefdelta.recipe import BuildRecipe


class CachedReasoningJudge(ReasoningJudge):
    """The judge, asked only about traces the store has no judgment for."""

    fingerprint: str
    store_path: str

    def process(self, inputs: StepInput) -> StepOutput:  # type: ignore[override]
        store = ResultStore(self.store_path)
        keys = [judgment_key(self.fingerprint, r["instruction"], r["generation"]) for r in inputs]
        done = store.get_many("judgment", keys)
        missing = [row for row, key in zip(inputs, keys, strict=True) if key not in done]
        fresh: dict[str, dict[str, Any]] = {}
        refs: dict[str, str] = {}
        if missing:
            for batch in super().process(missing):
                for row in batch:
                    key = judgment_key(self.fingerprint, row["instruction"], row["generation"])
                    fresh[key] = {c: row[c] for c in self.outputs}
                    refs[key] = judged_ref(self.fingerprint, row["trace_key"])
            # a judgment whose every call failed is not a result: a rerun retries it, and
            # its last error is kept for the build to name
            answered = {k: v for k, v in fresh.items() if _answered(v)}
            store.put_many("judgment", answered, refs)
            store.put_failures(
                {k: v["judge_problem"] or "failed" for k, v in fresh.items() if k not in answered}
            )
        yield [{**row, **(done.get(k) or fresh[k])} for row, k in zip(inputs, keys, strict=True)]


def _answered(judged: dict[str, Any]) -> bool:
    """Some call for this judgment returned (text, even empty): it is a result."""
    return any(a.get("text") is not None for slot in judged["judge_answers"] for a in slot)


def _maybe_ray(pipeline: Pipeline, use_ray: bool) -> Any:
    if not use_ray:
        return pipeline
    from prefdelta.builders.llms import BackendUnavailableError

    try:
        import ray  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(
            "recipe sets `ray: true` but Ray is not installed: pip install 'prefdelta[ray]'"
        ) from None
    return pipeline.ray()


def _step_name(prefix: str, name: str) -> str:
    return prefix + "".join(c if c.isalnum() else "_" for c in name)


def generation_pipeline(
    recipe: BuildRecipe,
    prompts: Sequence[dict[str, Any]],
    generators: Sequence[str],
    store_path: Path,
    cache_dir: Path,
) -> Any:
    """load prompts >> one TraceGeneration per model that generators still need."""
    from prefdelta.builders.llms import make_llm

    groups: dict[Any, list[str]] = {}
    for name in generators:
        group = model_group(recipe.generators[name])
        groups.setdefault(group if group is not None else ("api", name), []).append(name)
    local = [names for names in groups.values() if is_local(recipe.generators[names[0]].backend)]
    # local models in parallel step processes share the cores; more threads than cores crawl
    threads = max(1, (os.cpu_count() or 1) // len(local)) if len(local) > 1 else None
    with Pipeline(name=f"prefdelta-{recipe.name}-generate", cache_dir=cache_dir) as pipeline:
        batch = max(recipe.generators[g].batch_size for g in generators)
        load = LoadDataFromDicts(name="load_prompts", data=list(prompts), batch_size=batch)
        for names in groups.values():
            first = recipe.generators[names[0]]
            step = TraceGeneration(
                name=_step_name("generate_", "_".join(names)),
                llm=make_llm(
                    first,
                    first.generation,
                    recipe.base_dir,
                    cpu_threads=threads if names in local else None,
                ),
                generators={name: recipe.generators[name] for name in names},
                store_path=str(store_path),
                input_batch_size=first.batch_size,
            )
            load >> step
    return _maybe_ray(pipeline, recipe.ray)


def judge_pipeline(
    recipe: BuildRecipe,
    spec: JudgeSpec,
    traces: Sequence[dict[str, Any]],
    store_path: Path,
    cache_dir: Path,
) -> Any:
    """load traces >> the cached judge; ``spec``: the recipe's judge, resolved once."""
    from prefdelta.builders.llms import make_llm

    judge = spec.config
    with Pipeline(name=f"prefdelta-{recipe.name}-judge", cache_dir=cache_dir) as pipeline:
        load = LoadDataFromDicts(name="load_traces", data=list(traces), batch_size=judge.batch_size)
        llm = make_llm(
            judge,
            judge.generation,
            recipe.base_dir,
            json_schema=spec.schema,
            logprobs=judge.scoring == "expected",
            schema_dialect=judge.response_format,
            reasoning=judge.thinking,
        )
        step = judge_from_spec(
            spec,
            llm,
            task_class=CachedReasoningJudge,
            name="judge",
            fingerprint=spec.fingerprint,
            store_path=str(store_path),
            input_batch_size=judge.batch_size,
            input_mappings={"instruction": "prompt", "generation": "trace"},
        )
        load >> step
    return _maybe_ray(pipeline, recipe.ray)
