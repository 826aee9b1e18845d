"""Trace generation as a distilabel Task that consults the result store first.

One step serves every generator that runs on the same loaded model (the demo's two
generators are one model decoded two ways): the model is loaded once, and the
generators take turns with all the cores instead of splitting them. Side by side, the
generator with the longer budget ran alone on one core while the other idled; taking
turns cut the generation stage of ``bench/build_overhead.py`` (16 prompts, 2 cores) from
80 s to 65 s.

One row in, ``samples_per_prompt`` rows out per generator (one per trace), which carry the
trace's key and status but not its text: the build reads texts from the store. Only calls
missing from the store reach the LLM: for a local model or vLLM in one batched
``generate_outputs`` call per generator and step batch, committed before the rows move
on; for an API backend row by row, each committed as it comes back, with ``concurrency``
requests in flight (:func:`prefdelta.builders.llms.common.run_rows`). A build killed at
any point keeps every trace it finished.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from distilabel.steps import StepInput
from distilabel.steps.tasks import Task
from distilabel.typing import ChatType, StepColumns, StepOutput

from prefdelta.backends import TRAITS
from prefdelta.builders.keys import row_seed, trace_keyer
from prefdelta.builders.llms import generation_kwargs, streams_rows, takes_row_seeds
from prefdelta.builders.llms.common import StopCheck, run_rows
from prefdelta.builders.runtime import stop_request_path
from prefdelta.builders.store import ResultStore
from prefdelta.recipe import GeneratorConfig

TRACE_COLUMNS = [
    "generator",
    "sample",
    "trace_key",
    "finish_reason",
    "output_tokens",
    "input_tokens",
    "generation_status",
    "reused",
]


def chat_for(config: GeneratorConfig, prompt: str) -> ChatType:
    """The chat a generator sends for ``prompt``: its system prompt, then its template."""
    messages: ChatType = []
    if config.system_prompt:
        messages.append({"role": "system", "content": config.system_prompt})
    messages.append({"role": "user", "content": config.prompt_template.replace("{prompt}", prompt)})
    return messages


def model_group(config: GeneratorConfig) -> tuple[Any, ...] | None:
    """What loading a generator's model depends on; generators equal in it share one step.

    Local and vLLM models are shared (one copy in memory, turns instead of split cores or
    a second copy on the GPU); API generators get a step each, so their requests overlap.
    """
    if not TRAITS[config.backend].shares_loaded_model:
        return None
    return (
        config.backend,
        config.model,
        config.dtype,
        config.batch_size,
        config.tensor_parallel_size,
    )


class TraceGeneration(Task):
    """Generate reasoning traces for the named generators, which share ``llm``.

    Each generator decodes with its own parameters, and each trace samples from a seed of
    its own key, so its text depends neither on which other generators share the model
    nor on which rows share its batch.
    """

    generators: dict[str, GeneratorConfig]
    store_path: str

    @property
    def inputs(self) -> StepColumns:
        return ["prompt_id", "prompt"]

    @property
    def outputs(self) -> StepColumns:
        return TRACE_COLUMNS

    def format_input(self, input: dict[str, Any]) -> ChatType:
        """The chat for ``input["prompt"]`` as generator ``input["generator"]`` asks it."""
        return chat_for(self.generators[input["generator"]], input["prompt"])

    def format_output(
        self, output: str | None, input: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {"trace": output}

    def process(self, inputs: StepInput) -> StepOutput:  # type: ignore[override]
        store = ResultStore(self.store_path)
        rows = []
        for name, config in self.generators.items():
            key_of = trace_keyer(config)
            wanted = [
                (row, sample, key_of(row["prompt"], sample))
                for row in inputs
                for sample in range(config.samples_per_prompt)
            ]
            done = store.existing("generation", (key for _, _, key in wanted))
            missing = [(row, key) for row, _, key in wanted if key not in done]
            fresh: dict[str, dict[str, Any]] = {}
            if missing and streams_rows(self.llm):
                fresh = self._stream(name, config, missing, store)
            elif missing:
                outputs = self._generate(name, config, missing)
                budget = config.generation.max_new_tokens
                records = {
                    key: _trace_record(output, budget)
                    for (_, key), output in zip(missing, outputs, strict=True)
                }
                _commit(store, records)
                fresh = {key: _light(record) for key, record in records.items()}
            for row, sample, key in wanted:
                if key not in done and key not in fresh:
                    continue  # not asked: the build was interrupted first
                rows.append(
                    {
                        **row,
                        **(fresh.get(key) or _REUSED),
                        "generator": name,
                        "sample": sample,
                        "trace_key": key,
                        "reused": key in done,
                        "model_name": self.llm.model_name,
                    }
                )
        yield rows

    def _stream(
        self,
        name: str,
        config: GeneratorConfig,
        missing: list[tuple[dict[str, Any], str]],
        store: ResultStore,
    ) -> dict[str, dict[str, Any]]:
        """Ask for each missing trace on its own, ``concurrency`` at a time, and commit
        each as it comes back: the slots stay full and a kill loses no answer. The same
        request and seed as :meth:`_generate` sends for the row."""
        kwargs = generation_kwargs(config.backend, config.generation)
        budget = config.generation.max_new_tokens
        fresh: dict[str, dict[str, Any]] = {}
        stop = StopCheck(str(stop_request_path(self.store_path)))

        def job(row: dict[str, Any], key: str) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                chat = self.format_input({**row, "generator": name})
                seed = row_seed(key) if takes_row_seeds(self.llm) else None
                output = await self.llm.ask(chat, 1, seed=seed, stop=stop, **kwargs)  # type: ignore[attr-defined]
                record = _trace_record(output, budget)
                _commit(store, {key: record})
                fresh[key] = _light(record)

            return run

        llm: Any = self.llm
        with store.session():  # a commit per row: one connection for all of them
            jobs = (job(row, key) for row, key in missing)
            run_rows(llm, jobs, workers=2 * llm.max_concurrency, stop=stop)
        return fresh

    def _generate(
        self, name: str, config: GeneratorConfig, missing: list[tuple[dict[str, Any], str]]
    ) -> list[dict[str, Any]]:
        """One call for the ``(row, trace key)`` pairs in ``missing``; an exception fails
        these rows only, with its message, and the step goes on to its other generators
        (a shared step holds several). Each trace samples from a seed of its own key, so a
        resumed build draws what the uninterrupted one did, whatever batch a row lands in."""
        seeds = {}
        if takes_row_seeds(self.llm):
            seeds = {"seeds": [row_seed(key) for _, key in missing]}
        try:
            return self.llm.generate_outputs(
                inputs=[self.format_input({**row, "generator": name}) for row, _ in missing],
                num_generations=1,
                **generation_kwargs(config.backend, config.generation),
                **seeds,
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._logger.warning(f"Generator '{name}': LLM call failed: {error}")
            return [{"generations": [None], "error": error}] * len(missing)


def _commit(store: ResultStore, records: dict[str, dict[str, Any]]) -> None:
    """Store the traces that came back; failed calls are not stored (the next run retries
    them), their errors are kept apart, for the build to report."""
    store.put_many(
        "generation", {k: v for k, v in records.items() if v["generation_status"] == "ok"}
    )
    store.put_failures(
        {k: v["error"] for k, v in records.items() if v["generation_status"] != "ok"}
    )


def _light(record: dict[str, Any]) -> dict[str, Any]:
    """A trace's row for distilabel, without its text: the build reads texts from the
    store, and each copy of a trace that travels through distilabel's queues, hashes and
    batch files costs memory and CPU in proportion to the build."""
    return {column: record.get(column) for column in _LIGHT}


_LIGHT = ("finish_reason", "output_tokens", "input_tokens", "generation_status")
_REUSED = {column: None for column in _LIGHT} | {"generation_status": "ok"}


def _trace_record(output: dict[str, Any], budget: int) -> dict[str, Any]:
    text = (output.get("generations") or [None])[0]
    stats = output.get("statistics") or {}
    tokens = (stats.get("output_tokens") or [None])[0]
    prompt_tokens = (stats.get("input_tokens") or [None])[0]
    if text is None:
        return {
            "trace": "",
            "finish_reason": "error",
            "output_tokens": 0,
            "generation_status": "error",
            "error": output.get("error")
            or next(iter(output.get("errors") or []), None)
            or "the LLM returned no output",
        }
    finish = "length" if tokens is not None and tokens >= budget else "stop"
    return {
        "trace": text,
        "finish_reason": finish,
        "output_tokens": int(tokens) if tokens is not None else -1,
        "input_tokens": int(prompt_tokens) if prompt_tokens is not None else -1,
        "generation_status": "ok",
    }
