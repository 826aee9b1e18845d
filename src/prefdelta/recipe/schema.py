"""The build recipe's schema: the whole recipe and its sections.

A recipe is the whole declaration of a dataset: which prompts, which generators, how
traces are paired, how the judge scores them, how deltas aggregate and where the result
goes. Generators: :mod:`prefdelta.recipe.endpoints`; the judge: :mod:`prefdelta.recipe.judge`. Each field declares
whether it counts toward the recipe hash and the cache keys
(:mod:`prefdelta.recipe.identity`). Reading a file: :mod:`prefdelta.recipe.load`; checks
across sections and of the files a recipe names: :mod:`prefdelta.recipe.checks`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from prefdelta.locations import REPO_ID_PATTERN
from prefdelta.recipe.base import NAME_PATTERN, StrictModel
from prefdelta.recipe.checks import Declared, reference_problems
from prefdelta.recipe.endpoints import GeneratorConfig
from prefdelta.recipe.identity import content, identity_body, outside
from prefdelta.recipe.judge import JudgeConfig


class PromptsConfig(StrictModel):
    """Where the problems come from: a Hub dataset or a local jsonl/parquet/csv file."""

    dataset: str | None = content(None, description="Hub dataset id, e.g. open-r1/OpenR1-Math-220k")
    path: str | None = content(
        None, description="local .jsonl, .parquet or .csv file, relative to the recipe"
    )
    subset: str | None = content(None, description="dataset config name (Hub datasets only)")
    split: str = content("train", description="split to read")
    revision: str | None = content(None, description="dataset revision to pin (Hub datasets only)")
    column: str | None = content(
        "problem",
        min_length=1,
        description="column holding the prompt text; pairing strategy columns: a text or a "
        "conversation, and when left out the prompt is the conversation before the "
        "chosen side's final assistant turn",
    )
    reference_column: str | None = content(
        None, description="column with reference answers; enables the math-verify check"
    )
    limit: int | None = content(None, gt=0, description="use at most this many prompts")
    seed: int = content(0, ge=0, description="shuffle seed applied before `limit`")
    max_tokens: int | None = content(
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


class PairingConfig(StrictModel):
    """How traces become (chosen, rejected) pairs.

    ``generators``: the chosen generator's traces against each rejected generator's, for
    the same prompt (the generator-gap sweep). ``best-vs-worst``: within a pool, the trace
    with the highest aggregate judge score against the lowest (sample-level only).
    ``columns``: the pairs a preference dataset already holds, each row's chosen against its
    rejected as labelled; no generator is called (see :mod:`prefdelta.builders.columns`).
    """

    strategy: Literal["generators", "best-vs-worst", "columns"] = content(
        "generators",
        description="generator pairs, best-vs-worst within a pool, or a preference "
        "dataset's own pairs (columns)",
    )
    chosen: str | None = content(
        None,
        description="generators: the stronger generator; columns: the column of the chosen "
        "side (a text, or a conversation ending with the assistant's turn)",
    )
    rejected: list[str] = content(
        default_factory=list,
        description="generators: one or more weaker generators; columns: the column of the "
        "rejected side",
    )
    pool: list[str] = content(
        default_factory=list, description="best-vs-worst: generators to draw from"
    )
    unjudged: Literal["keep", "drop"] = content(
        "keep",
        description="generators: a pair whose traces the judge could not score: keep it "
        "(deltas null, statuses given; still a generator-level pair) or drop it (counted)",
    )
    ties: Literal["drop", "keep"] | None = content(
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
        if self.strategy == "columns":
            self._columns_shape()
        elif self.strategy == "generators":
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

    def _columns_shape(self) -> None:
        if self.chosen is None or len(self.rejected) != 1:
            raise ValueError(
                "strategy 'columns' needs `chosen` and `rejected`: the dataset's columns "
                "holding each pair's chosen and rejected side (one column each)"
            )
        if self.pool:
            raise ValueError("`pool` belongs to strategy 'best-vs-worst'")
        if self.chosen == self.rejected[0]:
            raise ValueError(f"column {self.chosen!r} cannot be both chosen and rejected")
        # the published pairs are the dataset's pairs, every one: selection is load_pairs's
        if self.unjudged == "drop" or self.ties == "drop":
            field = "unjudged" if self.unjudged == "drop" else "ties"
            raise ValueError(
                f"strategy 'columns' keeps every pair of the dataset: remove `{field}: drop` "
                "and filter when loading (load_pairs(..., agree_with_label=True), min_delta)"
            )

    @property
    def tie_policy(self) -> Literal["drop", "keep"]:
        if self.ties is not None:
            return self.ties
        return "drop" if self.strategy == "best-vs-worst" else "keep"

    @property
    def generator_names(self) -> list[str]:
        if self.strategy == "generators":
            return [self.chosen or "", *self.rejected]
        if self.strategy == "columns":
            return list(COLUMN_SIDES)
        return list(self.pool)

    @property
    def paired_generators(self) -> list[tuple[str, str]]:
        """(chosen, rejected) generator names of each family of pairs (every ordered pair of
        the pool for best-vs-worst)."""
        if self.strategy == "best-vs-worst":
            return [(a, b) for a in self.pool for b in self.pool]
        first, *rest = self.generator_names
        return [(first, r) for r in rest]


# strategy columns: the two sides, named as the dataset labels them
COLUMN_SIDES = ("chosen", "rejected")


def column_generators(pairing: Any) -> dict[str, dict[str, Any]]:
    """Strategy columns as the two ``dataset`` generators that read its sides, so that
    they are stored, judged and tabled like any read traces. ``pairing``: the raw mapping
    (a malformed one is PairingConfig's to report; its sides read as a placeholder)."""

    def column(value: Any) -> str:
        value = value[0] if isinstance(value, list) and len(value) == 1 else value
        return value if isinstance(value, str) and value else "?"

    columns = (column(pairing.get("chosen")), column(pairing.get("rejected")))
    return {
        side: {
            "model": f"column {name}",
            "backend": "dataset",
            "column": name,
            "description": f"the dataset's original {side} side (column {name!r})",
        }
        for side, name in zip(COLUMN_SIDES, columns, strict=True)
    }


class DeltaConfig(StrictModel):
    """How per-dimension deltas combine into the aggregate ``delta`` column."""

    aggregate: Literal["mean", "weighted"] | None = content(
        None, description="mean of dimensions, or weighted by `weights` (implied by weights)"
    )
    weights: dict[str, float] | None = content(None, description="dimension -> weight (missing: 0)")

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

    repo_id: str | None = outside(None, pattern=REPO_ID_PATTERN, description="org/name on the Hub")
    folder: str | None = outside(
        None, description="local folder, relative to the working directory"
    )
    private: bool = outside(True, description="create the Hub repo private (Hub only)")
    revision: str = outside("main", min_length=1, description="branch to commit to (Hub only)")
    tag: bool = outside(True, description="tag the commit with the recipe hash (Hub only)")
    test_size: float | None = outside(
        None, gt=0.0, lt=1.0, description="fraction of prompts held out as `test`"
    )
    license: str = outside("apache-2.0", description="license in the card metadata")
    sort_by: str = outside(
        "delta",
        description="delta column the pairs are stored in, highest first: filters on it "
        "read only the row groups they need",
    )
    overwrite: bool = outside(
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

    name: str = content(pattern=NAME_PATTERN, max_length=96, description="slug naming the build")
    description: str | None = outside(None, description="free text for the dataset card")
    prompts: PromptsConfig = content(description="where the problems come from")
    generators: dict[Annotated[str, Field(pattern=NAME_PATTERN)], GeneratorConfig] = content(
        description="name -> generator; pairing refers to these names (none with pairing "
        "strategy columns: its two sides are the generators `chosen` and `rejected`)"
    )
    pairing: PairingConfig = content(description="how traces become (chosen, rejected) pairs")
    judge: JudgeConfig = content(description="the LLM judge scoring every trace")
    delta: DeltaConfig = content(
        default_factory=DeltaConfig, description="how per-dimension deltas aggregate"
    )
    publish: PublishConfig | None = outside(
        None, description="optional target, published after a build"
    )
    output_dir: str | None = outside(None, description="build folder (default builds/<name>)")
    ray: bool = outside(False, description="run the pipelines on Ray (pip install prefdelta[ray])")

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

    @model_validator(mode="before")
    @classmethod
    def _pairs_from_columns(cls, data: Any) -> Any:
        """Strategy columns reads both sides from the dataset: its generators are implied
        (refused when declared), and its prompt may come from the conversation."""
        pairing = data.get("pairing") if isinstance(data, dict) else None
        prompts = data.get("prompts") if isinstance(data, dict) else None
        columns = isinstance(pairing, dict) and pairing.get("strategy") == "columns"
        if not columns:
            if isinstance(prompts, dict) and "column" in prompts and prompts["column"] is None:
                _refuse(
                    data,
                    ("prompts", "column"),
                    "expected the column holding the prompt text (only pairing strategy "
                    "'columns' may take its prompt from a conversation instead)",
                )
            return data
        if "generators" in data:
            _refuse(
                data,
                ("generators",),
                "pairing strategy 'columns' reads both sides from the dataset's columns and "
                "calls no generator: remove `generators` (or pair generators with strategy "
                "'generators')",
            )
        data = {**data, "generators": column_generators(pairing)}
        if isinstance(prompts, dict) and "column" not in prompts:
            data["prompts"] = {**prompts, "column": None}  # the prompt: the conversation's
        return data

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
            for _, message in reference_problems(self.declared()):
                raise ValueError(message)
        return self

    @model_validator(mode="after")
    def _cpus_need_ray(self) -> BuildRecipe:
        where = [(f"generators.{n}", g) for n, g in self.generators.items()]
        for name, endpoint in [*where, ("judge", self.judge)]:
            if not self.ray and endpoint.resources.cpus is not None:
                raise ValueError(
                    f"`{name}.resources.cpus` reserves CPU cores on Ray: set `ray: true`, "
                    "or remove it"
                )
        return self

    @property
    def unused_generators(self) -> list[str]:
        used = set(self.pairing.generator_names)
        return [g for g in self.generators if g not in used]

    def content_hash(self) -> str:
        """Stable hash of everything that defines the data: each field's declared identity
        says whether it counts (not where the dataset is published, nor what it costs). An
        option added after the first release counts only when set, so a recipe that does
        not use it keeps the hash (and the ``recipe-<hash12>`` tag, and the review
        dataset's name) it had before the option existed."""
        body = identity_body(self, "hash")
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def declared(self) -> Declared:
        """The names and files this recipe's cross-checks read."""
        endpoints = [(("generators", n), g.backend, g.model) for n, g in self.generators.items()]
        members = self.judge.panel.judges if self.judge.panel else []
        panel = [
            (("judge", "panel", "judges", i), j.backend or self.judge.backend, j.model)
            for i, j in enumerate(members)
            if j.model is not None
        ]
        return Declared(
            generators=list(self.generators),
            strategy=self.pairing.strategy,
            chosen=self.pairing.chosen,
            rejected=list(self.pairing.rejected),
            pool=list(self.pairing.pool),
            dimensions=self.judge.dimension_names,
            sort_by="delta" if self.publish is None else self.publish.sort_by,
            weights=list(self.delta.weights or {}),
            prompts_path=self.prompts.path,
            judge_template=self.judge.template,
            endpoints=[*endpoints, (("judge",), self.judge.backend, self.judge.model), *panel],
        )


def _refuse(data: Any, loc: tuple[str, ...], message: str) -> None:
    """A problem a before-validator finds, reported at the field it is about."""
    detail = InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=data)
    raise ValidationError.from_exception_data("BuildRecipe", [detail])
