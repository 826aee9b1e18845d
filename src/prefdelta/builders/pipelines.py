"""The build's two distilabel pipelines: generate, then judge.

Generation and judging run as two pipelines, each skipped when the store already holds
all its results. Two, not one, so that a judge-only change never loads a generator, and
so that on a GPU the judge gets the memory the generators held. Each can run on Ray
(``pipeline.ray()``) when the recipe says so, each step placed as the recipe's
``resources`` ask (:mod:`prefdelta.builders.placement`).
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
from prefdelta.builders.placement import (
    PlacedStep,
    PlacementLog,
    check_cluster,
    placement_log_path,
    ray_nodes,
    step_resources,
)
from prefdelta.builders.store import ResultStore
from prefdelta.builders.traces import TraceGeneration, model_group
from prefdelta.recipe import BuildRecipe


class CachedReasoningJudge(ReasoningJudge):
    """The judge, asked only about traces the store has no judgment for."""

    fingerprint: str
    store_path: str

    def _key(self, row: dict[str, Any]) -> str:
        reference = row.get("reference") if self.show_reference else None
        return judgment_key(self.fingerprint, row["instruction"], row["generation"], reference)

    def process(self, inputs: StepInput) -> StepOutput:  # type: ignore[override]
        # a row with no text for this judge: one it already judged, or will not be sent
        unasked = [r for r in inputs if r["generation"] is None]
        inputs = [r for r in inputs if r["generation"] is not None]
        store = ResultStore(self.store_path)
        keys = [self._key(r) for r in inputs]
        done = store.get_many("judgment", keys)
        missing = [row for row, key in zip(inputs, keys, strict=True) if key not in done]
        fresh: dict[str, dict[str, Any]] = {}
        refs: dict[str, str] = {}
        if missing:
            for batch in super().process(missing):
                for row in batch:
                    key = self._key(row)
                    fresh[key] = {c: row[c] for c in self.outputs}
                    refs[key] = judged_ref(self.fingerprint, row["trace_key"])
            # a judgment whose every call failed is not a result: a rerun retries it, and
            # its last error is kept for the build to name
            answered = {k: v for k, v in fresh.items() if _answered(v)}
            store.put_many("judgment", answered, refs)
            store.put_failures(
                {k: v["judge_problem"] or "failed" for k, v in fresh.items() if k not in answered}
            )
        nothing = dict.fromkeys(self.outputs)
        yield [
            {**row, **(done.get(k) or fresh[k])} for row, k in zip(inputs, keys, strict=True)
        ] + [{**row, **nothing} for row in unasked]


class PlacedTraceGeneration(PlacementLog, TraceGeneration):
    """Trace generation that, on Ray, logs where each batch ran."""


class PlacedJudge(PlacementLog, CachedReasoningJudge):
    """The cached judge that, on Ray, logs where each batch ran."""


def _answered(judged: dict[str, Any]) -> bool:
    """Some call for this judgment returned (text, even empty): it is a result."""
    return any(a.get("text") is not None for slot in judged["judge_answers"] for a in slot)


def _maybe_ray(pipeline: Pipeline, use_ray: bool, steps: Sequence[PlacedStep]) -> Any:
    if not use_ray:
        return pipeline
    from prefdelta.builders.llms import BackendUnavailableError

    try:
        import ray  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(
            "recipe sets `ray: true` but Ray is not installed: pip install 'prefdelta[ray]'"
        ) from None
    check_cluster(steps, ray_nodes())
    return pipeline.ray()


def read_column(name: str) -> str:
    """The column of a judging row holding what judge ``name`` reads of the trace (None:
    nothing to ask it); the single judge's is ``trace``, as it always was."""
    return "trace" if name == "judge" else f"trace_{name}"


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

    store_path = store_path.resolve()  # a Ray actor runs in a folder of its node's choosing
    groups: dict[Any, list[str]] = {}
    for name in generators:
        group = model_group(recipe.generators[name])
        groups.setdefault(group if group is not None else ("api", name), []).append(name)
    local = [names for names in groups.values() if is_local(recipe.generators[names[0]].backend)]
    # local models in parallel step processes share the cores; more threads than cores crawl
    threads = max(1, (os.cpu_count() or 1) // len(local)) if len(local) > 1 else None
    log = str(placement_log_path(store_path)) if recipe.ray else None
    placed: list[PlacedStep] = []
    with Pipeline(name=f"prefdelta-{recipe.name}-generate", cache_dir=cache_dir) as pipeline:
        batch = max(recipe.generators[g].batch_size for g in generators)
        load = LoadDataFromDicts(name="load_prompts", data=list(prompts), batch_size=batch)
        for names in groups.values():
            first = recipe.generators[names[0]]
            placed.append(
                step_resources([(f"generators.{n}", recipe.generators[n]) for n in names])
            )
            step = PlacedTraceGeneration(
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
                resources=placed[-1].resources,
                placement_log=log,
            )
            load >> step
    return _maybe_ray(pipeline, recipe.ray, placed)


def judge_pipeline(
    recipe: BuildRecipe,
    specs: dict[str, JudgeSpec],
    traces: Sequence[dict[str, Any]],
    store_path: Path,
    cache_dir: Path,
) -> Any:
    """load traces >> one cached judge step per judge in ``specs`` (the recipe's judges,
    resolved once, by name: ``judge`` alone, or a panel's members), side by side."""
    from prefdelta.builders.llms import make_llm

    store_path = store_path.resolve()  # a Ray actor runs in a folder of its node's choosing
    log = str(placement_log_path(store_path)) if recipe.ray else None
    local = [n for n, s in specs.items() if is_local(s.config.backend)]
    # local judges in parallel step processes share the cores, as generators do
    threads = max(1, (os.cpu_count() or 1) // len(local)) if len(local) > 1 else None
    batch = max(s.config.batch_size for s in specs.values())
    placed: list[PlacedStep] = []
    with Pipeline(name=f"prefdelta-{recipe.name}-judge", cache_dir=cache_dir) as pipeline:
        load = LoadDataFromDicts(name="load_traces", data=list(traces), batch_size=batch)
        for name, spec in specs.items():
            judge = spec.config
            where = "judge" if name == "judge" else f"judge.panel.judges.{name}"
            placed.append(step_resources([(where, judge)]))
            llm = make_llm(
                judge,
                judge.generation,
                recipe.base_dir,
                json_schema=spec.schema,
                logprobs=judge.scoring == "expected",
                schema_dialect=judge.response_format,
                cpu_threads=threads if name in local else None,
                reasoning=judge.thinking,
            )
            step = judge_from_spec(
                spec,
                llm,
                task_class=PlacedJudge,
                name="judge" if name == "judge" else _step_name("judge_", name),
                fingerprint=spec.fingerprint,
                store_path=str(store_path),
                input_batch_size=judge.batch_size,
                input_mappings={"instruction": "prompt", "generation": read_column(name)},
                resources=placed[-1].resources,
                placement_log=log,
            )
            load >> step
    return _maybe_ray(pipeline, recipe.ray, placed)
