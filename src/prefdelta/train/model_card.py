"""The model card of a trained model: what it started from, what it saw, how it was trained.

Why our own card and not TRL's: TRL's card names the base model and the trainer, but the
experiment is the *selection* (which dataset revision, which delta filter, how many of
how many pairs, which generator pairs), and a result is only reproducible with all of it.
The trainers call :meth:`CardMixin.create_model_card` wherever TRL would write its card
(``save_model`` checkpoints, ``push_to_hub``), so ``push_to_hub: true`` in a training
config uploads this card with the model.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prefdelta.locations import is_hub_id
from prefdelta.train.data import DatasetSource

_SKIP = {"output_dir", "logging_dir", "hub_token", "push_to_hub_token", "model_init_kwargs"}


@dataclass
class CardInfo:
    """Everything about a run that TRL's training arguments do not hold."""

    trainer: str  # dpo | kto
    base_model: str  # as written in the config
    base_model_path: str  # what transformers loaded
    source: DatasetSource
    selection: dict[str, Any]
    counts: dict[str, Any]
    peft: dict[str, Any] | None = None
    weights: tuple[float, float] | None = None
    ref_cache: dict[str, Any] = field(default_factory=dict)


def non_default_args(args: Any) -> dict[str, Any]:
    """Training arguments that differ from a fresh config of the same class (secrets masked).

    Compared with a config built the same way rather than with the dataclass defaults, so
    values every config derives in ``__post_init__`` do not show up as choices.
    """
    values = args.to_dict()
    precision = {"use_cpu": args.use_cpu, "bf16": args.bf16, "fp16": args.fp16}
    try:
        baseline = type(args)(output_dir=args.output_dir, **precision).to_dict()
    except Exception:  # a config that cannot be rebuilt here: fall back to field defaults
        baseline = {
            f.name: f.default
            for f in dataclasses.fields(args)
            if f.default is not dataclasses.MISSING
        }
    out = {
        k: v
        for k, v in values.items()
        if k not in _SKIP and not k.startswith("_") and "token" not in k and baseline.get(k) != v
    }
    out.update({k: v for k, v in precision.items() if v})
    return out


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _is_hub_id(name: str) -> bool:
    return is_hub_id(name) and not name.endswith(".gguf")


def render_card(info: CardInfo, args: Any, model_name: str) -> str:
    """README.md text: YAML metadata, then the base model, data, selection and config."""
    trainer = info.trainer.upper()
    meta: dict[str, Any] = {"library_name": "transformers", "model_name": model_name}
    if _is_hub_id(info.base_model):
        meta["base_model"] = info.base_model
    if not info.source.local:
        meta["datasets"] = [info.source.path]
    meta["tags"] = ["prefdelta", "trl", info.trainer, "generated_from_trainer"]
    if info.peft:
        meta["tags"].append("peft")

    c = info.counts
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {model_name}",
        "",
        f"{trainer} with TRL on a delta-filtered selection of a prefdelta reasoning preference "
        "dataset (generator-level and sample-level deltas, after *Decomposing the Delta*).",
        "",
        "## Base model",
        "",
        f"`{info.base_model}`"
        + (
            f" (loaded from `{info.base_model_path}`)"
            if info.base_model_path != info.base_model
            else ""
        ),
        "",
        "## Data",
        "",
        "| | |",
        "|---|---|",
        f"| dataset | `{info.source.path}` ({'local folder' if info.source.local else 'Hub'}) |",
        f"| revision | `{info.source.resolved}`"
        + (f" (requested `{info.source.revision}`)" if info.source.revision else "")
        + " |",
    ]
    for key, value in info.selection.items():
        lines.append(f"| {key} | `{value}` |")
    if "pairs_selected" in c:
        total = c.get("pairs_available") or 0
        share = f" ({100 * c['pairs_selected'] / total:.1f}%)" if total else ""
        lines.append(f"| pairs | {c['pairs_selected']} of {total}{share} |")
    if "delta_mean" in c:
        lines.append(f"| mean {c['delta_column']} of the selection | {c['delta_mean']:g} |")
    if info.trainer == "kto":
        lines.append(f"| desirable / undesirable | {c.get('desirable')} / {c.get('undesirable')} |")
        if info.weights is not None:
            lines.append(
                f"| desirable_weight / undesirable_weight | {info.weights[0]:g} / "
                f"{info.weights[1]:g} (balanced, TRL's ratio range [1, 4/3]) |"
            )
    for key in ("traces_available", "traces_judged_ok", "traces_held_out_prompts"):
        if key in c:
            lines.append(f"| {key.replace('_', ' ')} | {c[key]} |")
    if c.get("by_generator_pair"):
        lines += ["", "Pairs by generator pair (chosen:rejected):", ""]
        lines += ["| generator pair | pairs |", "|---|---|"]
        lines += [f"| {pair} | {n} |" for pair, n in c["by_generator_pair"].items()]
    if info.ref_cache:
        rc = info.ref_cache
        lines += [
            "",
            "## Reference log-probs",
            "",
            f"Precomputed once per (reference model, dataset revision) and reused across runs: "
            f"{rc.get('sequences_cached', 0)} sequences from the cache, "
            f"{rc.get('sequences_computed', 0)} computed for this run.",
        ]
    config = non_default_args(args)
    lines += [
        "",
        f"## Training configuration ({type(args).__name__}, non-default values)",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=True, default_flow_style=False).rstrip() or "{}",
        "```",
    ]
    if info.peft:
        lines += [
            "",
            "PEFT:",
            "",
            "```yaml",
            yaml.safe_dump(info.peft, sort_keys=True).rstrip(),
            "```",
        ]
    versions = ", ".join(
        f"{p} {_version(p)}"
        for p in ("prefdelta", "trl", "transformers", "torch", "datasets", "peft")
    )
    lines += ["", "## Framework versions", "", versions, ""]
    return "\n".join(lines)


def peft_summary(peft_config: Any) -> dict[str, Any] | None:
    if peft_config is None:
        return None
    keys = ("peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "task_type")
    raw = peft_config.to_dict() if hasattr(peft_config, "to_dict") else dict(vars(peft_config))
    out = {}
    for k in keys:
        v = raw.get(k)
        if isinstance(v, set):
            v = sorted(v)
        if isinstance(v, enum.Enum):
            v = v.value
        if v is not None:
            out[k] = v
    return out


class CardMixin:
    """Replaces TRL's ``create_model_card`` with :func:`render_card` when ``card_info`` is set."""

    card_info: CardInfo | None = None

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
    ) -> None:
        if self.card_info is None:
            return super().create_model_card(model_name, dataset_name, tags)  # type: ignore[misc]
        if not self.is_world_process_zero():  # type: ignore[attr-defined]
            return None
        args = self.args  # type: ignore[attr-defined]
        name = model_name or Path(args.output_dir).name
        self.card_info.ref_cache = dict(getattr(self, "ref_cache_stats", {}) or {})
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "README.md").write_text(render_card(self.card_info, args, name), encoding="utf-8")
        return None
