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

from trl import KTOConfig, KTOTrainer, ModelConfig

from prefdelta.train.common import (
    PrefDeltaTrainerMixin,
    TrainResult,
    finish,
    script_main,
    trainer_kwargs,
)
from prefdelta.train.configs import KTODataArguments
from prefdelta.train.data import load_kto_selection
from prefdelta.train.model_card import CardMixin
from prefdelta.train.ref_cache import RefCacheMixin

DATACLASSES = (KTODataArguments, KTOConfig, ModelConfig)


class PrefDeltaKTOTrainer(PrefDeltaTrainerMixin, RefCacheMixin, CardMixin, KTOTrainer):
    """``KTOTrainer`` with the shared reference log-prob cache and our model card.

    The KL term's reference log-probs are cached too: each is the log-prob of one
    (prompt, mismatched completion) sequence, keyed like any other sequence.
    """

    def _ref_columns(self) -> list[tuple[str, str, str]]:
        columns = [("ref_logps", "prompt_ids", "completion_ids")]
        if self.calculate_KL:
            columns.append(("ref_KL_logps", "prompt_ids", "KL_completion_ids"))
        return columns


def main(
    script_args: KTODataArguments, training_args: KTOConfig, model_args: ModelConfig
) -> TrainResult:
    """Select and label the traces, balance the weights, train, save the model and its card."""
    selection = load_kto_selection(script_args, seed=training_args.seed)
    if selection.weights is not None:
        training_args.desirable_weight, training_args.undesirable_weight = selection.weights
    weights = (training_args.desirable_weight, training_args.undesirable_weight)
    trainer = PrefDeltaKTOTrainer(
        **trainer_kwargs("kto", selection, script_args, training_args, model_args, weights)
    )
    return finish(trainer, training_args, selection.counts)


if __name__ == "__main__":
    raise SystemExit(script_main(DATACLASSES, main))
