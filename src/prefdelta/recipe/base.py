"""The base of every recipe model, and the patterns its names follow.

:class:`StrictModel` is shared with the sweep configs (:mod:`prefdelta.train.sweep.config`),
which are validated and reported the same way.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from prefdelta.locations import REPO_ID_PATTERN

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
DIMENSION_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default. A number
    is never given as true/false (pydantic would read ``limit: true`` as 1), and no float
    is infinite or NaN."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, bool) and info.field_name in cls.model_fields:
            allowed = set(typing.get_args(cls.model_fields[info.field_name].annotation))
            allowed.add(cls.model_fields[info.field_name].annotation)
            if bool not in allowed and allowed & {int, float}:
                raise ValueError(f"expected a number, got {str(v).lower()}")
        return v


def refuse_repeats(names: list[str], what: str) -> None:
    """One rule for every list of names in a recipe: each name once (``what``: what the
    names are, for the error)."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} listed twice: {', '.join(dupes)}")


# what each regex of a `pattern=` field means, in the words of an error
PATTERN_MEANING = {
    NAME_PATTERN: "expected lowercase letters, digits, '.', '_' and '-', starting with a "
    "letter or digit",
    DIMENSION_NAME_PATTERN: "expected a snake_case name (lowercase letters, digits, '_')",
    REPO_ID_PATTERN: "expected a Hub repo id like 'org/name'",
}
