"""The build's two distilabel pipelines: generate, then judge.

Generation and judging run as two pipelines, each skipped when the store already holds
all its results. Two, not one, so that a judge-only change never loads a generator, and
so that on a GPU the judge gets the memory the generators held. Each can run on Ray
(``pipeline.ray()``) when the recipe says so, each step placed as the recipe's
``resources`` ask (:mod:`prefdelta.builders.placement`).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from distilabel.pipeline import Pipeline, RayPipeline
from distilabel.steps import LoadDataFromDicts, StepInput
from distilabel.typing import StepColumns, StepOutput

from prefdelta.backends import is_local
from prefdelta.builders.judge.spec import JudgeSpec
from prefdelta.builders.judge.task import JUDGE_OUTPUTS, ReasoningJudge, judge_from_spec
from prefdelta.builders.keys import judged_ref, judgment_key
from prefdelta.builders.llms import step_batch_size, streams_rows
from prefdelta.builders.llms.common import StopCheck, run_rows
from prefdelta.builders.placement import (
    PlacedStep,
    PlacementLog,
    check_cluster,
    placement_log_path,
    ray_nodes,
    step_resources,
)
from prefdelta.builders.runtime import stop_request_path
from prefdelta.builders.store import ResultStore
from prefdelta.builders.traces import TraceGeneration, model_group
from prefdelta.recipe import BuildRecipe, ModelEndpoint


class NoBatchCache:
    """What a build's pipelines change in distilabel's: no batch cache.

    distilabel writes every batch's rows to its cache folder, and saves its pipeline,
    batch manager and stage status after every batch, so that ``run(use_cache=True)``
    can resume. Each write, like every other use of that folder, works out the folder's
    name anew: a signature hashed from a dump of every step, their runtime parameters
    introspected, about 60 times per run. A build resumes from its store and runs with
    ``use_cache=False``, so distilabel's cache is never read back: nothing is written,
    and the folder, which the DAG decides and which is fixed once a run starts, is worked
    out once per run.
    """

    _location: Any = None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self._location = None
        try:
            return super().run(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._location = None

    @property
    def _cache_location(self) -> Any:
        if self._location is None:
            self._location = super()._cache_location  # type: ignore[misc]
        return self._location

    def _cache(self) -> None:
        """Nothing to save: the store holds every answer a rerun reuses."""

    def _register_batch(self, batch: Any) -> None:
        # as distilabel's, without writing the batch's rows out for a later run to reuse
        self._batch_manager.register_batch(batch)  # type: ignore[attr-defined]


class BuildRayPipeline(NoBatchCache, RayPipeline):
    """distilabel's Ray pipeline, without its batch cache."""


class BuildPipeline(NoBatchCache, Pipeline):
    """distilabel's pipeline, without its batch cache; ``ray()`` keeps it so."""

    def ray(
        self, ray_head_node_url: str | None = None, ray_init_kwargs: dict[str, Any] | None = None
    ) -> BuildRayPipeline:
        on_ray = BuildRayPipeline(  # as distilabel's own ray() makes its RayPipeline
            name=self.name,
            description=self.description,
            cache_dir=self._cache_dir,
            enable_metadata=self._enable_metadata,
            requirements=self.requirements,
            ray_head_node_url=ray_head_node_url,
            ray_init_kwargs=ray_init_kwargs,
        )
        on_ray.dag = self.dag
        return on_ray


class CachedReasoningJudge(ReasoningJudge):
    """The judge, asked only about traces the store has no judgment for.

    Rows name their trace by ``trace_key`` and the text is read from the store, a chunk at
    a time; rows out carry the judgment's key and status, not its answers (the build
    reads those from the store): traces never travel through distilabel's queues, hashes
    and batch files. Each judgment is committed once its row is done: for an API judge as
    each row finishes (:meth:`ReasoningJudge.ajudge`), else per batch.
    """

    fingerprint: str
    store_path: str

    @property
    def inputs(self) -> StepColumns:
        # ask: whether this judge is asked about the row; generation: what it reads, where
        # that is not the stored trace (None: read the trace from the store)
        return {"instruction": True, "trace_key": True, "generation": True, "ask": True}

    @property
    def outputs(self) -> list[str]:
        return ["judgment_key", "judge_status", "reused"]

    def process(self, inputs: StepInput) -> StepOutput:  # type: ignore[override]
        # a row this judge is not asked about: one it judged before, or will not be sent
        asked = [row for row in inputs if row["ask"]]
        unasked = [row for row in inputs if not row["ask"]]
        store = ResultStore(self.store_path)
        if streams_rows(self.llm):
            yield self._stream(asked, store) + [_light(row, None, None) for row in unasked]
            return
        rows = _with_traces(asked, store)
        keys = [self._key(row) for row in rows]
        done = store.existing("judgment", keys)
        missing = [row for row, key in zip(rows, keys, strict=True) if key not in done]
        judged = {}
        if missing:
            for batch in super().process(missing):
                judged.update((self._key(row), row) for row in batch)
            _commit(store, self.fingerprint, judged)
        yield [
            _light(row, key, None if key in done else judged[key])
            for row, key in zip(rows, keys, strict=True)
        ] + [_light(row, None, None) for row in unasked]

    def _key(self, row: dict[str, Any]) -> str:
        reference = row.get("reference") if self.show_reference else None
        return judgment_key(self.fingerprint, row["instruction"], row["generation"], reference)

    def _stream(self, inputs: list[dict[str, Any]], store: ResultStore) -> list[dict[str, Any]]:
        """Judge each row on its own, ``concurrency`` requests in flight, committing each
        judgment as its row finishes (:func:`prefdelta.builders.llms.common.run_rows`)."""
        llm: Any = self.llm
        kwargs = llm.get_generation_kwargs() or {}
        results: list[dict[str, Any]] = []
        stop = StopCheck(str(stop_request_path(self.store_path)))

        async def ask(chat: Any, n: int, seed: int | None, first: bool) -> dict[str, Any]:
            # a row once begun finishes
            return await llm.ask(chat, n, seed=seed, stop=stop if first else None, **kwargs)

        def job(row: dict[str, Any], key: str) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                judged = await self.ajudge(row, ask)
                _commit(store, self.fingerprint, {key: judged})
                results.append(_light(row, key, judged))

            return run

        def jobs() -> Iterator[Callable[[], Awaitable[None]]]:
            for start in range(0, len(inputs), _CHUNK):  # texts read as the rows are reached
                rows = _with_traces(inputs[start : start + _CHUNK], store)
                keys = [self._key(row) for row in rows]
                done = store.existing("judgment", keys)
                for row, key in zip(rows, keys, strict=True):
                    if key in done:
                        results.append(_light(row, key, None))
                    else:
                        yield job(row, key)

        with store.session():  # a commit per row: one connection for all of them
            run_rows(llm, jobs(), workers=2 * llm.max_concurrency, stop=stop)
        return results


