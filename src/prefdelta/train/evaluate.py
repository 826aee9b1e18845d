"""How the sweep scores a model: held-out prompts with references, one answer per prompt.

Each trained model (and the base model) answers with the build's own backend machinery
(:func:`~prefdelta.builders.generators.make_llm`: transformers or vLLM on the run's
output folder), so a sweep evaluates the way a build generates; math-verify scores the
answers against the references.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefdelta.train.data import fresh_cache, read_traces
from prefdelta.train.sweep_config import EvalConfig, SweepError


@dataclass(frozen=True)
class EvalPrompt:
    prompt_id: str
    prompt: str
    reference: str


def eval_prompts(
    config: EvalConfig, base_dir: Path, dataset: Any, train_split: str = "train"
) -> list[EvalPrompt]:
    """Held-out prompts with references: ``eval.prompts``, or the dataset's held-out split."""

    from prefdelta.builders.prompts import load_prompts

    e = config
    train_ids: set[str] = set()
    if e.exclude_training_prompts:
        train_ids = set(read_pairs_columns(dataset, train_split, ["prompt_id"])["prompt_id"])
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
        held_out = set(read_pairs_columns(dataset, e.split, ["prompt_id"])["prompt_id"])
        traces = read_traces(dataset, ["prompt_id", "prompt", "reference"])
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


def read_pairs_columns(dataset: Any, split: str, columns: list[str]) -> dict[str, list[Any]]:
    """Some columns of a pairs split, read in one load.

    The sweep's planning reads the training split's generator columns with it too.
    """
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


def merged_for_eval(run_dir: Path) -> Path:
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
