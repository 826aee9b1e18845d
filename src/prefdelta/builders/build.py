"""``prefdelta build``: recipe -> traces -> judgments -> pairs and deltas, in a build folder.

The build folder holds ``store.sqlite`` (every finished model call), and once a build is
complete: ``traces.parquet``, ``pairs.parquet``, ``recipe.yaml`` and ``summary.json``.
``summary.json`` is written last and names the hashes of the tables, so a folder without
it, or with tables that do not match it, is never taken for a finished build.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from prefdelta.backends import is_api
from prefdelta.builders.deltas import aggregate, generator_gap, generator_means
from prefdelta.builders.given import (
    correctness,
    given_columns,
    given_key,
    given_summary,
    is_given,
    read_given,
)
from prefdelta.builders.judge.parsing import EMPTY_TRACE
from prefdelta.builders.judge.reader import AnswerReader
from prefdelta.builders.judge.spec import JudgeSpec
from prefdelta.builders.keys import judgment_key, trace_key
from prefdelta.builders.pairs import make_pairs
from prefdelta.builders.pipelines import generation_pipeline, judge_pipeline
from prefdelta.builders.progress import store_progress
from prefdelta.builders.prompt_length import refuse_long_prompts
from prefdelta.builders.prompts import Prompt, load_prompts
from prefdelta.builders.runtime import (
    BuildInterrupted,
    pipeline_scratch,
    run_pipeline,
    workers_die_with_their_parent,
)
from prefdelta.builders.store import ResultStore, repair_store
from prefdelta.builders.summary import build_summary, print_summary, token_usage
from prefdelta.errors import PrefdeltaError
from prefdelta.files import atomic_write
from prefdelta.recipe import (
    BuildRecipe,
    GenerationParams,
    ModelEndpoint,
    PairingConfig,
    request_timeout_s,
)
from prefdelta.schema import (
    HASHED_FILES,
    LOGS,
    PAIRS_FILE,
    RECIPE_FILE,
    STORE,
    SUMMARY,
    TRACES_FILE,
    pairs_schema,
    traces_schema,
)


class BuildIncomplete(PrefdeltaError, RuntimeError):
    """Some model calls failed; what finished is kept, and a rerun retries the rest."""


class OutputDirError(PrefdeltaError, ValueError):
    """The build folder is a file, or a folder of someone else's files."""


