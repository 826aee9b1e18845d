"""What the DPO and KTO scripts share: the trainer's extras, its arguments, the end of a run."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefdelta.train.configs import TrainConfigError, parse_config, resolve_model
from prefdelta.train.model_card import CardInfo, peft_summary
from prefdelta.train.ref_cache import RefCacheLocation


@dataclass
class TrainResult:
    """What a run produced (the sweep reads it; the CLI prints it)."""

    output_dir: Path
    counts: dict[str, Any]
    train_loss: float | None
    losses: list[float] = field(default_factory=list)  # logged training losses, in order
    ref_cache: dict[str, Any] = field(default_factory=dict)
    weights: tuple[float, float] | None = None


def model_path_and_kwargs(training_args: Any, model_args: Any) -> str:
    """Resolve the base model and set ``model_init_kwargs`` as TRL's own scripts do."""
    if not model_args.model_name_or_path:
        raise TrainConfigError("model_name_or_path: required (a Hub id, a folder or a .gguf)")
    path = resolve_model(model_args.model_name_or_path)
    kwargs: dict[str, Any] = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    if path != model_args.model_name_or_path:  # a converted local folder has no revisions
        kwargs.pop("revision")
    if training_args.model_init_kwargs is not None:
        kwargs.update(training_args.model_init_kwargs)
    training_args.model_init_kwargs = kwargs
    return path


class PrefDeltaTrainerMixin:
    """The two keyword arguments our trainers add to TRL's (``ref_cache``, ``card_info``).

    With a reference cache, ``precompute_ref_log_probs`` is forced on: the log-probs come
    from the cache (or are computed once into it) and no reference model is kept while
    training.
    """

    def __init__(
        self,
        *args: Any,
        ref_cache: RefCacheLocation | None = None,
        card_info: CardInfo | None = None,
        **kwargs: Any,
    ) -> None:
        self.ref_cache = ref_cache
        self.card_info = card_info
        if ref_cache is not None:
            kwargs["args"].precompute_ref_log_probs = True
        super().__init__(*args, **kwargs)


def trainer_kwargs(
    trainer: str,
    selection: Any,
    script_args: Any,
    training_args: Any,
    model_args: Any,
    weights: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for a ``PrefDelta*Trainer``, built as TRL's scripts build theirs.

    ``selection`` is what :mod:`prefdelta.train.data` loaded (dataset, eval split, source,
    counts); the card records the same selection and counts the run trained on.
    """
    from trl import get_peft_config, get_quantization_config

    model_path = model_path_and_kwargs(training_args, model_args)
    peft_config = get_peft_config(model_args)
    ref_cache = (
        RefCacheLocation.for_dataset(selection.source, script_args.ref_cache_dir)
        if script_args.ref_cache
        else None
    )
    card = CardInfo(
        trainer=trainer,
        base_model=model_args.model_name_or_path,
        base_model_path=model_path,
        source=selection.source,
        selection=script_args.filter_summary(),
        counts=selection.counts,
        peft=peft_summary(peft_config),
        weights=weights,
    )
    return {
        "model": model_path,
        "args": training_args,
        "train_dataset": selection.dataset,
        "eval_dataset": selection.eval_dataset if training_args.eval_strategy != "no" else None,
        "peft_config": peft_config,
        "quantization_config": get_quantization_config(model_args),
        "ref_cache": ref_cache,
        "card_info": card,
    }


def finish(trainer: Any, training_args: Any, counts: dict[str, Any]) -> TrainResult:
    """Train, save, write the card, push when asked; what TRL's scripts do after building."""
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    processes = _processes(trainer)
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card()
    if training_args.push_to_hub:
        trainer.push_to_hub()
    history = trainer.state.log_history
    losses = [float(h["loss"]) for h in history if "loss" in h]
    final = next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None)
    result = TrainResult(
        output_dir=Path(training_args.output_dir),
        counts=counts,
        train_loss=None if final is None else float(final),
        losses=losses,
        ref_cache=dict(getattr(trainer, "ref_cache_stats", {}) or {}),
        weights=getattr(getattr(trainer, "card_info", None), "weights", None),
    )
    write_run_record(result, processes)
    if processes.count > 1:
        trainer.accelerator.wait_for_everyone()  # every rank's collectives done first
        _LEFT_ALIVE.append(trainer)  # see script_main
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish trackers, destroy the group
        trainer.end()
    return result


# A run on several processes: its trainer is never freed. Freeing it frees torch's gloo
# process group from Python, whose destructor joins a worker thread that may still wait
# for the GIL the freeing thread holds (seen as a hang after training, under load);
# script_main leaves the process once everything is written instead.
_LEFT_ALIVE: list[Any] = []


RUN_RECORD = "prefdelta-run.json"


@dataclass(frozen=True)
class _Processes:
    """What ran where, read while the trainer's accelerator is still set up."""

    main: bool
    count: int
    forwards: list[int]  # reference forwards, per process


def _processes(trainer: Any) -> _Processes:
    """Every process calls this (the gather is collective). Read right after training:
    saving the model and writing its card may build training arguments again, which
    resets accelerate's shared state."""
    from accelerate.utils import gather_object

    stats = getattr(trainer, "ref_cache_stats", {}) or {}
    forwards = gather_object([int(stats.get("forwards", 0))])
    accelerator = trainer.accelerator
    return _Processes(accelerator.is_main_process, accelerator.num_processes, forwards)


def write_run_record(result: TrainResult, processes: _Processes) -> None:
    """``output_dir/prefdelta-run.json``: what the run trained on and how it went, for a
    run launched as its own process (``accelerate launch``, the sweep's slots) whose
    :class:`TrainResult` no caller receives.

    Also what ran where: the process count, the ``CUDA_VISIBLE_DEVICES`` the run saw, and
    the reference forwards each process ran (the processes share one reference pass,
    each scoring its shard of the batches). The main process writes it.
    """
    import json
    import os

    from prefdelta.files import atomic_write

    if not processes.main:
        return
    record = {
        "counts": result.counts,
        "train_loss": result.train_loss,
        "losses": result.losses,
        "weights": list(result.weights) if result.weights else None,
        "ref_cache": {**result.ref_cache, "forwards_per_process": processes.forwards},
        "num_processes": processes.count,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    out = result.output_dir / RUN_RECORD
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(record, indent=2, default=str).encode())


def script_main(
    dataclass_types: Sequence[type],
    main: Callable[..., TrainResult],
    argv: Sequence[str] | None = None,
) -> int:
    """``python -m prefdelta.train.dpo CONFIG.yaml [--key value ...]``: parse, run, one-line errors."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        parsed = parse_config(dataclass_types, args, runnable=True)
        main(*parsed)
    except TrainConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if _LEFT_ALIVE:  # several processes: leave without freeing the process group
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
