"""``prefdelta sweep CONFIG.yaml``: the paper's three experiments as one command.

(a) **Sample-level delta**: for each k, train on the top k% of pairs by one dimension's
delta and on a random k% (one run per seed); the paper found the top ~30% by step
coherence matched training on all pairs. (b) **Generator-level delta**: one run per
generator pair (chosen:rejected), its gain related to the pair's measured
``generator_delta``: the paper found gains grow about linearly with it. (c)
**Correctness directions**: one run per verifier-correctness direction (both right,
wrong->right, right->wrong, both wrong), all of one size; the paper found every direction
beat the base model.

Every run starts from the same training config (a ``prefdelta train`` YAML); the sweep
only sets the selection keys (:data:`~prefdelta.train.sweep.config.SELECTION_KEYS`) and
``output_dir``, and writes each run's full config to ``runs/<name>/train.yaml`` so any
run can be repeated alone (or launched with ``accelerate launch -m prefdelta.train.dpo
runs/<name>/train.yaml`` on more GPUs). Runs share the reference log-prob cache, so the
reference pass happens once for the sweep. Runs train inside this process one after
another, or, with the config's ``launch:``, each as its own process (the script, or the
script under ``accelerate launch``), one per device side by side, a crashed run retried
alone (:mod:`prefdelta.train.sweep.launch`).

Each trained model and the untrained base model then answer every eval set with the same
decoding (:mod:`prefdelta.train.sweep.evaluate`), and every accuracy and difference comes with
a 95% interval (:mod:`prefdelta.stats`). Results: ``results.csv`` (one row
per run and eval set), ``results.md`` and a figure per experiment. A finished run (same
selection) is not trained again, nor a model's eval set answered again, when the sweep
is rerun.

The config schema is :mod:`prefdelta.train.sweep.config`, the planning
:mod:`prefdelta.train.sweep.plan`, the result cache, comparisons and report
:mod:`prefdelta.train.sweep.results`, the figures :mod:`prefdelta.train.sweep.plots`;
this module runs the plan, each run through the trainer registry of
:mod:`prefdelta.train.run` (as ``prefdelta train`` does).
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from prefdelta.train.configs import read_config, resolve_model
from prefdelta.train.run import REGISTRY, TrainerKind, run_script
from prefdelta.train.sweep.analysis import RunResult
from prefdelta.train.sweep.config import (
    SELECTION_KEYS,
    EvalSet,
    SweepConfig,
    SweepError,
    load_sweep,
)
from prefdelta.train.sweep.evaluate import (
    EvalPrompt,
    eval_prompts,
    evaluate_model,
    merged_for_eval,
    read_pairs_columns,
    training_prompt_ids,
)
from prefdelta.train.sweep.plan import (
    RunSpec,
    correctness_runs,
    direction_counts,
    drop_unrankable,
    generator_gaps,
    plan_runs,
)
from prefdelta.train.sweep.plots import figure_names
from prefdelta.train.sweep.results import (
    cache_answers,
    read_cached_result,
    write_cached_result,
    write_results,
)

# --------------------------------------------------------------------------- running


def _hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def run_sweep(path: str | Path, *, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Plan, train, evaluate; write results.csv, results.md and a figure per experiment;
    return the rows (one per run and eval set)."""
    from prefdelta.loading import PairsLoadError, delta_column
    from prefdelta.train.configs import TrainConfigError
    from prefdelta.train.data import dataset_source, pairs_column_names

    config, train_path = load_sweep(path)
    base_dir = Path(path).parent
    base = read_config(train_path)
    base.update(config.overrides)
    # an unknown `trainer:` (a list even) gets DPO's data arguments, which refuse it by name
    trainer = REGISTRY.get(str(base.get("trainer") or "dpo"), REGISTRY["dpo"])
    out = Path(config.output_dir or Path("outputs") / "sweeps" / config.name)
    claim_output_dir(out, config.name)
    (out / "sweep.yaml").write_text(Path(path).read_text(encoding="utf-8"), encoding="utf-8")

    if "dataset" not in base:
        raise SweepError([f"{train_path}: dataset: required"])
    try:
        source = dataset_source(str(base["dataset"]), base.get("revision"))
        present = pairs_column_names(source, base.get("split", "train"))
    except TrainConfigError as exc:
        raise SweepError([str(exc)]) from None
    split = base.get("split", "train")
    dimension = config.delta.dimension if config.delta else base.get("dimension", "delta")
    wanted = ["chosen_generator", "rejected_generator"]
    wanted += [c for c in ("generator_delta", "generator_accuracy_delta") if c in present]
    column: str | None = None
    if config.delta is not None:
        # the same name resolution as load_pairs; an unknown dimension is left to the
        # runs' own load, which lists the delta columns
        with suppress(PairsLoadError):
            column = delta_column(dimension, present)
            wanted.append(column)
    if config.correctness is not None:
        missing = [c for c in ("chosen_correct", "rejected_correct") if c not in present]
        if missing:
            raise SweepError(
                [
                    f"correctness: {source.display} has no {missing[0]} column: its build "
                    "checked no answers (set prompts.reference_column in the build recipe)"
                ]
            )
        wanted += ["chosen_correct", "rejected_correct"]
    values = read_pairs_columns(source, split, wanted)
    pairs = zip(values["chosen_generator"], values["rejected_generator"], strict=True)
    runs = plan_runs(config, sorted({f"{c}:{r}" for c, r in pairs}))
    notes: list[str] = []
    if column is not None:
        runs, note = drop_unrankable(runs, column, values[column])
        notes += [note] if note else []
    if config.correctness is not None:
        counts = direction_counts(values["chosen_correct"], values["rejected_correct"])
        extra, skipped = correctness_runs(config.correctness, counts)
        runs += extra
        notes += skipped
    for note in notes:
        log(note)
    gaps = generator_gaps(values)
    exclude = training_prompt_ids(source, split) if config.eval.exclude_training_prompts else set()
    sets = [(s, eval_prompts(config.eval, s, base_dir, source, exclude)) for s in config.eval.sets]
    decoding = config.eval.model_dump(mode="json", exclude={"sets", "bootstrap_seed", "limit"})
    set_keys = {
        s.name: _hash(decoding, s.model_dump(mode="json"), [asdict(p) for p in prompts])
        for s, prompts in sets
    }
    sizes = ", ".join(f"{s.name} {len(p)}" for s, p in sets)
    log(f"sweep {config.name}: {len(runs)} runs + the base model; eval prompts: {sizes} -> {out}")

    evaluator = _Evaluator(config, sets, set_keys, base_dir, log)
    model = resolve_model(str(base.get("model_name_or_path", "")))
    results: list[RunResult] = [
        RunResult(
            {**BASE_META, "pairs": 0, "train_loss": None, "model_dir": model},
            evaluator.run("base model", out / "base", _hash(model), lambda: model),
        )
    ]
    # plan: each run's config and selection; runs that select the same pairs train once
    planned: list[tuple[str, Path, str, dict[str, Any], str | None]] = []
    first: dict[str, str] = {}  # selection hash -> the run that trains on it
    infos: dict[str, dict[str, Any]] = {}  # selection hash -> what its training left
    todo: list[tuple[str, Path, dict[str, Any], str]] = []
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}] {run.name}"
        run_dir = out / "runs" / run.name
        # None resets a selection key the base config may set (e.g. its own top_fraction)
        run_cfg = {**base, **run.keys(dimension), "output_dir": str(run_dir)}
        run_cfg = {k: v for k, v in run_cfg.items() if v is not None}
        selection = _selection_hash(trainer, run_cfg, tag)
        meta = {**run.meta(), **_gap_columns(run, gaps)}
        planned.append((tag, run_dir, selection, meta, first.get(selection)))
        if selection in first:
            continue
        first[selection] = run.name
        info = read_cached_result(run_dir / TRAINED, selection)
        if info is not None:
            log(f"{tag}: trained before, reused")
            infos[selection] = info
        else:
            todo.append((tag, run_dir, run_cfg, selection))
    _train(todo, trainer, config, base_dir, infos, log)

    trained: dict[str, RunResult] = {}  # selection hash -> the run that trained on it
    for tag, run_dir, selection, meta, same in planned:
        if same is not None:  # e.g. the only generator pair is all pairs: train once
            log(f"{tag}: same pairs as {same}, result reused")
            results.append(RunResult({**trained[selection].info, **meta}, trained[selection].evals))
            continue
        info = infos[selection]
        evals = evaluator.run(
            tag, run_dir, selection, lambda d=run_dir: str(merged_for_eval(d, log))
        )
        done = RunResult({**meta, **info}, evals)
        results.append(done)
        trained[selection] = done
    rows = write_results(results, out, config, dimension, notes)
    figures = ", ".join(str(out / f) for f in figure_names(rows))
    log(f"results: {out / 'results.md'}, {out / 'results.csv'}, {figures}")
    return rows


