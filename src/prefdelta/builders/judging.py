"""The build's judging stage: every judge (one, or a panel's) asked about every trace with
text that its store keys do not hold yet, then each trace's judge columns read back.

Each judge has its own fingerprint, so its own store keys: a panel that gains a judge asks
only that judge, and a judge whose every judgment is stored is not even loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from prefdelta.backends import is_api
from prefdelta.builders.judge.parsing import EMPTY_TRACE
from prefdelta.builders.judge.reader import AnswerReader
from prefdelta.builders.judge.spec import JudgeSpec
from prefdelta.builders.panel import combine_judges, judge_columns
from prefdelta.builders.pipelines import judge_pipeline
from prefdelta.builders.progress import store_progress
from prefdelta.builders.runtime import pipeline_scratch, run_pipeline
from prefdelta.builders.store import ResultStore
from prefdelta.recipe import BuildRecipe, GenerationParams, ModelEndpoint, request_timeout_s

__all__ = ["JudgedTraces", "ToJudge", "failed_judgment", "judge_traces", "waiting_note"]


@dataclass(frozen=True)
class ToJudge:
    """A trace with text, as every judge is asked about it."""

    trace_key: str
    prompt: str
    trace: str
    reference: str | None


@dataclass(frozen=True)
class JudgedTraces:
    """What the judges answered: per judge, each trace's judgment key, the stored
    judgments and the last errors of those that failed for good."""

    recipe: BuildRecipe
    specs: dict[str, JudgeSpec]
    keys: dict[str, dict[str, str]]  # judge -> trace key -> judgment key
    judgments: dict[str, dict[str, dict[str, Any]]]  # judge -> judgment key -> stored
    errors: dict[str, dict[str, dict[str, Any]]]  # judge -> judgment key -> failure row
    reused: int  # judgments already stored when the stage began

    def unjudged(self, name: str) -> list[str]:
        """Trace keys that judge ``name`` has no judgment of."""
        done = self.judgments[name]
        return [t for t, k in self.keys[name].items() if k not in done]

    def all_judgments(self) -> list[dict[str, Any]]:
        return [j for by_key in self.judgments.values() for j in by_key.values()]

    def columns(self, trace_key: str | None, not_judged: str | None = None) -> dict[str, Any]:
        """A trace's judge columns: the one judge's outputs, or the panel's combined plus
        each judge's own (``builders.panel``). ``trace_key`` None: a trace no judge saw,
        ``not_judged`` saying why (else it is empty: status ``empty_trace``)."""
        by_judge = {}
        for name, spec in self.specs.items():
            if trace_key is None:
                by_judge[name] = (
                    failed_judgment(spec.reader, not_judged)
                    if not_judged
                    else _empty_trace(spec.reader)
                )
                continue
            key = self.keys[name][trace_key]
            if key in self.judgments[name]:
                by_judge[name] = spec.reader.outputs(self.judgments[name][key]["judge_answers"])
            else:
                error = (self.errors[name].get(key) or {}).get("error") or "no answer"
                by_judge[name] = failed_judgment(spec.reader, error)
        panel = self.recipe.judge.panel
        if panel is None:
            return by_judge["judge"]
        dims = self.recipe.judge.dimension_names
        extra: dict[str, Any] = {}
        for name, judged in by_judge.items():
            extra |= judge_columns(name, judged, dims)
        return combine_judges(by_judge, dims, panel.combine) | extra


def judge_traces(
    recipe: BuildRecipe,
    specs: dict[str, JudgeSpec],
    traces: Sequence[ToJudge],
    store: ResultStore,
    console: Console,
) -> JudgedTraces:
    """Ask each judge about the traces it has no stored judgment of, in one pipeline (a
    step per judge with work), and read back what every judge holds."""
    keys = {
        name: {t.trace_key: spec.key(t.prompt, t.trace, t.reference) for t in traces}
        for name, spec in specs.items()
    }
    before = {name: store.existing("judgment", k.values()) for name, k in keys.items()}
    labels = {name: "judge" if name == "judge" else f"judge {name}" for name in specs}
    notes = {labels[n]: waiting_note(s.config, s.config.generation) for n, s in specs.items()}
    groups = {labels[n]: list(k.values()) for n, k in keys.items()}
    working = {n: s for n, s in specs.items() if set(keys[n].values()) - before[n]}
    with store_progress(console, "judgment", groups, store, notes=notes):
        rows = [
            {
                "prompt": t.prompt,
                "trace": t.trace,
                "trace_key": t.trace_key,
                **({"reference": t.reference} if specs_show_reference(working) else {}),
            }
            for t in traces
            if any(keys[n][t.trace_key] not in before[n] for n in working)
        ]
        # longest first: batches of like lengths pad least (and on a GPU, memory runs out
        # on the first batch or not at all)
        rows.sort(key=lambda r: len(r["prompt"]) + len(r["trace"]), reverse=True)
        if rows:
            with pipeline_scratch(recipe.ray) as scratch:
                run_pipeline(judge_pipeline(recipe, working, rows, store.path, scratch))
    judgments = {n: store.get_many("judgment", k.values()) for n, k in keys.items()}
    errors = {
        n: store.get_many("failure", [k for k in keys[n].values() if k not in judgments[n]])
        for n in specs
    }
    reused = sum(len(set(b)) for b in before.values())
    return JudgedTraces(recipe, specs, keys, judgments, errors, reused)


def specs_show_reference(specs: dict[str, JudgeSpec]) -> bool:
    """Whether any judge is shown the reference answer (its rows then carry one)."""
    return any(s.show_reference for s in specs.values())


def failed_judgment(reader: AnswerReader, error: str) -> dict[str, Any]:
    """The judge columns of a trace whose judgment failed for good (status ``failed``)."""
    return reader.outputs([[{"text": None, "tokens": None, "error": error}]])


def _empty_trace(reader: AnswerReader) -> dict[str, Any]:
    """The judge columns of a trace the generator answered with no text: never sent to
    the judge (status ``empty_trace``, no attempt)."""
    return reader.outputs([]) | {
        "judge_status": EMPTY_TRACE,
        "judge_problem": "not judged: the generator answered no text",
    }


def waiting_note(endpoint: ModelEndpoint, generation: GenerationParams) -> str:
    """What a heartbeat says of a model's requests: how long each may wait (API backends)."""
    if not is_api(endpoint.backend):
        return ""
    timeout = request_timeout_s(endpoint, generation)
    retries = (
        f", retried up to {endpoint.request_retries} times" if endpoint.backend == "openai" else ""
    )
    return f"a request may wait {timeout} s{retries}; recipe: request_timeout"
