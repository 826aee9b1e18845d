"""``prefdelta sweep CONFIG.yaml``: the paper's two experiments as one command.

(a) **Sample-level delta**: for each k, train on the top k% of pairs by one dimension's
delta and on a random k% (one run per seed); the paper found the top ~30% by step
coherence matched training on all pairs. (b) **Generator-level delta**: one run per
generator pair (chosen:rejected), the stronger the gap the larger the gain.

Every run starts from the same training config (a ``prefdelta train`` YAML); the sweep
only sets the selection keys (``top_fraction``, ``random_fraction``, ``selection_seed``,
``dimension``, ``generator_pairs``) and ``output_dir``, and writes each run's full config
to ``runs/<name>/train.yaml`` so any run can be repeated alone (or launched with
``accelerate launch -m prefdelta.train.dpo runs/<name>/train.yaml`` on more GPUs). Runs
share the reference log-prob cache, so the reference pass happens once for the sweep.

Each trained model (and the base model) then answers held-out prompts with the build's
own backend machinery (:func:`~prefdelta.builders.generators.make_llm`: transformers or
vLLM on the run's output folder), and math-verify scores the answers against the
references. Results: ``results.csv``, ``results.md`` and ``results.png``. A finished run
(same config, same eval) is not trained or evaluated again when the sweep is rerun.

The config schema is :mod:`prefdelta.train.sweep_config`, the evaluation
:mod:`prefdelta.train.evaluate`, the result cache, table and plot
:mod:`prefdelta.train.sweep_results`; this module plans the runs and runs them, each
through the trainer registry of :mod:`prefdelta.train.run` (as ``prefdelta train`` does).
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from prefdelta.train.configs import read_config, resolve_model
from prefdelta.train.evaluate import (
    EvalPrompt,
    eval_prompts,
    evaluate_model,
    merged_for_eval,
    read_pairs_columns,
)
from prefdelta.train.run import REGISTRY, TrainerKind, run_script
from prefdelta.train.sweep_config import SELECTION_KEYS, SweepConfig, SweepError, load_sweep
from prefdelta.train.sweep_results import cache_result, read_cached_result, write_results

__all__ = ["RunSpec", "SweepError", "drop_unrankable", "load_sweep", "plan_runs", "run_sweep"]


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class RunSpec:
    """One training run of the sweep."""

    name: str
    experiment: str  # delta | generator_pair
    selection: str  # top | random | all | pair
    fraction: float | None = None
    seed: int | None = None
    generator_pair: str | None = None

    def keys(self, dimension: str) -> dict[str, Any]:
        """The selection keys this run sets (the others are reset to their defaults)."""
        out: dict[str, Any] = dict.fromkeys(SELECTION_KEYS)
        out["selection_seed"] = 0
        out["dimension"] = dimension
        if self.selection == "top":
            out["top_fraction"] = self.fraction
        elif self.selection == "random":
            out["random_fraction"] = self.fraction
            out["selection_seed"] = self.seed
        elif self.selection == "pair":
            out["generator_pairs"] = [self.generator_pair]
        return out


def plan_runs(config: SweepConfig, available_pairs: list[str]) -> list[RunSpec]:
    """Every run, once: k = 100% is one `all` run, shared by the top and random lines."""
    runs: list[RunSpec] = []
    if config.delta is not None:
        d = config.delta
        for k in d.fractions:
            pct = f"{100 * k:g}"
            if k >= 1.0:
                runs.append(RunSpec("all", "delta", "all", 1.0))
                continue
            runs.append(RunSpec(f"top{pct}-{d.dimension}", "delta", "top", k))
            for seed in d.random_seeds:
                runs.append(RunSpec(f"random{pct}-seed{seed}", "delta", "random", k, seed))
    if config.generator_pairs is not None:
        pairs = available_pairs if config.generator_pairs == "all" else config.generator_pairs
        for pair in pairs:
            if pair not in available_pairs:
                raise SweepError(
                    [
                        f"generator_pairs: {pair!r} is not in the dataset; "
                        f"present: {', '.join(available_pairs) or 'none'}"
                    ]
                )
            runs.append(
                RunSpec(
                    f"pair-{pair.replace(':', '-vs-')}",
                    "generator_pair",
                    "pair",
                    generator_pair=pair,
                )
            )
    return runs


def drop_unrankable(
    runs: list[RunSpec], column: str, values: list[Any]
) -> tuple[list[RunSpec], str | None]:
    """Without a single scored pair there is no top k%: those runs are dropped, and said so.

    The random k% and generator-pair runs still mean something (a build whose judge
    scored nothing still has its generator-level pairs), so the sweep goes on without them.
    """
    if any(v is not None for v in values):
        return runs, None
    kept = [r for r in runs if r.selection != "top"]
    dropped = len(runs) - len(kept)
    return kept, (
        f"skipping {dropped} top-k run(s): none of the {len(values)} pairs has a {column} "
        "(the judge scored no pair on both sides); random and generator-pair runs go ahead"
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
    """Plan, train, evaluate; write results.csv, results.md and results.png; return the rows."""
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
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.yaml").write_text(Path(path).read_text(encoding="utf-8"), encoding="utf-8")

    if "dataset" not in base:
        raise SweepError([f"{train_path}: dataset: required"])
    try:
        source = dataset_source(str(base["dataset"]), base.get("revision"))
    except TrainConfigError as exc:
        raise SweepError([str(exc)]) from None
    split = base.get("split", "train")
    dimension = config.delta.dimension if config.delta else base.get("dimension", "delta")
    wanted = ["chosen_generator", "rejected_generator"]
    column: str | None = None
    try:
        if config.delta is not None:
            # the same name resolution as load_pairs; an unknown dimension is left to the
            # runs' own load, which lists the delta columns
            with suppress(PairsLoadError):
                column = delta_column(dimension, pairs_column_names(source, split))
                wanted.append(column)
    except TrainConfigError as exc:
        raise SweepError([str(exc)]) from None
    values = read_pairs_columns(source, split, wanted)
    pairs = zip(values["chosen_generator"], values["rejected_generator"], strict=True)
    runs = plan_runs(config, sorted({f"{c}:{r}" for c, r in pairs}))
    notes: list[str] = []
    if column is not None:
        runs, note = drop_unrankable(runs, column, values[column])
        if note:
            log(note)
            notes.append(note)
    prompts = eval_prompts(config.eval, base_dir, source, split)
    eval_key = _hash(config.eval.model_dump(mode="json"), [asdict(p) for p in prompts])
    log(f"sweep {config.name}: {len(runs)} runs, {len(prompts)} held-out prompts -> {out}")

    rows: list[dict[str, Any]] = []
    if config.eval.include_base:
        model = resolve_model(str(base.get("model_name_or_path", "")))
        rows.append(_base_row(model, config, prompts, base_dir, out / "base", eval_key, log))
    trained: dict[str, dict[str, Any]] = {}  # selection hash -> the row of the run that has it
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}] {run.name}"
        run_dir = out / "runs" / run.name
        # None resets a selection key the base config may set (e.g. its own top_fraction)
        run_cfg = {**base, **run.keys(dimension), "output_dir": str(run_dir)}
        run_cfg = {k: v for k, v in run_cfg.items() if v is not None}
        selection = _selection_hash(trainer, run_cfg, tag)
        meta = {
            "run": run.name,
            "experiment": run.experiment,
            "selection": run.selection,
            "fraction": run.fraction,
            "seed": run.seed,
            "generator_pair": run.generator_pair,
        }
        if selection in trained:  # e.g. the only generator pair is all pairs: train once
            same = trained[selection]
            log(f"{tag}: same pairs as {same['run']}, result reused")
            rows.append({**same, **meta, "model_dir": same["model_dir"]})
            continue
        key = _hash(selection, eval_key)
        cached = read_cached_result(run_dir, key)
        if cached is not None:
            log(f"{tag}: done before, reused")
            rows.append(cached)
            trained[selection] = cached
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_file = run_dir / "train.yaml"
        cfg_file.write_text(yaml.safe_dump(run_cfg, sort_keys=False), encoding="utf-8")
        log(f"{tag}: training")
        result = run_script(trainer, [str(cfg_file)])
        _release_memory()
        log(f"{tag}: evaluating on {len(prompts)} prompts")
        ev = evaluate_model(str(merged_for_eval(run_dir)), config.eval, prompts, base_dir)
        _release_memory()
        counts = result.counts
        row = {
            **meta,
            "pairs": counts.get("pairs_selected"),
            "train_loss": None if result.train_loss is None else round(result.train_loss, 4),
            "accuracy": round(ev["accuracy"], 4),
            "correct": ev["correct"],
            "n_eval": ev["n_eval"],
            "model_dir": str(run_dir),
        }
        cache_result(run_dir, key, row, ev["answers"])
        rows.append(row)
        trained[selection] = row
        log(f"{tag}: accuracy {row['accuracy']:.3f}")
    write_results(rows, out, config.name, dimension, notes)
    log(f"results: {out / 'results.md'}, {out / 'results.csv'}, {out / 'results.png'}")
    return rows


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


def _base_row(
    model: str,
    config: SweepConfig,
    prompts: list[EvalPrompt],
    base_dir: Path,
    folder: Path,
    eval_key: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    key = _hash(model, eval_key)
    cached = read_cached_result(folder, key)
    if cached is not None:
        return cached
    log(f"base model: evaluating on {len(prompts)} prompts")
    ev = evaluate_model(model, config.eval, prompts, base_dir)
    _release_memory()
    row = {
        "run": "base",
        "experiment": "base",
        "selection": "none",
        "fraction": 0.0,
        "seed": None,
        "generator_pair": None,
        "pairs": 0,
        "train_loss": None,
        "accuracy": round(ev["accuracy"], 4),
        "correct": ev["correct"],
        "n_eval": ev["n_eval"],
        "model_dir": model,
    }
    folder.mkdir(parents=True, exist_ok=True)
    cache_result(folder, key, row, ev["answers"])
    return row
