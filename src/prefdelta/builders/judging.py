"""The build's judging stage: every judge (one, or a panel's) asked about every trace with
text that its store keys do not hold yet, then each trace's judge columns read back.

Each judge has its own fingerprint, so its own store keys: a panel that gains a judge asks
only that judge, and a judge whose every judgment is stored is not even loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import islice
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

# traces read, keyed and looked up in the store at a time
CHUNK = 500

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
    """What the judges answered: per judge, what it read of each trace (its status, cut
    and tokens; the text itself is not kept), each trace's judgment key (none for a trace
    it was not sent), which judgments the store holds and the last errors of those that
    failed for good. The judgments are read from the store a chunk at a time
    (:meth:`stored`), so a build never holds every answer at once."""

    recipe: BuildRecipe
    specs: dict[str, JudgeSpec]
    reads: dict[str, dict[str, Read]]  # judge -> trace key -> what it read (text dropped)
    keys: dict[str, dict[str, str]]  # judge -> trace key -> judgment key (of those sent)
    done: dict[str, set[str]]  # judge -> the judgment keys the store holds
    errors: dict[str, dict[str, dict[str, Any]]]  # judge -> judgment key -> failure row
    reused: int  # judgments already stored when the stage began
    store: ResultStore

    def unjudged(self, name: str) -> list[str]:
        """Trace keys that judge ``name`` has no judgment of."""
        done = self.done[name]
        return [t for t, k in self.keys[name].items() if k not in done]

    def stored(self, trace_keys: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """The stored judgments of ``trace_keys``: judge -> judgment key -> judgment."""
        wanted = list(trace_keys)
        return {
            name: self.store.get_many("judgment", [keys[t] for t in wanted if t in keys])
            for name, keys in self.keys.items()
        }

    def columns(
        self,
        judgments: dict[str, dict[str, dict[str, Any]]],
        trace_key: str | None,
        not_judged: str | None = None,
    ) -> dict[str, Any]:
        """A trace's judge columns: the one judge's outputs, or the panel's combined plus
        each judge's own (``builders.panel``); ``judgments``: :meth:`stored` of a chunk
        holding it. ``trace_key`` None: a trace no judge saw, ``not_judged`` saying why
        (else it is empty: status ``empty_trace``)."""
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
            if key in judgments[name]:
                by_judge[name] = spec.reader.outputs(judgments[name][key]["judge_answers"])
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
    traces: Iterable[ToJudge],
    store: ResultStore,
    console: Console,
) -> JudgedTraces:
    """Ask each judge (``inputs``: by name, what each reads of a trace, and its spec) about
    the traces it has no stored judgment of, in one pipeline (a step per judge with work),
    and note what every judge holds. A trace a judge would read too much of for its
    context, or nothing of, is never sent to that judge. ``traces`` is read once, in
    order, and no text of it is kept but what a judge is asked to read that the store
    does not hold (a cut), so it can stream from the store."""
    specs = {name: i.spec for name, i in inputs.items()}
    reads: dict[str, dict[str, Read]] = {name: {} for name in specs}
    keys: dict[str, dict[str, str]] = {name: {} for name in specs}
    before: dict[str, set[str]] = {name: set() for name in specs}
    asked: dict[str, dict[str, str | None]] = {name: {} for name in specs}  # -> carried
    length: dict[str, int] = {}
    about: dict[str, tuple[str, str | None]] = {}  # trace key -> (prompt, reference)
    it = iter(traces)
    while chunk := list(islice(it, CHUNK)):
        for name, i in inputs.items():
            found = {t.trace_key: i.judged(t.prompt, t.trace, t.reference) for t in chunk}
            mine = {k: key for k, (_, key) in found.items() if key is not None}
            stored = store.existing("judgment", mine.values())
            before[name] |= stored
            keys[name] |= mine
            for t in chunk:
                if t.trace_key in mine and mine[t.trace_key] not in stored:
                    asked[name][t.trace_key] = _carried(found[t.trace_key][0], t.trace)
            reads[name] |= {k: replace(r, text=None) for k, (r, _) in found.items()}
        for t in chunk:
            length[t.trace_key] = len(t.prompt) + len(t.trace)
            about[t.trace_key] = (t.prompt, t.reference)
    labels = {name: "judge" if name == "judge" else f"judge {name}" for name in specs}
    notes = {labels[n]: waiting_note(s.config, s.config.generation) for n, s in specs.items()}
    groups = {labels[n]: list(k.values()) for n, k in keys.items()}
    working = {n: s for n, s in specs.items() if asked[n]}
    with store_progress(console, "judgment", groups, store, notes=notes):
        # a row carries what a judge reads only where that is not the stored trace (a part,
        # a cut): the judge step reads the trace itself from the store
        rows = [
            {
                "prompt": about[t][0],
                "trace_key": t,
                **{ask_column(n): t in asked[n] for n in working},
                **{read_column(n): asked[n].get(t) for n in working},
                **({"reference": about[t][1]} if specs_show_reference(working) else {}),
            }
            for t in about
            if any(t in asked[n] for n in working)
        ]
        # longest first: batches of like lengths pad least (and on a GPU, memory runs out
        # on the first batch or not at all)
        rows.sort(key=lambda r: length[r["trace_key"]], reverse=True)
        if rows:
            with pipeline_scratch(recipe.ray) as scratch:
                run_pipeline(judge_pipeline(recipe, working, rows, store.path, scratch), store.path)
    done = {n: store.existing("judgment", k.values()) for n, k in keys.items()}
    errors = {
        n: store.get_many("failure", [k for k in keys[n].values() if k not in done[n]])
        for n in specs
    }
    reused = sum(len(b) for b in before.values())
    return JudgedTraces(recipe, specs, reads, keys, done, errors, reused, store)


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
