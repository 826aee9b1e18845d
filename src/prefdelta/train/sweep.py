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
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from prefdelta.recipe import GenerationParams, PromptsConfig, RecipeError, StrictModel
from prefdelta.train.configs import parse_generator_pairs, read_config, resolve_model
from prefdelta.train.data import fresh_cache
from prefdelta.train.run import REGISTRY, TrainerKind, run_script

SELECTION_KEYS = (
    "top_fraction",
    "random_fraction",
    "selection_seed",
    "dimension",
    "generator_pairs",
)


class SweepError(RecipeError):
    """A sweep config or run that cannot go ahead; one line per problem."""


class DeltaSweep(StrictModel):
    """Experiment (a): top k% by a dimension's delta vs a random k%, at several k."""

    dimension: str = Field("step_coherence", description="delta the top k% ranks by")
    fractions: list[float] = Field(
        default_factory=lambda: [0.3, 0.5, 1.0], description="k as fractions in (0, 1]"
    )
    random_seeds: list[int] = Field(
        default_factory=lambda: [0], description="one random-k% run per seed"
    )

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < f <= 1 for f in v):
            raise ValueError(f"fractions must be a non-empty list of values in (0, 1], got {v}")
        return sorted(set(v))


class EvalConfig(StrictModel):
    """Held-out prompts, and how every model answers them."""

    prompts: PromptsConfig | None = Field(
        None, description="held-out prompts with references (default: the dataset's split)"
    )
    split: str = Field("test", description="without `prompts`: the pairs split held out")
    exclude_training_prompts: bool = Field(
        True, description="drop prompts that occur in the training split"
    )
    limit: int | None = Field(None, gt=0, description="at most this many prompts")
    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="engine that runs each model"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(8, gt=0)
    generation: GenerationParams = Field(
        default_factory=lambda: GenerationParams(temperature=0.0, max_new_tokens=512)
    )
    system_prompt: str | None = None
    prompt_template: str = Field("{prompt}", description="as in build recipes")
    include_base: bool = Field(True, description="also evaluate the untrained base model")


class SweepConfig(StrictModel):
    """One sweep: a base training config, the experiments, the evaluation."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    train: str = Field(description="training config (YAML), relative to this file")
    output_dir: str | None = Field(None, description="default outputs/sweeps/<name>")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="training config keys set for every run"
    )
    delta: DeltaSweep | None = Field(default_factory=DeltaSweep)
    generator_pairs: list[Any] | Literal["all"] | None = Field(
        "all", description="`all` (every pair in the data), a list of chosen:rejected, or null"
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("generator_pairs")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        return parse_generator_pairs(v) if isinstance(v, list) else v

    @field_validator("overrides")
    @classmethod
    def _no_selection(cls, v: dict[str, Any]) -> dict[str, Any]:
        clash = [k for k in (*SELECTION_KEYS, "output_dir") if k in v]
        if clash:
            raise ValueError(f"the sweep sets {', '.join(clash)} itself; remove from overrides")
        return v

    @model_validator(mode="after")
    def _something(self) -> SweepConfig:
        if self.delta is None and self.generator_pairs is None:
            raise ValueError("nothing to sweep: set `delta` and/or `generator_pairs`")
        return self


def load_sweep(path: str | Path) -> tuple[SweepConfig, Path]:
    """Validate a sweep file; problems come back as ``file:line: field: message`` lines."""
    from prefdelta.recipe import _describe, _dotted, _Located

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError([f"{p}: no such sweep config"]) from None
    try:
        doc = _Located(text, str(p))
    except RecipeError as exc:
        raise SweepError(exc.lines) from None
    try:
        config = SweepConfig.model_validate(doc.data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc, msg = _describe(err)
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc[-1]!r}"
            lines.append(f"{p}:{doc.line_of(loc)}: {_dotted(loc)}: {msg}")
        raise SweepError(lines) from None
    train = (p.parent / config.train).resolve()
    if not train.is_file():
        raise SweepError([f"{p}:{doc.line_of(('train',))}: train: file not found: {train}"])
    return config, train


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


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalPrompt:
    prompt_id: str
    prompt: str
    reference: str


def eval_prompts(
    config: SweepConfig, base_dir: Path, dataset: Any, train_split: str = "train"
) -> list[EvalPrompt]:
    """Held-out prompts with references: ``eval.prompts``, or the dataset's held-out split."""
    import datasets

    from prefdelta.builders.prompts import load_prompts

    e = config.eval
    train_ids: set[str] = set()
    if e.exclude_training_prompts:
        train_ids = set(_pairs_values(dataset, train_split, ["prompt_id"])["prompt_id"])
    if e.prompts is not None:
        if e.prompts.reference_column is None:
            raise SweepError(["eval.prompts.reference_column: required to score answers"])
        unlimited = e.prompts.model_copy(update={"limit": None})
        loaded, _ = load_prompts(unlimited, base_dir)
        prompts = [
            EvalPrompt(p.prompt_id, p.prompt, p.reference or "")
            for p in loaded
            if p.prompt_id not in train_ids and p.reference
        ]
        limit = e.prompts.limit or e.limit
    else:
        held_out = set(_pairs_values(dataset, e.split, ["prompt_id"])["prompt_id"])
        with fresh_cache(dataset):
            traces = datasets.load_dataset(
                dataset.path,
                "traces",
                split="train",
                revision=None if dataset.local else dataset.resolved,
                columns=["prompt_id", "prompt", "reference"],
            )
        seen: dict[str, EvalPrompt] = {}
        for row in traces:
            pid = row["prompt_id"]
            if pid in held_out and pid not in train_ids and row["reference"] and pid not in seen:
                seen[pid] = EvalPrompt(pid, row["prompt"], row["reference"])
        prompts = sorted(seen.values(), key=lambda p: p.prompt_id)
        limit = e.limit
    if limit is not None:
        prompts = prompts[:limit]
    if not prompts:
        where = "eval.prompts" if e.prompts is not None else f"split {e.split!r} of {dataset.path}"
        raise SweepError([f"eval: no held-out prompts with references in {where}"])
    return prompts


