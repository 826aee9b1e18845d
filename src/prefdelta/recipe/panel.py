"""A judge panel: several judges score every trace, and their scores combine.

Why a panel: a second judge is the cheapest check of the first where no reference answers
exist, and a panel of smaller judges can match a single large one with less
self-preference. It is declared inside the ``judge`` block, which keeps what every judge
of the panel shares (dimensions, scale, samples, show_reference) and is the default of
everything a member does not override::

    judge:
      model: my-judge
      backend: openai
      dimensions: [factuality, step_coherence]
      panel:
        combine: mean
        judges:
          - {name: plain}
          - {name: terse, system_prompt: "Be terse."}
          - {name: other, model: another-judge}

A member that overrides nothing is the ``judge`` block itself, with the same cache key:
turning a single judge into a panel re-asks only the judges added. Each member's judgments
are stored under its own fingerprint, so adding a judge asks only that judge.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from prefdelta.backends import Backend
from prefdelta.recipe.base import DIMENSION_NAME_PATTERN, StrictModel, refuse_repeats
from prefdelta.recipe.identity import content, operational

__all__ = ["ENDPOINT_FIELDS", "GenerationOverride", "PanelConfig", "PanelJudge", "yaml_off"]

# a member on another backend inherits none of these from the judge block
ENDPOINT_FIELDS = frozenset({"base_url", "api_key", "response_format"})


def yaml_off(v: Any) -> Any:
    """``structured``: YAML reads a bare ``off`` as false (and ``on`` as true)."""
    return {False: "off", True: "auto"}.get(v, v) if isinstance(v, bool) else v


class GenerationOverride(StrictModel):
    """The decoding parameters a panel member changes; the rest are the judge block's."""

    temperature: float | None = content(None, ge=0.0, le=5.0)
    top_p: float | None = content(None, gt=0.0, le=1.0)
    max_new_tokens: int | None = content(None, gt=0, le=1_000_000)


class PanelJudge(StrictModel):
    """One judge of a panel: a name, and what it changes of the ``judge`` block."""

    name: str = content(
        pattern=DIMENSION_NAME_PATTERN,
        max_length=32,
        description="names the judge's columns (`scores_<name>`, ...) and its rows in reports",
    )
    model: str | None = content(None, min_length=1, description="default: the judge block's")
    backend: Backend | None = content(None, description="default: the judge block's")
    base_url: str | None = operational(None, description="default: the judge block's")
    api_key: str | None = operational(
        None, description="environment reference, e.g. ${KEY}; default: the judge block's"
    )
    batch_size: int | None = operational(
        None, gt=0, le=4096, description="default: the judge block's"
    )
    concurrency: int | None = operational(
        None, gt=0, le=1024, description="default: the judge block's"
    )
    generation: GenerationOverride | None = content(
        None, description="{temperature, top_p, max_new_tokens}: each default the judge block's"
    )
    system_prompt: str | None = content(
        None, description="a system message for this judge; default: the judge block's"
    )
    template: str | None = content(
        None, description="Jinja file for this judge's user turn; default: the judge block's"
    )
    scoring: Literal["expected", "sampled"] | None = content(
        None, description="default: the judge block's"
    )
    structured: Literal["auto", "off"] | None = content(
        None, description="default: the judge block's"
    )
    response_format: Literal["auto", "json_schema", "json_object"] | None = operational(
        None, description="default: the judge block's"
    )

    @field_validator("structured", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return yaml_off(v)


class PanelConfig(StrictModel):
    """Several judges, each scoring every trace; the dimension score combines theirs."""

    judges: list[PanelJudge] = content(
        description="two or more judges, each {name, and what it changes of the judge block}"
    )
    combine: Literal["mean", "median"] = content(
        "mean",
        description="how the judges' scores of a dimension combine into the score the "
        "deltas use (a trace is scored when every judge scored it)",
    )

    @field_validator("judges")
    @classmethod
    def _judges_ok(cls, v: list[PanelJudge]) -> list[PanelJudge]:
        if len(v) < 2:
            raise ValueError("a panel needs at least two judges (one judge: leave `panel` out)")
        refuse_repeats([j.name for j in v], "judge name")
        return v