SWEEP_MARKER = ".prefdelta-sweep.json"


def claim_output_dir(out: Path, name: str) -> None:
    """Make ``out`` a sweep's folder, or refuse: a sweep rewrites results.csv, results.md,
    its figures and runs/ there, so a non-empty folder it did not make is never written to.

    A folder a sweep made carries :data:`SWEEP_MARKER` (written on its first run), so a
    rerun resumes there, skipping what is finished.
    """
    marker = out / SWEEP_MARKER
    if out.exists() and not out.is_dir():
        raise SweepError([f"output_dir: {out} is a file; name a folder for the sweep"])
    if out.is_dir() and not marker.is_file() and any(out.iterdir()):
        raise SweepError(
            [
                f"output_dir: {out} is not empty and no sweep wrote it (no {SWEEP_MARKER}); "
                "name a new or empty folder, so none of its files are replaced"
            ]
        )
    out.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        marker.write_text(json.dumps({"sweep": name}) + "\n", encoding="utf-8")


def _train(
    todo: list[tuple[str, Path, dict[str, Any], str]],
    trainer: TrainerKind,
    config: SweepConfig,
    base_dir: Path,
    infos: dict[str, dict[str, Any]],
    log: Callable[[str], None],
) -> None:
    """Train the runs not trained before: in this process one after another, or (with
    ``launch:``) each as its own process, side by side. Each run's ``trained.json`` is
    written as it finishes, so a rerun after a failure trains only what is missing."""
    from prefdelta.train.sweep.launch import Job, train_jobs

    module = trainer.script().__name__  # what `python -m` / `accelerate launch -m` runs
    selections: dict[Path, str] = {}
    jobs: list[Job] = []
    for tag, run_dir, run_cfg, selection in todo:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_file = run_dir / "train.yaml"
        cfg_file.write_text(yaml.safe_dump(run_cfg, sort_keys=False), encoding="utf-8")
        selections[run_dir] = selection
        jobs.append(Job(tag, run_dir, cfg_file, module))

    def done(job: Job, record: dict[str, Any]) -> None:
        loss = record.get("train_loss")
        info = {
            "pairs": record["counts"].get("pairs_selected"),
            "train_loss": None if loss is None else round(float(loss), 4),
            "model_dir": str(job.run_dir),
        }
        write_cached_result(job.run_dir / TRAINED, selections[job.run_dir], info)
        infos[selections[job.run_dir]] = info

    if config.launch is not None:
        train_jobs(jobs, config.launch, base_dir, log, done)
        return
    for job in jobs:
        log(f"{job.tag}: training")
        result = run_script(trainer, [str(job.config_file)])
        _release_memory()
        done(job, {"counts": result.counts, "train_loss": result.train_loss})


