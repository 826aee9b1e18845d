"""The judge's recipe block: the dimensions it scores and how it is asked.

:class:`JudgeConfig` is a :class:`~prefdelta.recipe.endpoints.ModelEndpoint` (a model behind
a backend) plus what makes a judgment: the scale, the dimensions and their rubrics, how
answers are read (structured output, expected scores), what the judge reads of a trace
(:mod:`~prefdelta.recipe.reads`), whether it reasons first
(:mod:`~prefdelta.recipe.reasoning`) and whether it sits on a panel
(:mod:`~prefdelta.recipe.panel`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ValidationError, field_validator, model_validator

from prefdelta.backends import calls_model, is_api
from prefdelta.recipe.base import DIMENSION_NAME_PATTERN, StrictModel, refuse_repeats
from prefdelta.recipe.endpoints import GenerationParams, ModelEndpoint
from prefdelta.recipe.identity import content, later, operational
from prefdelta.recipe.judgment import min_structured_tokens
from prefdelta.recipe.panel import ENDPOINT_FIELDS, PanelConfig, yaml_off
from prefdelta.recipe.reads import JudgeReads
from prefdelta.recipe.reasoning import (
    DEFAULT_REASONING_BUDGET,
    Reasoning,
    ReasoningMode,
    resolve_reasoning,
)
from prefdelta.recipe.rubrics import BUILTIN_RUBRICS

__all__ = ["REASONING_FIELDS", "Dimension", "JudgeConfig"]


class Dimension(StrictModel):
    """A judged dimension: a snake_case name and the rubric the judge applies."""

    name: str = content(pattern=DIMENSION_NAME_PATTERN, max_length=48)
    rubric: str = content(min_length=10)


def _dimension_item(item: Any) -> Any:
    if isinstance(item, str):
        if item not in BUILTIN_RUBRICS:
            raise ValueError(
                f"unknown dimension {item!r}; built-in dimensions are "
                f"{', '.join(BUILTIN_RUBRICS)} (or give a custom one as {{name, rubric}})"
            )
        return {"name": item, "rubric": BUILTIN_RUBRICS[item]}
    return item


# the judge's reasoning options, which count as decided (JudgeConfig.thinking), not as written
REASONING_FIELDS = ("reasoning", "reasoning_budget", "reasoning_parser")


class JudgeConfig(ModelEndpoint):
    """The LLM judge: one call per trace scores every dimension."""

    generation: GenerationParams = content(
        default_factory=lambda: GenerationParams(temperature=0.0, max_new_tokens=1024)
    )
    scale: tuple[int, int] = content((1, 5), description="[low, high] integer score range")
    dimensions: list[Annotated[Dimension, BeforeValidator(_dimension_item)]] = content(
        default_factory=lambda: [Dimension(name=n, rubric=r) for n, r in BUILTIN_RUBRICS.items()],
        description="built-in names and/or custom {name, rubric}",
    )
    samples: int = content(1, gt=0, le=32, description=">1: repeated judgments, scores averaged")
    max_retries: int = operational(2, ge=0, le=10, description="re-asks for an unusable judgment")
    structured: Literal["auto", "off"] = content(
        "auto", description="auto: the decoder enforces the answer's JSON schema; off: prose"
    )
    scoring: Literal["expected", "sampled"] = content(
        "expected",
        description="expected: probability-weighted score where the backend gives token "
        "probabilities; sampled: the integer written",
    )
    response_format: Literal["auto", "json_schema", "json_object"] = operational(
        "auto",
        description="openai: how the schema is sent; auto tries json_schema, then json_object",
    )
    template: str | None = later(
        None,
        description="Jinja file (relative to the recipe) for the judge's user turn, in place "
        "of the built-in one; `prefdelta inspect --judge-prompt` shows what it renders",
    )
    system_prompt: str | None = later(None, description="a system message for the judge")
    reads: JudgeReads | None = later(
        None,
        description="what the judge reads of each trace: whole, reasoning or answer, or "
        "{part, max_tokens, marker, over_context, context_tokens, tokenizer}; unset: the "
        "whole trace, and one too long for a local or vllm judge's context is refused, never "
        "sent to fail (an API judge is measured only with context_tokens)",
    )
    show_reference: bool | None = later(
        None,
        description="true: the judge's prompt includes the prompt's reference answer where "
        "one exists (the verifier AUC then no longer measures the judge independently)",
    )
    panel: PanelConfig | None = later(
        None,
        description="several judges: {judges: [{name, and what each changes of this "
        "block}], combine: mean | median}; see docs/judge-panel.md",
    )

    @field_validator("show_reference")
    @classmethod
    def _false_is_unset(cls, v: bool | None) -> bool | None:
        """``false`` is the default: it keeps the keys of a recipe that does not set it."""
        return v or None

    reasoning: ReasoningMode | None = later(
        None,
        description="auto (when unset): on for a model of a family known to reason "
        "(DeepSeek-R1 and its distills, QwQ, Qwen3 but not its -Instruct releases, GPT-OSS), "
        "off otherwise and on inference-endpoints (its grammar holds from the first token); "
        "on: the judge reasons before the answer's schema applies; off: the schema applies "
        "from the first token",
    )
    reasoning_budget: int | None = later(
        None,
        gt=0,
        le=1_000_000,
        description="tokens the reasoning may take, added to generation.max_new_tokens "
        f"(default {DEFAULT_REASONING_BUDGET})",
    )
    reasoning_parser: str | None = later(
        None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="backend vllm: its reasoning parser (deepseek_r1, qwen3, openai_gptoss, "
        "...); default: the one of the model's family",
    )

    @field_validator("reasoning", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:
        """YAML reads a bare ``on`` as true and ``off`` as false."""
        return {False: "off", True: "on"}.get(v, v) if isinstance(v, bool) else v

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
        refuse_repeats([d.name for d in v], "dimension")
        return v

    @field_validator("structured", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return yaml_off(v)

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
        if not calls_model(self.backend):
            raise ValueError(f"the judge must call a model; backend {self.backend!r} calls none")
        reads = self.reads
        if (
            is_api(self.backend)
            and reads is not None
            and reads.tokenizer is None
            and (reads.max_tokens is not None or reads.context_tokens is not None)
        ):
            raise ValueError(
                "reads: an API judge's tokens are counted with a tokenizer of its model: "
                "give reads.tokenizer (a Hub id or a folder)"
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
        return self._reasoning_fields()

    def _reasoning_fields(self) -> JudgeConfig:
        if self.reasoning_parser is not None and self.backend != "vllm":
            raise ValueError(f"reasoning_parser applies to backend 'vllm', not {self.backend!r}")
        thinking = self.thinking
        if thinking is None and self.reasoning_budget is not None:
            raise ValueError(
                f"reasoning_budget is set but reasoning is off for {self.model!r} "
                "(auto: not a model of a known reasoning family); set reasoning: on"
            )
        if (
            self.reasoning == "on"
            and self.backend == "inference-endpoints"
            and self.structured == "auto"
        ):
            raise ValueError(
                "backend 'inference-endpoints' enforces the schema from the first token, so "
                "the judge cannot reason first: use structured: off, or a vllm or openai backend"
            )
        if thinking is not None and self.backend == "vllm" and thinking.parser is None:
            raise ValueError(
                f"reasoning on backend 'vllm' needs `reasoning_parser` for {self.model!r} "
                "(vLLM's name for how the model marks its reasoning, e.g. deepseek_r1, qwen3, "
                "openai_gptoss)"
            )
        return self

    @model_validator(mode="after")
    def _panel_members(self) -> JudgeConfig:
        if self.panel is not None:
            for i, member in enumerate(self.panel.judges):
                try:
                    self._member(i)
                except ValidationError as e:
                    first = e.errors()[0]
                    where = ".".join(str(p) for p in first["loc"])
                    said = first["msg"].removeprefix("Value error, ")
                    raise ValueError(
                        f"panel.judges[{i}] ({member.name}): {where + ': ' if where else ''}{said}"
                    ) from None
        return self

    def _member(self, index: int) -> JudgeConfig:
        assert self.panel is not None
        member = self.panel.judges[index]
        data = self.model_dump(exclude={"panel"})
        if member.backend not in (None, self.backend):  # another engine: not this server
            for name in ENDPOINT_FIELDS:
                data[name] = type(self).model_fields[name].default
        for name in member.model_fields_set - {"name", "generation"}:
            data[name] = getattr(member, name)
        if member.generation is not None:
            data["generation"] |= member.generation.model_dump(exclude_none=True)
        return type(self).model_validate(data)

    @property
    def judges(self) -> dict[str, JudgeConfig]:
        """The judges that score every trace, by name: the panel's members (each this
        block with its changes, and no panel), or this block alone as ``judge``."""
        if self.panel is None:
            return {"judge": self}
        return {m.name: self._member(i) for i, m in enumerate(self.panel.judges)}

    @property
    def thinking(self) -> Reasoning | None:
        """The judge's reasoning, resolved (``auto`` decided), or None when it is off."""
        mode = self.reasoning
        if mode in (None, "auto") and self.backend == "inference-endpoints":
            # TGI's grammar holds from the first token: a judge there cannot reason first
            mode = "off" if self.structured == "auto" else mode
        return resolve_reasoning(self.model, mode, self.reasoning_budget, self.reasoning_parser)

    @property
    def token_budget(self) -> int:
        """Tokens one judgment may take: the answer's budget, plus the reasoning's."""
        thinking = self.thinking
        extra = 0 if thinking is None else thinking.extra_tokens
        return self.generation.max_new_tokens + extra

    @property
    def dimension_names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    @property
    def model_label(self) -> str:
        """The judge's model as the tables name it: a panel's distinct models, joined."""
        if self.panel is None:
            return self.model
        return " + ".join(dict.fromkeys(c.model for c in self.judges.values()))
