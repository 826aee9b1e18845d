"""KTO on a published prefdelta dataset (TRL's kto.py, plus the selection and balanced weights).

```bash
prefdelta train recipes/train/kto-demo.yaml
accelerate launch -m prefdelta.train.kto CONFIG.yaml
```

KTO learns from single traces labelled desirable or undesirable, so it can use more of a
build than DPO: ``kto_source: pairs`` unpairs the delta-filtered pairs (chosen desirable,
rejected undesirable, each trace once); ``kto_source: traces`` labels every judged trace
by absolute score thresholds on a dimension (``desirable_min_score`` /
``undesirable_max_score``). With ``balance_weights`` (default) the minority class is
up-weighted so the weighted counts balance within TRL's recommended ratio [1, 4/3].
"""

from __future__ import annotations

from typing import Any

from trl import KTOConfig, KTOTrainer, ModelConfig

from prefdelta.train.common import TrainResult, finish, model_path_and_kwargs, script_main
from prefdelta.train.configs import KTODataArguments
from prefdelta.train.data import load_kto_selection
from prefdelta.train.model_card import CardInfo, CardMixin, peft_summary
from prefdelta.train.ref_cache import RefCacheLocation, RefCacheMixin

DATACLASSES = (KTODataArguments, KTOConfig, ModelConfig)


class PrefDeltaKTOTrainer(RefCacheMixin, CardMixin, KTOTrainer):
    """``KTOTrainer`` with the shared reference log-prob cache and our model card.

    The KL term's reference log-probs are cached too: each is the log-prob of one
    (prompt, mismatched completion) sequence, keyed like any other sequence.
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

    def _ref_columns(self) -> list[tuple[str, str, str]]:
        columns = [("ref_logps", "prompt_ids", "completion_ids")]
        if self.calculate_KL:
            columns.append(("ref_KL_logps", "prompt_ids", "KL_completion_ids"))
        return columns


def main(
    script_args: KTODataArguments, training_args: KTOConfig, model_args: ModelConfig
) -> TrainResult:
    """Select and label the traces, balance the weights, train, save the model and its card."""
    from trl import get_peft_config, get_quantization_config

    selection = load_kto_selection(script_args, seed=training_args.seed)
    if selection.weights is not None:
        training_args.desirable_weight, training_args.undesirable_weight = selection.weights
    model_path = model_path_and_kwargs(training_args, model_args)
    peft_config = get_peft_config(model_args)
    ref_cache = (
        RefCacheLocation.for_dataset(selection.source, script_args.ref_cache_dir)
        if script_args.ref_cache
        else None
    )
    card = CardInfo(
        trainer="kto",
        base_model=model_args.model_name_or_path,
        base_model_path=model_path,
        source=selection.source,
        selection=script_args.filter_summary(),
        counts=selection.counts,
        peft=peft_summary(peft_config),
        weights=(training_args.desirable_weight, training_args.undesirable_weight),
    )
    trainer = PrefDeltaKTOTrainer(
        model=model_path,
        args=training_args,
        train_dataset=selection.dataset,
        eval_dataset=selection.eval_dataset if training_args.eval_strategy != "no" else None,
        peft_config=peft_config,
        quantization_config=get_quantization_config(model_args),
        ref_cache=ref_cache,
        card_info=card,
    )
    return finish(trainer, training_args, selection.counts)


if __name__ == "__main__":
    raise SystemExit(script_main(DATACLASSES, main))
