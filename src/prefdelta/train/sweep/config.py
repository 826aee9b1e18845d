"""The sweep config (``prefdelta sweep CONFIG.yaml``): its schema, and loading it.

Apart from the running because it is what a sweep file may say: it is read, and refused
with ``file:line: field: message`` lines, before anything trains; the planning and the
evaluation then take the sections they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from prefdelta.loading import CORRECTNESS_DIRECTIONS
from prefdelta.recipe import GenerationParams, PromptsConfig, RecipeError, StrictModel
from prefdelta.train.configs import parse_generator_pairs

SELECTION_KEYS = (
    "top_fraction",
    "random_fraction",
    "num_pairs",
    "selection_seed",
    "dimension",
    "generator_pairs",
    "correctness",
)
Direction = Literal["both_correct", "chosen_only", "rejected_only", "both_wrong"]
assert set(Direction.__args__) == set(CORRECTNESS_DIRECTIONS)  # type: ignore[attr-defined]


class SweepError(RecipeError):
    """A sweep config or run that cannot go ahead; one line per problem."""


class DeltaSweep(StrictModel):
    """Experiment (a): top k% by a dimension's delta vs a random k%, at several k.

    (b), the generator pairs, is the config's ``generator_pairs``; (c) its
    ``correctness``."""

    dimension: str = Field("step_coherence", description="delta the top k% ranks by")
    fractions: list[float] = Field(
        default_factory=lambda: [0.3, 0.5, 1.0], description="k as fractions in (0, 1]"
    )
    random_seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        description="one random-k% run per seed; their mean and spread are reported",
    )

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < f <= 1 for f in v):
            raise ValueError(f"fractions must be a non-empty list of values in (0, 1], got {v}")
        return sorted(set(v))


class CorrectnessSweep(StrictModel):
    """Experiment (c): one run per verifier-correctness direction, all of one size."""

    directions: list[Direction] = Field(
        default_factory=lambda: list(CORRECTNESS_DIRECTIONS),
        min_length=1,
        description="both_correct, chosen_only (wrong->correct), rejected_only "
        "(correct->wrong), both_wrong",
    )
    pairs: int | None = Field(
        None,
        gt=0,
        description="pairs per run (a seeded draw); default: the smallest direction that "
        "has min_pairs",
    )
    min_pairs: int = Field(4, gt=0, description="a direction with fewer pairs is skipped")
    seed: int = Field(0, ge=0, description="seed of each direction's draw")

    @field_validator("directions")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class EvalSet(StrictModel):
    """One eval set: prompts with references, and how answers are scored against them."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="its label")
    prompts: PromptsConfig | None = Field(
        None,
        description="any prompts the build reads (Hub id or local file, reference_column "
        "required); default: the dataset's held-out split (eval.split)",
    )
    scorer: Literal["math", "multiple_choice"] = Field(
        "math", description="math-verify, or the option letter against the reference"
    )
    options_column: str | None = Field(
        None, description="multiple_choice: a list column of options, shown as A. ... B. ..."
    )
    prompt_template: str | None = Field(None, description="default: eval.prompt_template")
    limit: int | None = Field(None, gt=0, description="default: eval.limit")

    @model_validator(mode="after")
    def _shape(self) -> EvalSet:
        if self.prompts is not None and self.prompts.reference_column is None:
            raise ValueError("prompts.reference_column: required to score answers")
        if self.options_column is not None and self.scorer != "multiple_choice":
            raise ValueError("options_column belongs to scorer multiple_choice")
        if self.prompts is None and self.options_column is not None:
            raise ValueError("options_column needs `prompts` (the held-out split has none)")
        return self


