"""The judge's messages: the rendered user turn and the system prompt, if any.

The judge Task sends exactly these, and ``prefdelta inspect --judge-prompt`` and the
token estimate show them without a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jinja2 import Template

if TYPE_CHECKING:
    from distilabel.typing import ChatType

    from prefdelta.builders.judge.spec import JudgeSpec

__all__ = ["judge_messages", "judge_prompt", "render_judge_prompt"]


def render_judge_prompt(
    template: Template,
    dimensions: list[dict[str, str]],
    scale: tuple[int, int],
    json_schema: dict[str, Any] | None,
    instruction: str,
    generation: str,
    reference: str | None = None,
) -> str:
    """The judge's one user turn: rubrics, the problem, the trace and the shape to answer
    in (with the schema's rationale bound, when there is a schema); ``reference``: the
    reference answer, for a template that shows it (``judge.show_reference``)."""
    rationale_chars = None
    if json_schema is not None:
        first = json_schema["properties"][dimensions[0]["name"]]
        rationale_chars = first["properties"]["rationale"]["maxLength"]
    return template.render(
        dimensions=dimensions,
        low=scale[0],
        high=scale[1],
        instruction=instruction,
        generation=generation,
        reference=reference,
        rationale_chars=rationale_chars,
    ).strip()


def judge_messages(
    template: Template,
    system_prompt: str | None,
    dimensions: list[dict[str, str]],
    scale: tuple[int, int],
    json_schema: dict[str, Any] | None,
    instruction: str,
    generation: str,
    reference: str | None = None,
) -> ChatType:
    """The judge's messages: the system prompt, if any, and the rendered user turn."""
    content = render_judge_prompt(
        template, dimensions, scale, json_schema, instruction, generation, reference
    )
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": content}]


def judge_prompt(
    spec: JudgeSpec, prompt: str, trace: str, reference: str | None = None
) -> ChatType:
    """Exactly the messages the recipe's judge is sent about ``trace`` (no model needed);
    ``reference`` reaches the judge only when ``spec.show_reference``."""
    return judge_messages(
        Template(spec.template),
        spec.system_prompt,
        list(spec.dimensions),
        spec.scale,
        spec.schema,
        prompt,
        trace,
        reference if spec.show_reference else None,
    )