def claim_build_dir(out: Path) -> None:
    """Refuse a build folder that would overwrite what is not a build's: a file, or a
    non-empty folder without a build's store (a build writes ``store.sqlite`` first)."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"build folder {out} is a file; choose a folder (-o/--output-dir)")
    if out.is_dir() and not (out / STORE).is_file():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in (".lock", LOGS))
        if foreign:
            shown = ", ".join(foreign[:3]) + (
                f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            )
            raise OutputDirError(
                f"refusing to build into {out}: it holds files that are not a prefdelta build "
                f"({shown}); choose an empty or new folder (-o/--output-dir)"
            )


@dataclass(frozen=True)
class PlannedTrace:
    prompt: Prompt
    generator: str
    sample: int
    key: str
    given: dict[str, Any] | None = None  # a dataset generator's trace, as read


def plan_traces(recipe: BuildRecipe, prompts: Sequence[Prompt]) -> list[PlannedTrace]:
    """Every trace the recipe asks for, each with the store key its generation has (a
    dataset generator's: from what its columns hold)."""
    given, _ = read_given(recipe, prompts)
    planned = []
    for p in prompts:
        for name in recipe.pairing.generator_names:
            g = recipe.generators[name]
            if is_given(g):
                s = 0
                while (record := given.get((name, p.prompt_id, s))) is not None:
                    key = given_key(g, p.prompt, s, record)
                    planned.append(PlannedTrace(p, name, s, key, record))
                    s += 1
                continue
            for s in range(g.samples_per_prompt):
                planned.append(PlannedTrace(p, name, s, trace_key(g, p.prompt, s)))
    return planned


@dataclass(frozen=True)
class StoredWork:
    """How much of a planned build its store already holds (what a rerun will not redo)."""

    generations: dict[str, tuple[int, int]]  # generator -> (stored, planned)
    judgments: tuple[int, int]  # (stored, judgments the stored traces need)


def stored_work(recipe: BuildRecipe, out: Path, prompts: Sequence[Prompt]) -> StoredWork | None:
    """The work ``out``'s store already holds for this recipe's ``prompts``, counted by the
    same keys the build looks up; None without a store."""
    if not (out / STORE).is_file():
        return None
    planned = plan_traces(recipe, prompts)
    store = ResultStore(out / STORE)
    store.check()  # counts read from a damaged store would be wrong, not just short
    generations = store.get_many("generation", [t.key for t in planned])
    generations |= {t.key: t.given for t in planned if t.given is not None}  # read, not made
    per: dict[str, tuple[int, int]] = {}
    for t in planned:
        if t.given is not None:
            continue
        done, total = per.get(t.generator, (0, 0))
        per[t.generator] = (done + (t.key in generations), total + 1)
    fingerprint = JudgeSpec.resolve(recipe.judge, recipe.base_dir).fingerprint
    jkeys = [
        judgment_key(fingerprint, t.prompt.prompt, generations[t.key]["trace"])
        for t in planned
        if t.key in generations
    ]
    return StoredWork(per, (store.count("judgment", jkeys), len(jkeys)))


def build_dir_for(recipe: BuildRecipe, output_dir: str | Path | None = None) -> Path:
    return Path(output_dir or recipe.output_dir or Path("builds") / recipe.name)


def run_build(
    recipe: BuildRecipe,
    output_dir: str | Path | None = None,
    console: Console | None = None,
    *,
    repair: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a build; return its summary. Raises BuildIncomplete on failed calls,
    and BuildInterrupted on Ctrl-C: the answers already in are stored, and no later stage
    (judging, tables) runs, so nothing is reported failed that was only cut short.

    ``repair``: first copy the readable rows of a damaged store into a fresh one (see
    :func:`prefdelta.builders.store.repair_store`); the build then redoes only the rest.

    From Python, call it before this process runs any torch computation (``prefdelta
    build`` always does): distilabel forks its step workers, and on Linux a worker forked
    after torch's OpenMP thread pool has started hangs at its first op. Run the build in a
    subprocess otherwise (as ``bench/build_overhead.py`` does).
    """
    console = console or Console(stderr=True)
    workers_die_with_their_parent()
    out = build_dir_for(recipe, output_dir)
    claim_build_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    with _build_lock(out):
        if repair and (out / STORE).is_file():
            report = repair_store(out / STORE)
            said = "nothing to repair" if report is None else f"repaired: {report.describe()}"
            console.print(f"{out / STORE}: {said}", markup=False, highlight=False)
        try:
            return _run_build(recipe, out, console)
        except KeyboardInterrupt:  # Ctrl-C between the pipelines (theirs is handled there)
            raise BuildInterrupted from None


@contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """One build at a time per folder: a second one stops at once and says who holds it.

    ``flock`` on ``.lock`` in the folder: the kernel drops it when the holder dies, however
    it dies, so a killed build never leaves the folder locked.
    """
    import fcntl

    path = out / ".lock"
    with path.open("a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise OutputDirError(
                f"another build is running in {out} (pid {holder}); wait for it to finish, "
                "or build into another folder (-o)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_build(recipe: BuildRecipe, out: Path, console: Console) -> dict[str, Any]:
    started = time.monotonic()
    (out / SUMMARY).unlink(missing_ok=True)  # the folder is not a finished build until the end
    store_path = out / STORE
    store = ResultStore(store_path)
    store.check()  # a damaged store is found before any call is made

    prompts, duplicates = load_prompts(recipe.prompts, recipe.base_dir, given_columns(recipe))
    names = recipe.pairing.generator_names
    prompts, refused = refuse_long_prompts(
        prompts, {n: recipe.generators[n] for n in names}, recipe.prompts, recipe.base_dir
    )
    for r in refused:
        console.print(f"[yellow]refused[/] {r.describe()}", soft_wrap=True)
    planned = plan_traces(recipe, prompts)
    # the judge's template is read here, once: keys, prompts and summary share its text
    spec = JudgeSpec.resolve(recipe.judge, recipe.base_dir)
    fingerprint = spec.fingerprint

    # ---- generation: a dataset generator's traces are stored as read, the others generated
    store.put_many("generation", {t.key: t.given for t in planned if t.given is not None})
    called = [t for t in planned if t.given is None]
    gen_reused = store.count("generation", [t.key for t in called])
    todo = sorted({t.generator for t in called} - _complete_generators(store, called))
    by_generator: dict[str, list[str]] = {}
    for t in called:
        by_generator.setdefault(f"generate {t.generator}", []).append(t.key)
    notes = {
        f"generate {name}": _waiting_note(
            recipe.generators[name], recipe.generators[name].generation
        )
        for name in {t.generator for t in called}
    }
    with store_progress(console, "generation", by_generator, store, notes=notes):
        if todo:
            rows = [{"prompt_id": p.prompt_id, "prompt": p.prompt} for p in prompts]
            with pipeline_scratch(recipe.ray) as scratch:
                run_pipeline(generation_pipeline(recipe, rows, todo, store_path, scratch))
    generations = store.get_many("generation", [t.key for t in planned])
    missing = [t for t in planned if t.key not in generations]
    generated = [t for t in planned if t.key in generations]
    # an empty answer is kept and counted, but there is nothing in it to judge or to pair
    empty = [t for t in generated if not generations[t.key]["trace"].strip()]
    judgeable = [t for t in generated if generations[t.key]["trace"].strip()]

    # ---- judging: every trace with text; a failed or empty generation is not judged
    jkeys = {
        t.key: judgment_key(fingerprint, t.prompt.prompt, generations[t.key]["trace"])
        for t in judgeable
    }
    judged_before = store.existing("judgment", jkeys.values())
    judge_reused = len(judged_before)
    judge_note = {"judge": _waiting_note(recipe.judge, recipe.judge.generation)}
    with store_progress(
        console, "judgment", {"judge": list(jkeys.values())}, store, notes=judge_note
    ):
        # longest first: batches of like lengths pad least (and on a GPU, memory runs out
        # on the first batch or not at all); the judge reads each text from the store
        todo_judge = [t for t in judgeable if jkeys[t.key] not in judged_before]
        todo_judge.sort(
            key=lambda t: len(t.prompt.prompt) + len(generations[t.key]["trace"]), reverse=True
        )
        traces_in = [
            {"prompt_id": t.prompt.prompt_id, "prompt": t.prompt.prompt, "trace_key": t.key}
            for t in todo_judge
        ]
        if traces_in:
            with pipeline_scratch(recipe.ray) as scratch:
                run_pipeline(judge_pipeline(recipe, spec, traces_in, store_path, scratch))
    judgments = store.get_many("judgment", jkeys.values())
    unjudged = [t for t in judgeable if jkeys[t.key] not in judgments]

    # ---- tables: every stored answer is read again, so a fix to reading reaches a rebuild;
    # what failed for good is a row marked failed, never a row left out
    reader = spec.reader
    gen_errors = store.get_many("failure", [t.key for t in missing])
    judge_errors = store.get_many("failure", [jkeys[t.key] for t in unjudged])
    traces = []
    verdicts = []  # (generator, read trace, math-verify's verdict) for the given summary
    for t in planned:
        if t.key not in generations:
            error = (gen_errors.get(t.key) or {}).get("error") or "the call returned no trace"
            gen = {"trace": "", "finish_reason": "error", "output_tokens": 0}
            judged = _failed(reader, f"not judged: the generation failed: {error}")
        elif t.key not in jkeys:
            gen, judged = generations[t.key], _empty_trace(reader)
        elif jkeys[t.key] not in judgments:
            error = (judge_errors.get(jkeys[t.key]) or {}).get("error") or "no answer"
            gen, judged = generations[t.key], _failed(reader, error)
        else:
            gen = generations[t.key]
            judged = reader.outputs(judgments[jkeys[t.key]]["judge_answers"])
        correct, computed = correctness(gen, t.prompt.reference)
        if t.given is not None:
            verdicts.append((t.generator, gen, computed))
        traces.append(_trace_row(recipe, t, gen, judged, correct))
    dims = recipe.judge.dimension_names
    means = generator_means(traces, dims, recipe.delta)
    gen_pairs = _generator_pairs(recipe.pairing)
    gaps = {pair: generator_gap(means, *pair) for pair in gen_pairs}
    report = make_pairs(traces, recipe, gaps)  # of the traces with text only

    _write_parquet(out / TRACES_FILE, traces, traces_schema(dims))
    _write_parquet(out / PAIRS_FILE, report.pairs, pairs_schema(dims))
    (out / RECIPE_FILE).write_text(recipe.source_text, encoding="utf-8")
    summary = build_summary(recipe, prompts, duplicates, traces, report, gaps, means)
    summary["refused_prompts"] = [asdict(r) for r in refused]
    stored: dict[str, list[dict[str, Any]]] = {
        n: [] for n in names if not is_given(recipe.generators[n])
    }
    for t in generated:
        if t.given is None:  # a read trace took no tokens of ours
            stored[t.generator].append(generations[t.key])
    summary["tokens"] = token_usage(stored, judgments.values())
    # what produced judge_raw: the template's hash is part of every judgment's key too
    summary["judge_template_sha256"] = spec.template_sha256
    summary["failed"] = {
        "generations": len(missing),
        "judgments": len(unjudged),
        "by_generator": dict(Counter(t.generator for t in missing)),
    }
    summary["empty_traces"] = dict(Counter(t.generator for t in empty))
    summary["given_traces"] = given_summary(recipe, verdicts, read_given(recipe, prompts)[1])
    summary["reused"] = {
        "generations": gen_reused,
        "generated": sum(t.given is None for t in generated) - gen_reused,
        "judgments": judge_reused,
        "judged": len(set(jkeys.values())) - judge_reused - len({jkeys[t.key] for t in unjudged}),
    }
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["files"] = {
        name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in HASHED_FILES
    }
    atomic_write(out / SUMMARY, json.dumps(summary, indent=2).encode())
    print_summary(summary, console)
    if missing or unjudged:
        problems = []
        if missing:
            problems.append(
                f"{len(missing)} of {len(planned)} generations failed "
                f"({_by_generator(missing)}){_first_errors(gen_errors, missing)}"
            )
        if unjudged:
            first = next((e["error"] for e in judge_errors.values()), None)
            problems.append(
                f"the judge call failed for {len(unjudged)} of {len(generated)} traces"
                + (f" (first error: {first[:300]})" if first else "")
            )
        raise BuildIncomplete(
            "; ".join(problems) + f". The tables in {out} are written with those rows marked "
            "failed (judge_status failed); rerun to retry them (finished work is kept)"
        )
    return summary


# --------------------------------------------------------------------------- helpers


def _complete_generators(store: ResultStore, planned: list[PlannedTrace]) -> set[str]:
    done = store.existing("generation", [t.key for t in planned])
    names = {t.generator for t in planned}
    return {n for n in names if all(t.key in done for t in planned if t.generator == n)}


def _first_errors(errors: dict[str, dict[str, Any]], missing: list[PlannedTrace]) -> str:
    """``; <generator>: <its first error>`` for each generator whose calls raised
    (``errors``: the store's failure rows of ``missing``)."""
    first: dict[str, str] = {}
    for t in missing:
        if t.key in errors:
            first.setdefault(t.generator, errors[t.key]["error"])
    return "".join(f"; {name}: {error[:300]}" for name, error in first.items())


def _by_generator(traces: list[PlannedTrace]) -> str:
    counts = Counter(t.generator for t in traces)
    return ", ".join(f"{g}: {n}" for g, n in sorted(counts.items()))


def _failed(reader: AnswerReader, error: str) -> dict[str, Any]:
    """The judge columns of a trace whose judgment failed for good (status ``failed``)."""
    return reader.outputs([[{"text": None, "tokens": None, "error": error}]])


def _waiting_note(endpoint: ModelEndpoint, generation: GenerationParams) -> str:
    """What a heartbeat says of a model's requests: how long each may wait (API backends)."""
    if not is_api(endpoint.backend):
        return ""
    timeout = request_timeout_s(endpoint, generation)
    retries = (
        f", retried up to {endpoint.request_retries} times" if endpoint.backend == "openai" else ""
    )
    return f"a request may wait {timeout} s{retries}; recipe: request_timeout"


def _empty_trace(reader: AnswerReader) -> dict[str, Any]:
    """The judge columns of a trace the generator answered with no text: never sent to
    the judge (status ``empty_trace``, no attempt)."""
    return reader.outputs([]) | {
        "judge_status": EMPTY_TRACE,
        "judge_problem": "not judged: the generator answered no text",
    }


def _generator_pairs(pairing: PairingConfig) -> list[tuple[str, str]]:
    if pairing.strategy == "generators":
        return [(pairing.chosen or "", r) for r in pairing.rejected]
    return [(a, b) for a in pairing.pool for b in pairing.pool]


def _trace_row(
    recipe: BuildRecipe,
    t: PlannedTrace,
    gen: dict[str, Any],
    judged: dict[str, Any],
    correct: bool | None,
) -> dict[str, Any]:
    dims = recipe.judge.dimension_names
    ok = judged["judge_status"] == "ok"
    scores = {d: (float(judged["scores"][d]) if ok else None) for d in dims}
    return {
        "trace_key": t.key,
        "prompt_id": t.prompt.prompt_id,
        "prompt": t.prompt.prompt,
        "reference": t.prompt.reference,
        "generator": t.generator,
        "model": recipe.generators[t.generator].model,
        "sample": t.sample,
        "trace": gen["trace"],
        "finish_reason": gen["finish_reason"],
        "output_tokens": gen["output_tokens"],
        "correct": correct,
        "scores": scores,
        "aggregate": aggregate(scores, dims, recipe.delta) if ok else None,
        "score_spread": {d: (judged["score_spread"] or {}).get(d) for d in dims},
        "score_kind": judged.get("score_kind"),
        "score_probs": {d: (judged.get("score_probs") or {}).get(d) for d in dims},
        "score_fallback": judged.get("score_fallback"),
        "rationales": {d: (judged["rationales"] or {}).get(d) for d in dims},
        "judge_status": judged["judge_status"],
        "judge_problem": judged.get("judge_problem"),
        "judge_raw": list(judged["judge_raw"]),
        "judge_attempts": int(judged["judge_attempts"]),
        "judge_model": recipe.judge.model,
    }


def _write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        os.replace(tmp, path)
    except BaseException:  # a full disk leaves no half-written table behind
        tmp.unlink(missing_ok=True)
        raise
