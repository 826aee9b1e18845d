"""How the sweep scores a model: eval sets of prompts with references, one answer each.

An eval set is the dataset's held-out split or any prompts a build could read (a Hub id
or a local file), so out-of-domain sets (MMLU-Pro, TheoremQA, ...) sit beside the build's
own. Each trained model (and the base model) answers with the build's own backend
machinery (:func:`~prefdelta.builders.llms.make_llm`: transformers or vLLM on the
run's output folder), so a sweep evaluates the way a build generates; each set's scorer
(math-verify, or the option letter) checks the answers against the references.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefdelta.builders.verify import LETTERS
from prefdelta.recipe import PromptsConfig, RecipeError
from prefdelta.train.data import fresh_cache, read_traces
from prefdelta.train.sweep.config import EvalConfig, EvalSet, SweepError


@dataclass(frozen=True)
class EvalPrompt:
    prompt_id: str
    prompt: str
    reference: str
    options: tuple[str, ...] = ()  # a multiple-choice set's options, lettered A, B, ...

    def message(self, template: str) -> str:
        """The user message: the template around the prompt and its lettered options."""
        text = self.prompt
        if self.options:
            lines = [f"{LETTERS[i]}. {o}" for i, o in enumerate(self.options)]
            text += "\n\n" + "\n".join(lines)
        return template.replace("{prompt}", text)


def training_prompt_ids(dataset: Any, train_split: str) -> set[str]:
    """The prompts the runs train on, which no eval set may score them on."""
    return set(read_pairs_columns(dataset, train_split, ["prompt_id"])["prompt_id"])


def eval_prompts(
    config: EvalConfig,
    eval_set: EvalSet,
    base_dir: Path,
    dataset: Any,
    exclude: set[str],
) -> list[EvalPrompt]:
    """One set's prompts with references, less the ``exclude`` (training) prompt ids:
    its ``prompts`` (read like a build's), or the dataset's held-out split."""
    from prefdelta.builders.prompts import load_prompts

    where = f"eval set {eval_set.name!r}"
    if eval_set.prompts is not None:
        unlimited = eval_set.prompts.model_copy(update={"limit": None})
        try:
            loaded, _ = load_prompts(unlimited, base_dir)
            options: dict[str, tuple[str, ...]] = {}
            if eval_set.options_column is not None:
                options = _options(unlimited, eval_set.options_column, base_dir, where)
        except RecipeError as exc:
            raise SweepError([f"{where}: {line}" for line in exc.lines]) from None
        prompts = [
            EvalPrompt(p.prompt_id, p.prompt, p.reference or "", options.get(p.prompt_id, ()))
            for p in loaded
            if p.prompt_id not in exclude and p.reference
        ]
        limit = eval_set.limit or eval_set.prompts.limit or config.limit
        source = f"{where} ({eval_set.prompts.path or eval_set.prompts.dataset})"
    else:
        held_out = set(read_pairs_columns(dataset, config.split, ["prompt_id"])["prompt_id"])
        traces = read_traces(dataset, ["prompt_id", "prompt", "reference"])
        seen: dict[str, EvalPrompt] = {}
        for row in traces:
            pid = row["prompt_id"]
            if pid in held_out and pid not in exclude and row["reference"] and pid not in seen:
                seen[pid] = EvalPrompt(pid, row["prompt"], row["reference"])
        prompts = sorted(seen.values(), key=lambda p: p.prompt_id)
        limit = eval_set.limit or config.limit
        source = f"{where} (split {config.split!r} of {dataset.path})"
    if limit is not None:
        prompts = prompts[:limit]
    if not prompts:
        raise SweepError([f"{source}: no held-out prompts with references"])
    if eval_set.scorer == "multiple_choice":
        for p in prompts:
            n = len(p.options) or len(LETTERS)
            if p.reference.strip().upper() not in LETTERS[:n]:
                raise SweepError(
                    [
                        f"{source}: reference {p.reference!r} of prompt {p.prompt[:60]!r} is "
                        f"not an option letter A-{LETTERS[n - 1]} (scorer multiple_choice)"
                    ]
                )
    return prompts


def _options(
    prompts: PromptsConfig, column: str, base_dir: Path, where: str
) -> dict[str, tuple[str, ...]]:
    """prompt id -> the options of a multiple-choice set's rows."""
    from prefdelta.builders.prompts import prompt_id, read_prompt_table

    table, origin = read_prompt_table(prompts, base_dir)
    if column not in table.column_names:
        raise SweepError(
            [
                f"{where}: options_column: column {column!r} is not in {origin}; "
                f"columns: {', '.join(table.column_names)}"
            ]
        )
    out: dict[str, tuple[str, ...]] = {}
    for index, (text, opts) in enumerate(zip(table[prompts.column], table[column], strict=True)):
        if not isinstance(opts, list) or not 2 <= len(opts) <= len(LETTERS):
            raise SweepError(
                [
                    f"{where}: options_column: row {index} of {origin} holds {opts!r}; "
                    f"expected a list of 2 to {len(LETTERS)} options"
                ]
            )
        if isinstance(text, str):
            out[prompt_id(text)] = tuple(str(o) for o in opts)
    return out


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
                    "with --test-size, or give each eval set its `prompts`"
                ]
            ) from None
        raise
    return {c: list(ds[c]) for c in columns}


