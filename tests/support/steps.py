"""distilabel steps that only tests run.

No ``from __future__ import annotations`` here: distilabel finds a step's input by the
evaluated annotation of ``process`` (``StepInput``).
"""

import gc
import os

from distilabel.steps import Step, StepInput
from distilabel.typing import StepOutput


class FrozenObjects(Step):
    """Notes, per batch, its process and how many objects that process's collector holds
    frozen (a line ``pid count`` appended to the file ``out``)."""

    out: str

    def process(self, inputs: StepInput) -> StepOutput:  # type: ignore[override]
        with open(self.out, "a") as f:
            f.write(f"{os.getpid()} {gc.get_freeze_count()}\n")
        yield inputs
