"""A recipe's judge, resolved once: :class:`JudgeSpec`.

What a judge asks and how its answers are read follows from its config and the recipe's
folder (where a ``judge.template`` file is found). Resolving that in one place, once per
build, is what keeps a build consistent: the template file is read once, so the judgment
keys, the prompts sent and the summary's template hash all come from the same text even
if the file is edited while the build runs.
"""

from __future__ import annotations

import hashlib
import importlib.resources as importlib_resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefdelta.builders import keys
from prefdelta.builders.judge.reader import AnswerReader
from prefdelta.recipe import JudgeConfig, resolve_path
from prefdelta.recipe.judgment import judgment_schema

__all__ = ["JudgeSpec", "schema_for", "template_source"]


def template_source() -> str:
    """The built-in Jinja template of the judge's user turn."""
    path = importlib_resources.files("prefdelta.builders.judge") / "templates" / "judge.jinja2"
    return path.read_text(encoding="utf-8")


def schema_for(config: JudgeConfig) -> dict[str, Any] | None:
    """The schema a recipe's judge answers in; None when ``structured: off``."""
    if config.structured == "off":
        return None
    return judgment_schema(
        config.dimension_names, tuple(config.scale), config.generation.max_new_tokens
    )


@dataclass(frozen=True)
class JudgeSpec:
    """Everything a build derives from a recipe's ``judge`` block, derived once.

    ``config`` stays for what is passed on as written (samples, retries, the endpoint);
    ``dimensions`` and ``scale`` are the ones the recipe already checked. ``template``: the
    user turn's Jinja text (the recipe's file, else the built-in one); ``schema``: the
    judgment's JSON schema, None when ``structured: off``; ``fingerprint``: what every
    judgment key of this judge starts from (:func:`prefdelta.builders.keys.judge_fingerprint`);
    ``reader``: how its stored answers are read into scores.
    """

    config: JudgeConfig
    template: str
    system_prompt: str | None
    dimensions: tuple[dict[str, str], ...]
    scale: tuple[int, int]
    schema: dict[str, Any] | None
    fingerprint: str
    reader: AnswerReader

    @classmethod
    def resolve(cls, config: JudgeConfig, base_dir: Path | None = None) -> JudgeSpec:
        """The spec of ``config``; ``base_dir``: the recipe's folder, where a ``template``
        file is found (the only place the file is read)."""
        if config.template is None:
            template = template_source()
        else:
            path = resolve_path(config.template, base_dir or Path("."))
            template = path.read_text(encoding="utf-8")
        schema = schema_for(config)
        scale = (config.scale[0], config.scale[1])
        return cls(
            config=config,
            template=template,
            system_prompt=config.system_prompt,
            dimensions=tuple(d.model_dump() for d in config.dimensions),
            scale=scale,
            schema=schema,
            fingerprint=keys.judge_fingerprint(config, template),
            reader=AnswerReader(
                dimensions=tuple(config.dimension_names),
                scale=scale,
                schema=schema,
                scoring=config.scoring,
                budget=config.token_budget,
            ),
        )

    @property
    def dimension_names(self) -> list[str]:
        return [d["name"] for d in self.dimensions]

    @property
    def template_sha256(self) -> str:
        """The template's hash, as the build summary names it (the fingerprint hashes the
        same text)."""
        return hashlib.sha256(self.template.encode()).hexdigest()
