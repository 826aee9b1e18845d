"""DPO on a delta-filtered split of a published prefdelta dataset (TRL's dpo.py, plus the filter).

```bash
prefdelta train recipes/train/dpo-demo.yaml                     # in-process, one device
accelerate launch -m prefdelta.train.dpo recipes/train/dpo-paper.yaml   # any accelerate config
accelerate launch -m prefdelta.train.dpo CONFIG.yaml --top_fraction 0.5  # flags override the file
```

Differences from ``trl/scripts/dpo.py``, each for the paper's experiments: the dataset is
selected by :class:`~prefdelta.train.configs.DataArguments`; reference log-probs come from
a cache shared by every run on the same dataset revision and reference model
(:mod:`prefdelta.train.ref_cache`); pairs of similar length are batched together (less
padding; ``length_grouping: false`` restores random batches); ``padding_free: true``, which
TRL 1.16 switches off for DPO, packs each batch's sequences end to end
(:mod:`prefdelta.train.packing`);
the model card records the selection (:mod:`prefdelta.train.model_card`).
"""

from __future__ import annotations

from typing import Any

from trl import DPOConfig, DPOTrainer, ModelConfig

from prefdelta.train.common import (
    PrefDeltaTrainerMixin,
    TrainResult,
    finish,
    script_main,
    trainer_kwargs,
)
from prefdelta.train.configs import DataArguments, TrainConfigError
from prefdelta.train.data import load_dpo_selection
from prefdelta.train.model_card import CardMixin
from prefdelta.train.ref_cache import RefCacheMixin

DATACLASSES = (DataArguments, DPOConfig, ModelConfig)


class PrefDeltaDPOTrainer(PrefDeltaTrainerMixin, RefCacheMixin, CardMixin, DPOTrainer):
    """``DPOTrainer`` with the shared reference log-prob cache, length grouping, packing
    and our card.

    ``length_grouping``: transformers' ``LengthGroupedSampler`` over the longest sequence
    of each pair, so a batch pads to similar lengths. ``args.padding_free``: the batch's
    sequences run packed end to end (the reference pass too), with TRL's loss unchanged.
    """

    def __init__(self, *args: Any, length_grouping: bool = False, **kwargs: Any) -> None:
        self._length_grouping = length_grouping
        self._train_lengths: list[int] | None = None
        training_args = kwargs.get("args")
        self._padding_free = bool(getattr(training_args, "padding_free", False))
        if not self._padding_free:
            super().__init__(*args, **kwargs)
            return
        _check_packable(kwargs.get("peft_config"))
        # TRL 1.16 would warn and switch it off; the packing here replaces its own
        training_args.padding_free = False
        try:
            super().__init__(*args, **kwargs)
        finally:
            training_args.padding_free = True  # the record says what ran
        self._install_packing()

    def _install_packing(self) -> None:
        """Pack the policy's (and a kept reference's) fused forward; after TRL adds it."""
        if not self._padding_free:
            return
        from accelerate.utils import is_peft_model

        from prefdelta.train.packing import pack_sequences

        pack_sequences(self.model.get_base_model() if is_peft_model(self.model) else self.model)
        if self.ref_model is not None:
            pack_sequences(self.ref_model)

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        self._install_packing()  # TRL runs the reference pass from inside its __init__
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def _ref_columns(self) -> list[tuple[str, str, str]]:
        return [
            ("ref_chosen_logps", "prompt_ids", "chosen_ids"),
            ("ref_rejected_logps", "prompt_ids", "rejected_ids"),
        ]

    def _prepare_dataset(
        self, dataset: Any, processing_class: Any, args: Any, dataset_name: str
    ) -> Any:
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if self._length_grouping and dataset_name == "train":
            cap = args.max_length or 1 << 62
            self._train_lengths = [
                min(cap, len(p) + max(len(c), len(r)))
                for p, c, r in zip(
                    dataset["prompt_ids"],
                    dataset["chosen_ids"],
                    dataset["rejected_ids"],
                    strict=True,
                )
            ]
        return dataset

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = self._train_lengths
        if not self._length_grouping or lengths is None or len(lengths) != len(dataset):
            return super()._get_train_sampler(train_dataset)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        # Group by the global batch (every process's share of one optimizer step): each
        # process then takes its share of the same sorted megabatches, so N processes
        # train on the batches one process would with N times the per-device batch.
        args = self.args
        batch = args.train_batch_size * args.world_size * args.gradient_accumulation_steps
        return LengthGroupedSampler(batch, lengths=lengths)


def _check_packable(peft_config: Any) -> None:
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        raise TrainConfigError(
            "padding_free: prompt-learning PEFT methods prepend virtual tokens to every "
            "sequence, which a packed row cannot hold; use LoRA or set padding_free: false"
        )


def main(
    script_args: DataArguments, training_args: DPOConfig, model_args: ModelConfig
) -> TrainResult:
    """Select the pairs, train, save the model and its card (and push when asked)."""
    selection = load_dpo_selection(script_args)
    trainer = PrefDeltaDPOTrainer(
        **trainer_kwargs("dpo", selection, script_args, training_args, model_args),
        length_grouping=script_args.length_grouping,
    )
    return finish(trainer, training_args, selection.counts)


if __name__ == "__main__":
    raise SystemExit(script_main(DATACLASSES, main))