def _pairs_values(dataset: Any, split: str, columns: list[str]) -> dict[str, list[Any]]:
    """Some columns of a pairs split, read in one load."""
    import datasets

    try:
        with fresh_cache(dataset):
            ds = datasets.load_dataset(
                dataset.path,
                "pairs",
                split=split,
                revision=None if dataset.local else dataset.resolved,
                columns=columns,
            )
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise SweepError(
                [
                    f"eval: {dataset.path} has no `{split}` pairs split to hold out; publish "
                    "with --test-size, or set eval.prompts"
                ]
            ) from None
        raise
    return {c: list(ds[c]) for c in columns}


def evaluate_model(
    model_dir: str, config: EvalConfig, prompts: list[EvalPrompt], base_dir: Path
) -> dict[str, Any]:
    """Generate an answer per prompt with ``make_llm`` and score it with math-verify."""
    from prefdelta.builders.generators import make_llm
    from prefdelta.builders.verify import is_correct
    from prefdelta.recipe import GeneratorConfig

    endpoint = GeneratorConfig(
        model=model_dir,
        backend=config.backend,
        dtype=config.dtype,
        batch_size=config.batch_size,
        generation=config.generation,
        system_prompt=config.system_prompt,
        prompt_template=config.prompt_template,
    )
    llm = make_llm(endpoint, endpoint.generation, base_dir)
    inputs = []
    for p in prompts:
        messages = []
        if config.system_prompt:
            messages.append({"role": "system", "content": config.system_prompt})
        messages.append(
            {"role": "user", "content": config.prompt_template.replace("{prompt}", p.prompt)}
        )
        inputs.append(messages)
    llm.load()
    try:
        outputs = llm.generate_outputs(
            inputs=inputs, num_generations=1, **llm.get_generation_kwargs()
        )
    finally:
        llm.unload()
    answers = []
    for p, out in zip(prompts, outputs, strict=True):
        text = (out.get("generations") or [None])[0] or ""
        answers.append(
            {
                "prompt_id": p.prompt_id,
                "reference": p.reference,
                "answer": text,
                "correct": is_correct(text, p.reference),
            }
        )
    n_correct = sum(a["correct"] for a in answers)
    return {
        "accuracy": n_correct / len(answers),
        "correct": n_correct,
        "n_eval": len(answers),
        "answers": answers,
    }


def _merged_for_eval(run_dir: Path) -> Path:
    """A LoRA run saves an adapter; the generation backends load a plain model folder."""
    if not (run_dir / "adapter_config.json").is_file():
        return run_dir
    merged = run_dir / "merged"
    if not (merged / "config.json").is_file():
        from peft import AutoPeftModelForCausalLM
        from transformers import AutoTokenizer

        model = AutoPeftModelForCausalLM.from_pretrained(run_dir).merge_and_unload()
        model.save_pretrained(merged)
        AutoTokenizer.from_pretrained(run_dir).save_pretrained(merged)
    return merged


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
    from prefdelta.loading import PairsLoadError, _delta_column
    from prefdelta.train.configs import TrainConfigError
    from prefdelta.train.data import dataset_source, pairs_column_names

    config, train_path = load_sweep(path)
    base_dir = Path(path).parent
    base = read_config(train_path)
    base.update(config.overrides)
    # an unknown `trainer:` runs as DPO's data arguments, which refuse it by name
    trainer = REGISTRY.get(base.get("trainer") or "dpo", REGISTRY["dpo"])
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
                column = _delta_column(dimension, pairs_column_names(source, split))
                wanted.append(column)
    except TrainConfigError as exc:
        raise SweepError([str(exc)]) from None
    values = _pairs_values(source, split, wanted)
    pairs = zip(values["chosen_generator"], values["rejected_generator"], strict=True)
    runs = plan_runs(config, sorted({f"{c}:{r}" for c, r in pairs}))
    notes: list[str] = []
    if column is not None:
        runs, note = drop_unrankable(runs, column, values[column])
        if note:
            log(note)
            notes.append(note)
    prompts = eval_prompts(config, base_dir, source, split)
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
        cached = _read_result(run_dir, key)
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
        ev = evaluate_model(str(_merged_for_eval(run_dir)), config.eval, prompts, base_dir)
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
        _write_result(run_dir, key, row, ev["answers"])
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
    cached = _read_result(folder, key)
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
    _write_result(folder, key, row, ev["answers"])
    return row


