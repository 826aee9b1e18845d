"""Training configs for tests: TRL on CPU, a few steps, nothing saved or reported.

Import what a test module uses: ``from support.train_fixtures import BATCH, dpo_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import DPOConfig, KTOConfig

BATCH = 4


def _cpu_training(out: Path, **over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = dict(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        max_steps=4,
        per_device_train_batch_size=BATCH,
        learning_rate=5e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        max_length=256,
        seed=0,
        dataloader_pin_memory=False,
    )
    kw.update(over)
    return kw


def dpo_config(out: Path, **over: Any) -> DPOConfig:
    return DPOConfig(**_cpu_training(out, **over))


def kto_config(out: Path, **over: Any) -> KTOConfig:
    return KTOConfig(**_cpu_training(out, **over))