_CHUNK = 256  # rows whose traces a streaming judge reads from the store at once


def _with_traces(rows: list[dict[str, Any]], store: ResultStore) -> list[dict[str, Any]]:
    """``rows`` with the text the judge reads (``generation``): the stored trace, unless
    the row carries what the judge reads of it instead (a part, a cut)."""
    wanted = [row["trace_key"] for row in rows if row.get("generation") is None]
    texts = store.get_many("generation", wanted) if wanted else {}
    return [
        row
        if row.get("generation") is not None
        else {**row, "generation": (texts.get(row["trace_key"]) or {}).get("trace")}
        for row in rows
    ]


def _commit(store: ResultStore, fingerprint: str, judged: dict[str, dict[str, Any]]) -> None:
    """Store the judgments by key; a judgment whose every call failed is not a result: a
    rerun retries it, and its last error is kept for the build to name."""
    values = {key: {c: row[c] for c in JUDGE_OUTPUTS} for key, row in judged.items()}
    answered = {k: v for k, v in values.items() if _answered(v)}
    refs = {k: judged_ref(fingerprint, judged[k]["trace_key"]) for k in answered}
    store.put_many("judgment", answered, refs)
    store.put_failures(
        {k: v["judge_problem"] or "failed" for k, v in values.items() if k not in answered}
    )


def _light(row: dict[str, Any], key: str | None, judged: dict[str, Any] | None) -> dict[str, Any]:
    """A judged row for distilabel: its key and status (None: reused, or not asked of this
    judge, which has no key), not its answers."""
    status = None if judged is None else judged["judge_status"]
    light = {k: v for k, v in row.items() if k != "generation"}
    return light | {"judgment_key": key, "judge_status": status, "reused": judged is None}


class PlacedTraceGeneration(PlacementLog, TraceGeneration):
    """Trace generation that, on Ray, logs where each batch ran."""


class PlacedJudge(PlacementLog, CachedReasoningJudge):
    """The cached judge that, on Ray, logs where each batch ran."""


def _answered(judged: dict[str, Any]) -> bool:
    """Some call for this judgment returned (text, even empty): it is a result."""
    return any(a.get("text") is not None for slot in judged["judge_answers"] for a in slot)


def _maybe_ray(pipeline: BuildPipeline, use_ray: bool, steps: Sequence[PlacedStep]) -> Any:
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
    """The column of a judging row holding what judge ``name`` reads of the trace, where
    that is not the stored trace itself (None: the judge reads the trace from the store)."""
    return "trace" if name == "judge" else f"trace_{name}"


def ask_column(name: str) -> str:
    """The column of a judging row saying whether judge ``name`` is asked about it."""
    return "ask" if name == "judge" else f"ask_{name}"


def spread_batch(endpoint: ModelEndpoint, rows: int) -> int:
    """A step's input batch (:func:`prefdelta.builders.llms.step_batch_size`), made small
    enough that each of its ``resources.replicas`` copies gets a share of ``rows``."""
    batch = step_batch_size(endpoint)
    replicas = endpoint.resources.replicas
    if replicas > 1:
        batch = min(batch, max(endpoint.batch_size, -(-rows // replicas)))
    return batch


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
    with BuildPipeline(name=f"prefdelta-{recipe.name}-generate", cache_dir=cache_dir) as pipeline:
        batch = max(spread_batch(recipe.generators[g], len(prompts)) for g in generators)
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
                input_batch_size=spread_batch(first, len(prompts)),
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
    batch = max(spread_batch(s.config, len(traces)) for s in specs.values())
    placed: list[PlacedStep] = []
    with BuildPipeline(name=f"prefdelta-{recipe.name}-judge", cache_dir=cache_dir) as pipeline:
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
                input_batch_size=spread_batch(judge, len(traces)),
                input_mappings={
                    "instruction": "prompt",
                    "generation": read_column(name),
                    "ask": ask_column(name),
                },
                resources=placed[-1].resources,
                placement_log=log,
            )
            load >> step
    return _maybe_ray(pipeline, recipe.ray, placed)
