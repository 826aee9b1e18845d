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
from prefdelta.builders.judge_input import JudgeInput, Read
from prefdelta.builders.panel import combine_judges, judge_columns
from prefdelta.builders.pipelines import ask_column, judge_pipeline, read_column
from prefdelta.builders.progress import store_progress
from prefdelta.builders.runtime import pipeline_scratch, run_pipeline
from prefdelta.builders.store import ResultStore
from prefdelta.recipe import BuildRecipe, GenerationParams, ModelEndpoint, request_timeout_s

__all__ = [
    "JudgedTraces",
    "ToJudge",
    "failed_judgment",
    "judge_traces",
    "waiting_note",
]


@dataclass(frozen=True)
class ToJudge:
    """A trace with text, as every judge is asked about it (each reads of it what its
    ``judge.reads`` says)."""

    trace_key: str
    prompt: str
    trace: str
    reference: str | None


@dataclass(frozen=True)
class JudgedTraces:
    """What the judges answered: per judge, what it read of each trace, each trace's
    judgment key (none for a trace it was not sent), the stored judgments and the last
    errors of those that failed for good."""

    recipe: BuildRecipe
    specs: dict[str, JudgeSpec]
    reads: dict[str, dict[str, Read]]  # judge -> trace key -> what it reads of the trace
    keys: dict[str, dict[str, str]]  # judge -> trace key -> judgment key (of those sent)
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
            if trace_key not in self.keys[name]:  # too long for it, or its part empty
                by_judge[name] = _not_sent(spec.reader, self.reads[name][trace_key])
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
    inputs: dict[str, JudgeInput],
    traces: Sequence[ToJudge],
    store: ResultStore,
    console: Console,
) -> JudgedTraces:
    """Ask each judge (``inputs``: by name, what each reads of a trace, and its spec) about
    the traces it has no stored judgment of, in one pipeline (a step per judge with work),
    and read back what every judge holds. A trace a judge would read too much of for its
    context, or nothing of, is never sent to that judge."""
    specs = {name: i.spec for name, i in inputs.items()}
    reads = {
        name: {t.trace_key: i.read(t.prompt, t.trace) for t in traces} for name, i in inputs.items()
    }
    keys = {
        name: {
            t.trace_key: spec.key(t.prompt, text, t.reference)
            for t in traces
            if (text := reads[name][t.trace_key].text) is not None
        }
        for name, spec in specs.items()
    }
    before = {name: store.existing("judgment", k.values()) for name, k in keys.items()}
    labels = {name: "judge" if name == "judge" else f"judge {name}" for name in specs}
    notes = {labels[n]: waiting_note(s.config, s.config.generation) for n, s in specs.items()}
    groups = {labels[n]: list(k.values()) for n, k in keys.items()}
    working = {n: s for n, s in specs.items() if set(keys[n].values()) - before[n]}
    with store_progress(console, "judgment", groups, store, notes=notes):
        asked = {  # judge -> the trace keys it is asked about
            n: {t for t, k in keys[n].items() if k not in before[n]} for n in working
        }
        # a row carries what a judge reads only where that is not the stored trace (a part,
        # a cut): the judge step reads the trace itself from the store
        rows = [
            {
                "prompt": t.prompt,
                "trace_key": t.trace_key,
                **{ask_column(n): t.trace_key in asked[n] for n in working},
                **{read_column(n): _carried(reads[n][t.trace_key], t.trace) for n in working},
                **({"reference": t.reference} if specs_show_reference(working) else {}),
            }
            for t in traces
            if any(t.trace_key in asked[n] for n in working)
        ]
        # longest first: batches of like lengths pad least (and on a GPU, memory runs out
        # on the first batch or not at all)
        length = {t.trace_key: len(t.prompt) + len(t.trace) for t in traces}
        rows.sort(key=lambda r: length[r["trace_key"]], reverse=True)
        if rows:
            with pipeline_scratch(recipe.ray) as scratch:
                run_pipeline(judge_pipeline(recipe, working, rows, store.path, scratch), store.path)
    judgments = {n: store.get_many("judgment", k.values()) for n, k in keys.items()}
    errors = {
        n: store.get_many("failure", [k for k in keys[n].values() if k not in judgments[n]])
        for n in specs
    }
    reused = sum(len(set(b)) for b in before.values())
    return JudgedTraces(recipe, specs, reads, keys, judgments, errors, reused)


def _carried(read: Read, trace: str) -> str | None:
    """What a judging row carries of a trace for a judge: the text it reads where that is
    not the trace as stored (None: the step reads the trace from the store)."""
    return None if read.text == trace else read.text


def specs_show_reference(specs: dict[str, JudgeSpec]) -> bool:
    """Whether any judge is shown the reference answer (its rows then carry one)."""
    return any(s.show_reference for s in specs.values())


def failed_judgment(reader: AnswerReader, error: str) -> dict[str, Any]:
    """The judge columns of a trace whose judgment failed for good (status ``failed``)."""
    return reader.outputs([[{"text": None, "tokens": None, "error": error}]])


def _not_sent(reader: AnswerReader, read: Read) -> dict[str, Any]:
    """The judge columns of a trace not sent for what the judge would read of it (too
    long for its context, or the part it reads empty): no attempt, the reason kept."""
    return reader.outputs([]) | {"judge_status": read.status, "judge_problem": read.problem}


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
