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
padding; ``length_grouping: false`` restores random batches); the model card records the
selection (:mod:`prefdelta.train.model_card`).
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
from prefdelta.train.configs import DataArguments
from prefdelta.train.data import load_dpo_selection
from prefdelta.train.model_card import CardMixin
from prefdelta.train.ref_cache import RefCacheMixin

DATACLASSES = (DataArguments, DPOConfig, ModelConfig)


class PrefDeltaDPOTrainer(PrefDeltaTrainerMixin, RefCacheMixin, CardMixin, DPOTrainer):
    """``DPOTrainer`` with the shared reference log-prob cache, length grouping and our card.

    ``length_grouping``: transformers' ``LengthGroupedSampler`` over the longest sequence
    of each pair, so a batch pads to similar lengths.
    """

    def __init__(self, *args: Any, length_grouping: bool = False, **kwargs: Any) -> None:
        self._length_grouping = length_grouping
        self._train_lengths: list[int] | None = None
        super().__init__(*args, **kwargs)

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

        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedSampler(batch, lengths=lengths)


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