class EvalConfig(StrictModel):
    """The eval sets, and how every model (the base model too) answers them."""

    sets: list[EvalSet] = Field(
        default_factory=lambda: [EvalSet(name="held_out")],
        min_length=1,
        description="each reported apart; default one set, the dataset's held-out split",
    )
    split: str = Field("test", description="the pairs split a set without `prompts` holds out")
    exclude_training_prompts: bool = Field(
        True, description="drop prompts that occur in the training split"
    )
    limit: int | None = Field(None, gt=0, description="at most this many prompts per set")
    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="engine that runs each model"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    tensor_parallel_size: int = Field(1, gt=0, description="GPUs per model (vllm)")
    batch_size: int = Field(8, gt=0)
    generation: GenerationParams = Field(
        default_factory=lambda: GenerationParams(temperature=0.0, max_new_tokens=512)
    )
    system_prompt: str | None = None
    prompt_template: str = Field("{prompt}", description="as in build recipes")
    bootstrap_seed: int = Field(0, ge=0, description="seed of the intervals' resampling")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "prompts" in data:
            raise ValueError(
                "`eval.prompts` is now one entry of `eval.sets`: "
                "sets: [{name: ..., prompts: {...}, scorer: math}]"
            )
        return data

    @field_validator("sets")
    @classmethod
    def _unique(cls, v: list[EvalSet]) -> list[EvalSet]:
        names = [s.name for s in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"eval set names must be unique; repeated: {', '.join(twice)}")
        return v


class LaunchConfig(StrictModel):
    """How the training runs start: each as its own process, side by side on the devices.

    Without ``launch`` every run trains inside the ``prefdelta sweep`` process, one after
    another. With it, each run is ``python -m prefdelta.train.dpo runs/<name>/train.yaml``
    (or ``accelerate launch --config_file ...`` with ``accelerate_config``) with its output
    in ``runs/<name>/train.log``; one run per ``devices`` entry trains at a time, with
    ``CUDA_VISIBLE_DEVICES`` set to that entry.
    """

    devices: list[str] | None = Field(
        None,
        min_length=1,
        description="one run at a time per entry, its CUDA_VISIBLE_DEVICES: `[0, 1, 2, 3]` "
        "trains four runs side by side; `['0,1', '2,3']` two runs of two GPUs each; "
        "default: one run at a time, devices as inherited",
    )
    accelerate_config: str | None = Field(
        None,
        description="start each run with `accelerate launch --config_file` this file "
        "(relative to the sweep file: ../accelerate/multi_gpu.yaml from recipes/train/)",
    )
    num_processes: int | None = Field(
        None, gt=0, description="accelerate's --num_processes per run (default: the config's)"
    )
    retries: int = Field(
        1, ge=0, description="a crashed run is retried alone (nothing else running) this often"
    )

    @field_validator("devices", mode="before")
    @classmethod
    def _device_names(cls, v: Any) -> Any:
        if isinstance(v, list):
            out = []
            for d in v:
                if isinstance(d, bool) or not isinstance(d, int | str):
                    raise ValueError(f"expected GPU indices like 0 or '0,1', got {d!r}")
                name = str(d).replace(" ", "")
                if not name or not all(p.isdigit() for p in name.split(",")):
                    raise ValueError(f"expected GPU indices like 0 or '0,1', got {d!r}")
                out.append(name)
            return out
        return v

    @field_validator("devices")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            used = [g for d in v for g in d.split(",")]
            twice = sorted({g for g in used if used.count(g) > 1})
            if twice:
                raise ValueError(f"GPU {', '.join(twice)} is in two slots")
        return v

    @model_validator(mode="after")
    def _accelerate(self) -> LaunchConfig:
        if self.num_processes is not None and self.accelerate_config is None:
            raise ValueError("num_processes goes with accelerate_config (accelerate launch)")
        return self


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
    correctness: CorrectnessSweep | None = Field(
        None, description="experiment (c); needs verifier results (references) in the build"
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)
    launch: LaunchConfig | None = Field(
        None, description="train each run as its own process, side by side (see below)"
    )

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
        if self.delta is None and self.generator_pairs is None and self.correctness is None:
            raise ValueError("nothing to sweep: set `delta`, `generator_pairs` or `correctness`")
        return self


def load_sweep(path: str | Path) -> tuple[SweepConfig, Path]:
    """Validate a sweep file; problems come back as ``file:line: field: message`` lines."""
    from prefdelta.recipe import describe_recipe_error
    from prefdelta.recipe.errors import LocatedYaml, dotted_path

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
    if config.launch is not None and config.launch.accelerate_config is not None:
        accel = (p.parent / config.launch.accelerate_config).resolve()
        if not accel.is_file():
            where = doc.line_of(("launch", "accelerate_config"))
            raise SweepError([f"{p}:{where}: launch.accelerate_config: file not found: {accel}"])
    return config, train
