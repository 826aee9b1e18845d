"""The sweep config (``prefdelta sweep CONFIG.yaml``): its schema, and loading it.

Apart from the running because it is what a sweep file may say: it is read, and refused
with ``file:line: field: message`` lines, before anything trains; the planning and the
evaluation then take the sections they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from prefdelta.recipe import GenerationParams, PromptsConfig, RecipeError, StrictModel
from prefdelta.train.configs import parse_generator_pairs

SELECTION_KEYS = (
    "top_fraction",
    "random_fraction",
    "selection_seed",
    "dimension",
    "generator_pairs",
)


class SweepError(RecipeError):
    """A sweep config or run that cannot go ahead; one line per problem."""


class DeltaSweep(StrictModel):
    """Experiment (a): top k% by a dimension's delta vs a random k%, at several k."""

    dimension: str = Field("step_coherence", description="delta the top k% ranks by")
    fractions: list[float] = Field(
        default_factory=lambda: [0.3, 0.5, 1.0], description="k as fractions in (0, 1]"
    )
    random_seeds: list[int] = Field(
        default_factory=lambda: [0], description="one random-k% run per seed"
    )

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < f <= 1 for f in v):
            raise ValueError(f"fractions must be a non-empty list of values in (0, 1], got {v}")
        return sorted(set(v))


class EvalConfig(StrictModel):
    """Held-out prompts, and how every model answers them."""

    prompts: PromptsConfig | None = Field(
        None, description="held-out prompts with references (default: the dataset's split)"
    )
    split: str = Field("test", description="without `prompts`: the pairs split held out")
    exclude_training_prompts: bool = Field(
        True, description="drop prompts that occur in the training split"
    )
    limit: int | None = Field(None, gt=0, description="at most this many prompts")
    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="engine that runs each model"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(8, gt=0)
    generation: GenerationParams = Field(
        default_factory=lambda: GenerationParams(temperature=0.0, max_new_tokens=512)
    )
    system_prompt: str | None = None
    prompt_template: str = Field("{prompt}", description="as in build recipes")
    include_base: bool = Field(True, description="also evaluate the untrained base model")


class SweepConfig(StrictModel):
    """One sweep: a base training config, the experiments, the evaluation."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    train: str = Field(description="training config (YAML), relative to this file")
    output_dir: str | None = Field(None, description="default outputs/sweeps/<name>")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="training config keys set for every run"
    )
    delta: DeltaSweep | None = Field(default_factory=DeltaSweep)
    generator_pairs: list[Any] | Literal["all"] | None = Field(
        "all", description="`all` (every pair in the data), a list of chosen:rejected, or null"
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("generator_pairs")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        return parse_generator_pairs(v) if isinstance(v, list) else v

    @field_validator("overrides")
    @classmethod
    def _no_selection(cls, v: dict[str, Any]) -> dict[str, Any]:
        clash = [k for k in (*SELECTION_KEYS, "output_dir") if k in v]
        if clash:
            raise ValueError(f"the sweep sets {', '.join(clash)} itself; remove from overrides")
        return v

    @model_validator(mode="after")
    def _something(self) -> SweepConfig:
        if self.delta is None and self.generator_pairs is None:
            raise ValueError("nothing to sweep: set `delta` and/or `generator_pairs`")
        return self


def load_sweep(path: str | Path) -> tuple[SweepConfig, Path]:
    """Validate a sweep file; problems come back as ``file:line: field: message`` lines."""
    from prefdelta.recipe import describe_recipe_error
    from prefdelta.recipe_errors import LocatedYaml, dotted_path

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError([f"{p}: no such sweep config"]) from None
    try:
        doc = LocatedYaml(text, str(p))
    except RecipeError as exc:
        raise SweepError(exc.lines) from None
    try:
        config = SweepConfig.model_validate(doc.data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc, msg = describe_recipe_error(err)
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc[-1]!r}"
            lines.append(f"{p}:{doc.line_of(loc)}: {dotted_path(loc)}: {msg}")
        raise SweepError(lines) from None
    train = (p.parent / config.train).resolve()
    if not train.is_file():
        raise SweepError([f"{p}:{doc.line_of(('train',))}: train: file not found: {train}"])
    return config, train