def evaluate_model(
    model_dir: str,
    config: EvalConfig,
    sets: list[tuple[EvalSet, list[EvalPrompt]]],
    base_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Answer every set's prompts with one ``make_llm`` model (loaded once) and score each
    answer with the set's scorer; per set: accuracy, counts and the answers in prompt order."""
    from prefdelta.builders.llms import make_llm
    from prefdelta.builders.verify import is_choice_correct, is_correct
    from prefdelta.recipe import GeneratorConfig

    endpoint = GeneratorConfig(
        model=model_dir,
        backend=config.backend,
        dtype=config.dtype,
        tensor_parallel_size=config.tensor_parallel_size,
        batch_size=config.batch_size,
        generation=config.generation,
        system_prompt=config.system_prompt,
        prompt_template=config.prompt_template,
    )
    llm = make_llm(endpoint, endpoint.generation, base_dir)
    results: dict[str, dict[str, Any]] = {}
    llm.load()
    try:
        for eval_set, prompts in sets:
            template = eval_set.prompt_template or config.prompt_template
            inputs = []
            for p in prompts:
                messages = []
                if config.system_prompt:
                    messages.append({"role": "system", "content": config.system_prompt})
                messages.append({"role": "user", "content": p.message(template)})
                inputs.append(messages)
            outputs = llm.generate_outputs(
                inputs=inputs, num_generations=1, **llm.get_generation_kwargs()
            )
            answers = []
            for p, out in zip(prompts, outputs, strict=True):
                text = (out.get("generations") or [None])[0] or ""
                if eval_set.scorer == "multiple_choice":
                    right = is_choice_correct(text, p.reference, len(p.options) or 26)
                else:
                    right = is_correct(text, p.reference)
                answers.append(
                    {
                        "prompt_id": p.prompt_id,
                        "reference": p.reference,
                        "answer": text,
                        "correct": right,
                    }
                )
            n_correct = sum(a["correct"] for a in answers)
            results[eval_set.name] = {
                "accuracy": n_correct / len(answers),
                "correct": n_correct,
                "n_eval": len(answers),
                "answers": answers,
            }
    finally:
        llm.unload()
    return results


def merged_for_eval(run_dir: Path, log: Callable[[str], None] = print) -> Path:
    """A LoRA run saves an adapter; both generation backends (transformers, and vLLM, whose
    engine then needs no LoRA settings) load a plain folder: the adapter is merged into
    its base once, in the base's own dtype (a 7B model in bfloat16 stays 15 GB, not 30),
    and the merged folder kept as ``<run>/merged`` for every later evaluation."""
    if not (run_dir / "adapter_config.json").is_file():
        return run_dir
    merged = run_dir / "merged"
    if not (merged / "config.json").is_file():
        from peft import AutoPeftModelForCausalLM
        from transformers import AutoTokenizer

        model = AutoPeftModelForCausalLM.from_pretrained(run_dir, dtype="auto")
        model.merge_and_unload().save_pretrained(merged)
        AutoTokenizer.from_pretrained(run_dir).save_pretrained(merged)
        log(f"{run_dir}: LoRA adapter merged into {merged} for evaluation")
    return merged
