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
from prefdelta.errors import PrefdeltaError
from prefdelta.recipe import JudgeConfig, resolve_path
from prefdelta.recipe.judgment import judgment_schema

__all__ = ["JudgeSpec", "JudgeTemplateError", "panel_specs", "schema_for", "template_source"]

# where the built-in template shows the reference answer, with show_reference: after the problem
_AFTER_PROBLEM = "</problem>\n"


class JudgeTemplateError(PrefdeltaError, ValueError):
    """A judge template that cannot show the judge what the recipe asks it to see."""


def _builtin(name: str) -> str:
    path = importlib_resources.files("prefdelta.builders.judge") / "templates" / name
    return path.read_text(encoding="utf-8")


def template_source(show_reference: bool = False) -> str:
    """The built-in Jinja template of the judge's user turn; ``show_reference``: with the
    reference answer after the problem (the template without it is unchanged, so are the
    keys of every judgment asked with it)."""
    text = _builtin("judge.jinja2")
    if not show_reference:
        return text
    assert _AFTER_PROBLEM in text, "the built-in judge template lost its </problem> line"
    return text.replace(_AFTER_PROBLEM, _AFTER_PROBLEM + _builtin("reference.jinja2"), 1)


def _refuse_without_reference(template: str, where: str) -> None:
    """A recipe's own template under ``show_reference`` must show ``{{ reference }}``:
    otherwise the option would change every key and show the judge nothing."""
    import jinja2
    from jinja2 import meta

    if "reference" not in meta.find_undeclared_variables(jinja2.Environment().parse(template)):
        raise JudgeTemplateError(
            f"judge.show_reference is true but the template {where} never shows "
            "{{ reference }}: add it (e.g. <reference_answer>{{ reference }}</reference_answer>, "
            "under {% if reference %}), or remove show_reference"
        )


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
    ``reader``: how its stored answers are read into scores; ``show_reference``: the
    prompt's reference answer is shown to the judge (and is part of each judgment's key).
    """

    config: JudgeConfig
    template: str
    system_prompt: str | None
    dimensions: tuple[dict[str, str], ...]
    scale: tuple[int, int]
    schema: dict[str, Any] | None
    fingerprint: str
    reader: AnswerReader
    show_reference: bool = False

    @classmethod
    def resolve(cls, config: JudgeConfig, base_dir: Path | None = None) -> JudgeSpec:
        """The spec of ``config``; ``base_dir``: the recipe's folder, where a ``template``
        file is found (the only place the file is read)."""
        show_reference = bool(config.show_reference)
        if config.template is None:
            template = template_source(show_reference)
        else:
            path = resolve_path(config.template, base_dir or Path("."))
            template = path.read_text(encoding="utf-8")
            if show_reference:
                _refuse_without_reference(template, str(path))
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
            show_reference=show_reference,
        )

    def key(self, prompt: str, trace: str, reference: str | None) -> str:
        """The store key of this judge's judgment of ``trace``: the reference answer counts
        only when the judge is shown it."""
        return keys.judgment_key(
            self.fingerprint, prompt, trace, reference if self.show_reference else None
        )

    @property
    def dimension_names(self) -> list[str]:
        return [d["name"] for d in self.dimensions]

    @property
    def template_sha256(self) -> str:
        """The template's hash, as the build summary names it (the fingerprint hashes the
        same text)."""
        return hashlib.sha256(self.template.encode()).hexdigest()


def panel_specs(config: JudgeConfig, base_dir: Path | None = None) -> dict[str, JudgeSpec]:
    """Every judge of a recipe's ``judge`` block, resolved: its panel's members by name, or
    the block alone as ``judge``. Each has its own fingerprint: its own store keys."""
    return {name: JudgeSpec.resolve(c, base_dir) for name, c in config.judges.items()}