def _read_result(folder: Path, key: str) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data["row"] if data.get("key") == key else None


def _write_result(folder: Path, key: str, row: dict[str, Any], answers: list[dict]) -> None:
    with (folder / "answers.jsonl").open("w", encoding="utf-8") as f:
        for a in answers:
            f.write(json.dumps(a) + "\n")
    (folder / "result.json").write_text(
        json.dumps({"key": key, "row": row}, indent=2), encoding="utf-8"
    )


# --------------------------------------------------------------------------- results

COLUMNS = (
    "run",
    "experiment",
    "selection",
    "fraction",
    "seed",
    "generator_pair",
    "pairs",
    "train_loss",
    "accuracy",
    "correct",
    "n_eval",
    "model_dir",
)


def write_results(
    rows: list[dict[str, Any]], out: Path, name: str, dimension: str, notes: Sequence[str] = ()
) -> None:
    """``results.csv``, ``results.md`` (a table per experiment) and ``results.png``."""
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    shown = [c for c in COLUMNS if c != "model_dir"]
    lines = [f"# Sweep {name}", ""]
    lines += [
        f"Accuracy on held-out prompts (math-verify against the references). Experiment "
        f"`delta`: top k% by `delta_{dimension}` vs a random k%; `generator_pair`: one run "
        "per (chosen, rejected) generator pair; `base`: the untrained model.",
        "",
        "| " + " | ".join(shown) + " |",
        "|" + "---|" * len(shown),
    ]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in shown) + " |" for r in rows]
    lines += ["", *(f"Note: {n}" for n in notes)] if notes else []
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_results(rows, out / "results.png", dimension)


def plot_results(rows: list[dict[str, Any]], path: Path, dimension: str) -> Path:
    """Accuracy vs k (top k% and mean random k%) and per generator pair, base as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next((r["accuracy"] for r in rows if r["experiment"] == "base"), None)
    full = next((r for r in rows if r["selection"] == "all"), None)
    delta_rows = [r for r in rows if r["experiment"] == "delta"]
    pair_rows = [r for r in rows if r["experiment"] == "generator_pair"]
    panels = int(bool(delta_rows)) + int(bool(pair_rows)) or 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax_iter = iter(axes[0])
    if delta_rows:
        ax = next(ax_iter)
        for selection, style in (("top", "o-"), ("random", "s--")):
            by_k: dict[float, list[float]] = {}
            for r in delta_rows:
                if r["selection"] in (selection, "all"):
                    by_k.setdefault(float(r["fraction"]), []).append(r["accuracy"])
            if not any(r["selection"] == selection for r in delta_rows):
                continue
            ks = sorted(by_k)
            means = [sum(by_k[k]) / len(by_k[k]) for k in ks]
            label = f"top k% by {dimension}" if selection == "top" else "random k% (mean)"
            ax.plot([100 * k for k in ks], means, style, label=label)
            if selection == "random":
                for k in ks:
                    ax.scatter([100 * k] * len(by_k[k]), by_k[k], s=10, alpha=0.4, color="grey")
        if base is not None:
            ax.axhline(base, color="black", linestyle=":", label="base model")
        ax.set_xlabel("k (% of pairs trained on)")
        ax.set_ylabel("held-out accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("sample-level delta")
        ax.legend(fontsize=8)
    if pair_rows:
        ax = next(ax_iter)
        bars = [(r["generator_pair"], r["accuracy"]) for r in pair_rows]
        if full is not None:
            bars.append(("all pairs", full["accuracy"]))
        ax.bar(range(len(bars)), [b[1] for b in bars], color="tab:blue")
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=20, fontsize=8)
        if base is not None:
            ax.axhline(base, color="black", linestyle=":", label="base model")
            ax.legend(fontsize=8)
        ax.set_ylabel("held-out accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title("generator-level delta (chosen:rejected)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
