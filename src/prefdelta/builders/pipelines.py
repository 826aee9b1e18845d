"""The build's two distilabel pipelines: generate, then judge.

Generation and judging run as two pipelines, each skipped when the store already holds
all its results. Two, not one, so that a judge-only change never loads a generator, and
so that on a GPU the judge gets the memory the generators held. Each can run on Ray
(``pipeline.ray()``) when the recipe says so.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts, StepInput
from distilabel.typing import StepOutput

from prefdelta.backends import is_local
from prefdelta.builders.judge.spec import JudgeSpec
from prefdelta.builders.judge.task import JUDGE_OUTPUTS, ReasoningJudge, judge_from_spec
from prefdelta.builders.keys import judged_ref, judgment_key
from prefdelta.builders.llms import step_batch_size, streams_rows
from prefdelta.builders.llms.common import run_rows, stopping
from prefdelta.builders.store import ResultStore
from prefdelta.builders.traces import TraceGeneration, model_group
from prefdelta.recipe import BuildRecipe


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
    def inputs(self) -> list[str]:
        return ["instruction", "trace_key"]

    @property
    def outputs(self) -> list[str]:
        return ["judgment_key", "judge_status", "reused"]

    def process(self, inputs: StepInput) -> StepOutput:  # type: ignore[override]
        store = ResultStore(self.store_path)
        if streams_rows(self.llm):
            yield self._stream(inputs, store)
            return
        rows = _with_traces(inputs, store)
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
        ]

    def _key(self, row: dict[str, Any]) -> str:
        return judgment_key(self.fingerprint, row["instruction"], row["generation"])

    def _stream(self, inputs: list[dict[str, Any]], store: ResultStore) -> list[dict[str, Any]]:
        """Judge each row on its own, ``concurrency`` requests in flight, committing each
        judgment as its row finishes (:func:`prefdelta.builders.llms.common.run_rows`)."""
        llm: Any = self.llm
        kwargs = llm.get_generation_kwargs() or {}
        results: list[dict[str, Any]] = []

        async def ask(chat: Any, n: int, seed: int | None, first: bool) -> dict[str, Any]:
            stop = stopping if first else None  # a row once begun finishes
            return await llm.ask(chat, n, seed=seed, stop=stop, **kwargs)

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
            run_rows(llm, jobs(), workers=2 * llm.max_concurrency)
        return results


_CHUNK = 256  # rows whose traces a streaming judge reads from the store at once


def _with_traces(rows: list[dict[str, Any]], store: ResultStore) -> list[dict[str, Any]]:
    """``rows`` with the text of their trace (``generation``), read from the store."""
    texts = store.get_many("generation", [row["trace_key"] for row in rows])
    return [{**row, "generation": (texts.get(row["trace_key"]) or {}).get("trace")} for row in rows]


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


def _light(row: dict[str, Any], key: str, judged: dict[str, Any] | None) -> dict[str, Any]:
    """A judged row for distilabel: its key and status (None: reused), not its answers."""
    status = None if judged is None else judged["judge_status"]
    light = {k: v for k, v in row.items() if k != "generation"}
    return light | {"judgment_key": key, "judge_status": status, "reused": judged is None}


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
        batch = max(step_batch_size(recipe.generators[g]) for g in generators)
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
                input_batch_size=step_batch_size(first),
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
        batch = step_batch_size(judge)
        load = LoadDataFromDicts(name="load_traces", data=list(traces), batch_size=batch)
        llm = make_llm(
            judge,
            judge.generation,
            recipe.base_dir,
            json_schema=spec.schema,
            logprobs=judge.scoring == "expected",
            schema_dialect=judge.response_format,
        )
        step = judge_from_spec(
            spec,
            llm,
            task_class=CachedReasoningJudge,
            name="judge",
            fingerprint=spec.fingerprint,
            store_path=str(store_path),
            input_batch_size=batch,
            input_mappings={"instruction": "prompt"},
        )
        load >> step
    return _maybe_ray(pipeline, recipe.ray)
