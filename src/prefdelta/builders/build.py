"""``prefdelta build``: recipe -> traces -> judgments -> pairs and deltas, in a build folder.

The build folder holds ``store.sqlite`` (every finished model call), and once a build is
complete: ``traces.parquet``, ``pairs.parquet``, ``recipe.yaml`` and ``summary.json``.
``summary.json`` is written last and names the hashes of the tables, so a folder without
it, or with tables that do not match it, is never taken for a finished build.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from prefdelta.builders.build_folder import build_lock, claim_build_dir
from prefdelta.builders.columns import label_pairs
from prefdelta.builders.deltas import aggregate, generator_gap, generator_means
from prefdelta.builders.given import (
    correctness,
    given_key,
    given_summary,
    is_given,
    load_build_prompts,
    read_given,
)
from prefdelta.builders.judge.spec import panel_specs
from prefdelta.builders.judge_input import JudgeInput, reads_summary
from prefdelta.builders.judging import ToJudge, judge_traces, waiting_note
from prefdelta.builders.keys import trace_keyer
from prefdelta.builders.pairs import PairingReport, make_pairs
from prefdelta.builders.panel import JUDGE_COLUMNS, panel_names
from prefdelta.builders.pipelines import generation_pipeline
from prefdelta.builders.progress import store_progress
from prefdelta.builders.prompt_length import refuse_long_prompts
from prefdelta.builders.prompts import Prompt
from prefdelta.builders.runtime import (
    BuildInterrupted,
    frozen_heap,
    pipeline_scratch,
    run_pipeline,
    workers_die_with_their_parent,
)
from prefdelta.builders.store import ResultStore, repair_store
from prefdelta.builders.summary import TokenUsage, build_summary, print_summary
from prefdelta.builders.tables import PAIR_TEXTS, TableFiles, light, prompt_chunks, trace_texts
from prefdelta.errors import PrefdeltaError
from prefdelta.files import atomic_write
from prefdelta.recipe import (
    BuildRecipe,
)
from prefdelta.schema import (
    HASHED_FILES,
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
    names = recipe.pairing.generator_names
    keyers = {n: trace_keyer(recipe.generators[n]) for n in names}
    planned = []
    for p in prompts:
        for name in names:
            g = recipe.generators[name]
            if is_given(g):
                s = 0
                while (record := given.get((name, p.prompt_id, s))) is not None:
                    key = given_key(g, p.prompt, s, record)
                    planned.append(PlannedTrace(p, name, s, key, record))
                    s += 1
                continue
            for s in range(g.samples_per_prompt):
                planned.append(PlannedTrace(p, name, s, keyers[name](p.prompt, s)))
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
    inputs = [
        JudgeInput(s, recipe.base_dir) for s in panel_specs(recipe.judge, recipe.base_dir).values()
    ]
    per: dict[str, tuple[int, int]] = {}
    stored, needed = 0, 0
    for chunk, generations in _stored_chunks(store, planned):
        generations |= {t.key: t.given for t in chunk if t.given is not None}  # read, not made
        for t in chunk:
            if t.given is None:
                done, total = per.get(t.generator, (0, 0))
                per[t.generator] = (done + (t.key in generations), total + 1)
        jkeys = []
        for judge_input in inputs:
            for t in chunk:
                if t.key in generations:
                    trace = generations[t.key]["trace"]
                    _, key = judge_input.judged(t.prompt.prompt, trace, t.prompt.reference)
                    if key is not None:
                        jkeys.append(key)
        stored, needed = stored + store.count("judgment", jkeys), needed + len(jkeys)
    return StoredWork(per, (stored, needed))


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
    with build_lock(out):
        if repair and (out / STORE).is_file():
            report = repair_store(out / STORE)
            said = "nothing to repair" if report is None else f"repaired: {report.describe()}"
            console.print(f"{out / STORE}: {said}", markup=False, highlight=False)
        try:
            with frozen_heap():  # what the build holds all along is not walked by the collector
                return _run_build(recipe, out, console)
        except KeyboardInterrupt:  # Ctrl-C between the pipelines (theirs is handled there)
            raise BuildInterrupted from None


def _run_build(recipe: BuildRecipe, out: Path, console: Console) -> dict[str, Any]:
    started = time.monotonic()
    (out / SUMMARY).unlink(missing_ok=True)  # the folder is not a finished build until the end
    store_path = out / STORE
    store = ResultStore(store_path)
    store.check()  # a damaged store is found before any call is made

    prompts, duplicates = load_build_prompts(recipe)
    names = recipe.pairing.generator_names
    prompts, refused = refuse_long_prompts(
        prompts, {n: recipe.generators[n] for n in names}, recipe.prompts, recipe.base_dir
    )
    for r in refused:
        console.print(f"[yellow]refused[/] {r.describe()}", soft_wrap=True)
    planned = plan_traces(recipe, prompts)
    # the judges' templates are read here, once: keys, prompts and summary share their text;
    # what each reads of a trace is resolved here too, its tokenizer loaded before any call
    specs = panel_specs(recipe.judge, recipe.base_dir)
    inputs = {name: JudgeInput(spec, recipe.base_dir) for name, spec in specs.items()}

    # ---- generation: a dataset generator's traces are stored as read, the others generated
    store.put_many("generation", {t.key: t.given for t in planned if t.given is not None})
    called = [t for t in planned if t.given is None]
    gen_reused = store.count("generation", [t.key for t in called])
    todo = sorted({t.generator for t in called} - _complete_generators(store, called))
    by_generator: dict[str, list[str]] = {}
    for t in called:
        by_generator.setdefault(f"generate {t.generator}", []).append(t.key)
    notes = {
        f"generate {name}": waiting_note(
            recipe.generators[name], recipe.generators[name].generation
        )
        for name in {t.generator for t in called}
    }
    with store_progress(console, "generation", by_generator, store, notes=notes):
        if todo:
            rows = [{"prompt_id": p.prompt_id, "prompt": p.prompt} for p in prompts]
            with pipeline_scratch(recipe.ray) as scratch:
                run_pipeline(
                    generation_pipeline(recipe, rows, todo, store_path, scratch), store_path
                )
    stored = store.existing("generation", [t.key for t in planned])
    missing = [t for t in planned if t.key not in stored]
    generated = [t for t in planned if t.key in stored]
    # an empty answer is kept and counted, but there is nothing in it to judge or to pair
    empty: list[PlannedTrace] = []

    def judgeable_texts() -> Iterator[ToJudge]:  # read from the store a chunk at a time
        for chunk, generations in _stored_chunks(store, generated):
            for t in chunk:
                text = generations[t.key]["trace"]
                if text.strip():
                    yield ToJudge(t.key, t.prompt.prompt, text, t.prompt.reference)
                else:
                    empty.append(t)

    # ---- judging: every trace with text, by every judge, as much of it as each reads (a
    # trace too long for a judge is cut or refused); a failed or empty generation is not
    judges = judge_traces(recipe, inputs, judgeable_texts(), store, console)
    unjudged = {name: judges.unjudged(name) for name in specs}
    empty_keys = {t.key for t in empty}
    judgeable = [t for t in generated if t.key not in empty_keys]

    # ---- tables: every stored answer is read again, so a fix to reading reaches a rebuild;
    # what failed for good is a row marked failed, never a row left out. A chunk of prompts
    # at a time: only light rows (no texts) are kept for the summary
    gen_errors = store.get_many("failure", [t.key for t in missing])
    judgeable_keys = {t.key for t in judgeable}
    traces: list[dict[str, Any]] = []  # light rows
    verdicts = []  # (generator, read trace, math-verify's verdict) for the given summary
    tokens = TokenUsage(n for n in names if not is_given(recipe.generators[n]))
    counted: set[tuple[str, str]] = set()  # (judge, judgment key) whose tokens are added
    dims = recipe.judge.dimension_names
    labelled = recipe.pairing.strategy == "columns"
    texts = trace_texts(panel_names(recipe))
    schemas = {
        TRACES_FILE: traces_schema(dims, panel_names(recipe)),
        PAIRS_FILE: pairs_schema(dims, labelled=labelled),
    }
    with TableFiles(out, schemas) as tables:
        for chunk, generations in _stored_chunks(store, planned):
            judgments = judges.stored(t.key for t in chunk if t.key in judgeable_keys)
            for name, by_key in judgments.items():
                for key, judgment in by_key.items():
                    if (name, key) not in counted:  # a reused answer counts once
                        counted.add((name, key))
                        tokens.judgment(judgment)
            rows = []
            for t in chunk:
                if t.key not in generations:
                    error = (gen_errors.get(t.key) or {}).get("error")
                    why = error or "the call returned no trace"
                    gen = {"trace": "", "finish_reason": "error", "output_tokens": 0}
                    judged = judges.columns(
                        judgments, None, f"not judged: the generation failed: {why}"
                    )
                else:
                    gen = generations[t.key]
                    key = t.key if t.key in judgeable_keys else None
                    judged = judges.columns(judgments, key)
                    if t.given is None:  # a read trace took no tokens of ours
                        tokens.generation(t.generator, gen)
                correct, computed = correctness(gen, t.prompt.reference)
                if t.given is not None:
                    verdicts.append(
                        (t.generator, {"given_correct": gen.get("given_correct")}, computed)
                    )
                rows.append(_trace_row(recipe, t, gen, judged, correct))
            tables.write(TRACES_FILE, rows)
            traces += [light(r, texts) for r in rows]
        means = generator_means(traces, dims, recipe.delta)
        gaps = {pair: generator_gap(means, *pair) for pair in recipe.pairing.paired_generators}
        report = PairingReport()  # of the traces with text only (not columns)
        done = 0
        for chunk, generations in _stored_chunks(store, planned):
            rows = [
                row
                | {"prompt": t.prompt.prompt, "trace": generations.get(t.key, {}).get("trace", "")}
                for t, row in zip(chunk, traces[done : done + len(chunk)], strict=True)
            ]
            done += len(chunk)
            made = make_pairs(rows, recipe, gaps)
            if labelled:  # a preference dataset's pairs: its prompts, and whether the judge agrees
                label_pairs(made.pairs, [t.prompt for t in chunk])
            tables.write(PAIRS_FILE, made.pairs)
            made.pairs = [light(p, PAIR_TEXTS) for p in made.pairs]
            report.extend(made)
    (out / RECIPE_FILE).write_text(recipe.source_text, encoding="utf-8")
    summary = build_summary(recipe, prompts, duplicates, traces, report, gaps, means)
    summary["refused_prompts"] = [asdict(r) for r in refused]
    summary["tokens"] = tokens.summary()
    # what produced judge_raw: the template's hash is part of every judgment's key too
    summary["judge_template_sha256"] = next(iter(specs.values())).template_sha256
    if recipe.judge.panel is not None:
        summary["judge_templates_sha256"] = {n: s.template_sha256 for n, s in specs.items()}
    summary["failed"] = {
        "generations": len(missing),
        "judgments": sum(len(u) for u in unjudged.values()),
        "by_generator": dict(Counter(t.generator for t in missing)),
    }
    if recipe.judge.panel is not None:
        summary["failed"]["by_judge"] = {n: len(u) for n, u in unjudged.items()}
    summary["empty_traces"] = dict(Counter(t.generator for t in empty))
    read_by = {  # what each judge read of each trace: cut, refused, or an empty part
        name: reads_summary(
            inputs[name],
            ((t.generator, t.key, t.prompt.prompt_id, t.sample, by[t.key]) for t in judgeable),
        )
        for name, by in judges.reads.items()
    }
    summary["judge_reads"] = next(iter(read_by.values()))  # the judge block's own judge
    if recipe.judge.panel is not None:
        summary["judge_reads"] = summary["judge_reads"] | {"by_judge": read_by}
    summary["given_traces"] = given_summary(recipe, verdicts, read_given(recipe, prompts)[1])
    summary["reused"] = {
        "generations": gen_reused,
        "generated": sum(t.given is None for t in generated) - gen_reused,
        "judgments": judges.reused,
        "judged": sum(len(judges.done[n]) for n in specs) - judges.reused,
    }
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["files"] = {
        name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in HASHED_FILES
    }
    atomic_write(out / SUMMARY, json.dumps(summary, indent=2).encode())
    print_summary(summary, console)
    if missing or any(unjudged.values()):
        problems = []
        if missing:
            problems.append(
                f"{len(missing)} of {len(planned)} generations failed "
                f"({_by_generator(missing)}){_first_errors(gen_errors, missing)}"
            )
        for name, failed in unjudged.items():
            if not failed:
                continue
            first = next((e["error"] for e in judges.errors[name].values()), None)
            who = "judge" if name == "judge" else f"judge {name}"
            problems.append(
                f"the {who} call failed for {len(failed)} of {len(generated)} traces"
                + (f" (first error: {first[:300]})" if first else "")
            )
        raise BuildIncomplete(
            "; ".join(problems) + f". The tables in {out} are written with those rows marked "
            "failed (judge_status failed); rerun to retry them (finished work is kept)"
        )
    return summary


# --------------------------------------------------------------------------- helpers


def _stored_chunks(
    store: ResultStore, traces: Sequence[PlannedTrace]
) -> Iterator[tuple[list[PlannedTrace], dict[str, dict[str, Any]]]]:
    """``traces`` a chunk of prompts at a time, each chunk with its stored generations, so
    no more than a chunk's texts is held at once."""
    for chunk in prompt_chunks(traces, lambda t: t.prompt.prompt_id):
        yield chunk, store.get_many("generation", [t.key for t in chunk])


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
    per_judge = {f"{c}_{n}": judged[f"{c}_{n}"] for n in panel_names(recipe) for c in JUDGE_COLUMNS}
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
        "judge_reasoning": judged.get("judge_reasoning"),
        "judge_attempts": int(judged["judge_attempts"]),
        "judge_model": recipe.judge.model_label,
        **per_judge,
    }
