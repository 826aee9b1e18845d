"""The recipe's models: what a generator and the judge are, and how they decode.

A generator and the judge share :class:`ModelEndpoint`: a model behind one of the
backends, and how it is called. Each field declares its cache identity
(:mod:`prefdelta.recipe.identity`).

Secrets never live in a recipe: ``api_key`` only accepts an environment reference such as
``${OPENAI_API_KEY}``, kept as written and resolved when a model is called.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import field_validator, model_validator

from prefdelta.backends import Backend, calls_model, is_api
from prefdelta.recipe.base import StrictModel
from prefdelta.recipe.identity import content, later, operational, outside

_SECRET_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


class GenerationParams(StrictModel):
    """Decoding parameters passed to the backend."""

    temperature: float = content(0.7, ge=0.0, le=5.0, description="0 means greedy decoding")
    top_p: float = content(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_new_tokens: int = content(1024, gt=0, le=1_000_000, description="token budget per trace")


def _secret_ref(value: str | None) -> str | None:
    if value is not None and not _SECRET_REF.match(value):
        raise ValueError(
            "api_key must be an environment reference like ${OPENAI_API_KEY}, "
            "never the secret itself"
        )
    return value


class Price(StrictModel):
    """What a model costs, per million tokens (any currency: estimates use it as given)."""

    input_per_mtok: float = outside(ge=0, allow_inf_nan=False, description="per 1M prompt tokens")
    output_per_mtok: float = outside(
        ge=0, allow_inf_nan=False, description="per 1M generated tokens"
    )


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


class Resources(StrictModel):
    """How many copies of a model's step run, and what each copy asks for. The build maps
    it to distilabel's ``StepResources``; on Ray each copy is an actor placed on a node
    that has what it asks for."""

    replicas: int = outside(
        1, gt=0, le=256, description="copies of the step, each taking batches of its own"
    )
    gpus: int | None = outside(
        None,
        gt=0,
        le=1024,
        description="GPUs per copy (local and vllm backends); vllm: tensor_parallel_size, "
        "its default",
    )
    cpus: int | None = outside(
        None, gt=0, le=4096, description="CPU cores Ray reserves per copy (with `ray: true`)"
    )


class ModelEndpoint(StrictModel):
    """What a generator and the judge share: a model behind one of the backends."""

    model: str = content(min_length=1, description="model id, local path, or .gguf file")
    backend: Backend = content(
        description="the engine that runs the model; dataset: a generator whose traces "
        "are a column of the prompts table (`model` then names what wrote them)"
    )
    base_url: str | None = operational(None, description="server URL (openai, inference-endpoints)")
    api_key: str | None = operational(
        None, description="environment reference, e.g. ${OPENAI_API_KEY}"
    )
    batch_size: int = operational(8, gt=0, le=4096, description="requests per batch")
    concurrency: int = operational(8, gt=0, le=1024, description="parallel requests (API backends)")
    request_timeout: float | None = operational(
        None,
        gt=0,
        le=86_400,
        description="seconds one request may take (API backends); default "
        f"{REQUEST_TIMEOUT_S}, or 1 s per {TOKENS_PER_TIMEOUT_S} tokens of "
        "generation.max_new_tokens when that is longer",
    )
    request_retries: int = operational(
        6, ge=0, le=50, description="retries of a failed request, with backoff (API backends)"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = content(
        "auto", description="weights dtype (local backends)"
    )
    tensor_parallel_size: int = content(1, gt=0, description="GPUs per model (vllm)")
    price: Price | None = outside(
        None, description="{input_per_mtok, output_per_mtok}: inspect estimates the cost"
    )
    resources: Resources = outside(
        default_factory=Resources,
        description="{replicas, gpus, cpus}: copies of this model's step and what each needs",
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
        self._resources_fit_backend()
        return self

    def _resources_fit_backend(self) -> None:
        gpus, cpus = self.resources.gpus, self.resources.cpus
        if gpus is not None and is_api(self.backend):
            raise ValueError(
                f"`resources.gpus`: backend {self.backend!r} calls a server and needs no GPU; "
                "remove it"
            )
        if self.backend != "vllm":
            return
        if gpus is not None and gpus != self.tensor_parallel_size:
            raise ValueError(
                f"`resources.gpus` is {gpus} but `tensor_parallel_size` is "
                f"{self.tensor_parallel_size}: a vllm model runs on exactly tensor_parallel_size "
                "GPUs (its engine fails to start on fewer); remove `resources.gpus`"
            )
        if cpus is not None:
            raise ValueError(
                "`resources.cpus`: on Ray a vllm step is placed with one CPU and "
                "tensor_parallel_size GPUs (distilabel's placement group); remove it"
            )


# a `dataset` generator's columns: the fields a model generator never has (left out of
# what its sampling seed hashes, so that adding them changed no seed)
GIVEN_FIELDS = ("column", "correct_column", "finish_column", "tokens_column")

# what only a model that is called uses: a `dataset` generator refuses them rather than
# ignore them (its traces were decoded however they were, whatever `generation` says)
MODEL_ONLY_FIELDS = frozenset(
    {
        "base_url",
        "api_key",
        "batch_size",
        "concurrency",
        "request_timeout",
        "request_retries",
        "dtype",
        "tensor_parallel_size",
        "price",
        "resources",
        "generation",
        "system_prompt",
        "prompt_template",
    }
)


class GeneratorConfig(ModelEndpoint):
    """One named generator: a model and how it is prompted and decoded."""

    generation: GenerationParams = content(default_factory=GenerationParams)
    system_prompt: str | None = content(None, description="system message, if any")
    prompt_template: str = content(
        "{prompt}", description="user message; `{prompt}` is replaced by the problem"
    )
    samples_per_prompt: int = content(1, gt=0, le=64, description="traces per prompt")
    description: str | None = operational(
        None, description="what this generator stands for (shown in the card)"
    )
    column: str | None = later(
        None,
        description="backend dataset: the prompts table's column holding this generator's "
        "trace(s), a text or a list of texts (one trace each; `samples_per_prompt` takes "
        "the first k, and a list's every element when not given)",
    )
    correct_column: str | None = later(
        None,
        description="backend dataset: a bool (or list-of-bool) column aligned with the "
        "traces, kept as each trace's `correct`",
    )
    finish_column: str | None = later(
        None, description="backend dataset: the finish reason of each trace (text or list)"
    )
    tokens_column: str | None = later(
        None, description="backend dataset: the output tokens of each trace (int or list)"
    )

    @property
    def given_columns(self) -> dict[str, str]:
        """The prompts table's columns this generator reads, by the field that names them."""
        return {f: getattr(self, f) for f in GIVEN_FIELDS if getattr(self, f) is not None}

    @model_validator(mode="after")
    def _dataset_fields(self) -> GeneratorConfig:
        if calls_model(self.backend):
            if self.given_columns:
                raise ValueError(
                    f"backend {self.backend!r} generates its traces: remove "
                    f"`{'`, `'.join(self.given_columns)}` (for backend 'dataset', whose traces "
                    "are read from the prompts table)"
                )
            return self
        if self.column is None:
            raise ValueError(
                "backend 'dataset' needs `column`: the prompts table's column holding the traces"
            )
        refused = sorted(self.model_fields_set & MODEL_ONLY_FIELDS)
        if refused:
            raise ValueError(
                f"backend 'dataset' reads its traces as given and calls no model: remove "
                f"`{'`, `'.join(refused)}` (for generators that call a model)"
            )
        return self

    @field_validator("prompt_template")
    @classmethod
    def _has_placeholder(cls, v: str) -> str:
        if "{prompt}" not in v:
            raise ValueError("prompt_template must contain the placeholder {prompt}")
        return v