BASE_META: dict[str, Any] = {
    "run": "base",
    "experiment": "base",
    "selection": "none",
    "fraction": 0.0,
    "seed": None,
    "generator_pair": None,
    "correctness": None,
}
TRAINED = "trained.json"


def _gap_columns(run: RunSpec, gaps: dict[str, tuple[float | None, float | None]]) -> dict:
    score, accuracy = gaps.get(run.generator_pair or "", (None, None))
    return {"generator_delta": score, "generator_accuracy_delta": accuracy}


class _Evaluator:
    """Each model answers every eval set once; a set answered before is read back."""

    def __init__(
        self,
        config: SweepConfig,
        sets: list[tuple[EvalSet, list[EvalPrompt]]],
        set_keys: dict[str, str],
        base_dir: Path,
        log: Callable[[str], None],
    ) -> None:
        self.config, self.sets, self.set_keys = config, sets, set_keys
        self.base_dir, self.log = base_dir, log

    def run(
        self, tag: str, folder: Path, model_key: str, model_dir: Callable[[], str]
    ) -> dict[str, dict[str, Any]]:
        """Per set: accuracy, correct, n_eval and the per-prompt outcomes."""
        found: dict[str, dict[str, Any]] = {}
        todo = []
        keys = {s.name: _hash(model_key, self.set_keys[s.name]) for s, _ in self.sets}
        for s, prompts in self.sets:
            cached = read_cached_result(folder / "eval" / s.name / "result.json", keys[s.name])
            if cached is None:
                todo.append((s, prompts))
            else:
                found[s.name] = cached
        if todo:
            n = sum(len(p) for _, p in todo)
            self.log(f"{tag}: answering {n} eval prompts ({', '.join(s.name for s, _ in todo)})")
            answered = evaluate_model(model_dir(), self.config.eval, todo, self.base_dir)
            _release_memory()
            for s, _ in todo:
                ev = answered[s.name]
                result = {
                    "accuracy": round(ev["accuracy"], 4),
                    "correct": ev["correct"],
                    "n_eval": ev["n_eval"],
                    "outcomes": [bool(a["correct"]) for a in ev["answers"]],
                }
                cache_answers(folder / "eval" / s.name, keys[s.name], result, ev["answers"])
                found[s.name] = result
        accuracies = ", ".join(f"{s.name} {found[s.name]['accuracy']:.3f}" for s, _ in self.sets)
        self.log(f"{tag}: accuracy {accuracies}" + ("" if todo else " (answered before)"))
        return found


def _selection_hash(trainer: TrainerKind, run_cfg: dict[str, Any], tag: str) -> str:
    """Names what a run would train on: its selected examples and every non-selection key."""
    import dataclasses

    from prefdelta.train.configs import TrainConfigError

    data_type = trainer.data_arguments
    names = {f.name for f in dataclasses.fields(data_type)}
    try:
        args = data_type(**{k: v for k, v in run_cfg.items() if k in names})
        ids = trainer.selected_ids(args, run_cfg)
    except TrainConfigError as exc:
        raise SweepError([f"{tag}: {exc}"]) from None
    rest = {k: v for k, v in run_cfg.items() if k not in (*SELECTION_KEYS, "output_dir")}
    return _hash(ids, rest)
