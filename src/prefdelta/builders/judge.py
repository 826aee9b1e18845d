"""The multi-dimension reasoning judge: one LLM call scores one trace on every dimension.

Asking for all dimensions at once, per trace, is what keeps judging affordable (see
``bench/judge_tokens.py``); scoring each trace alone, never side by side, is what makes
the chosen-minus-rejected delta a difference of two absolute judgments rather than a
comparison the judge could bias by position or length.

Judges fail in ordinary ways (prose instead of JSON, refusals, running out of tokens), so
the Task re-asks inside the step, batched across rows, and keeps every row it could not
score with its status and raw outputs: nothing the judge failed on disappears.
"""

import importlib.resources as importlib_resources
import inspect
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distilabel.constants import DISTILABEL_METADATA_KEY
from distilabel.steps.base import StepInput
from distilabel.steps.tasks.base import Task, normalize_statistics
from jinja2 import Template
from pydantic import Field, NonNegativeInt, PositiveInt, PrivateAttr, field_validator
from typing_extensions import override

from prefdelta.builders.judge_parsing import JudgeStatus, Judgment, parse_judgment
from prefdelta.rubrics import BUILTIN_RUBRICS

if TYPE_CHECKING:
    from distilabel.models.llms.base import LLM
    from distilabel.typing import ChatType, GenerateOutput, StepOutput

    from prefdelta.recipe import JudgeConfig

__all__ = ["JUDGE_OUTPUTS", "ReasoningJudge", "judge_from_config", "template_source"]

JUDGE_OUTPUTS: tuple[str, ...] = (
    "scores",
    "score_spread",
    "rationales",
    "judge_status",
    "judge_problem",
    "judge_raw",
    "judge_attempts",
    "judge_samples",
    "model_name",
)

# Backends that count output tokens by re-encoding the decoded text (TransformersLLM)
# can report a few tokens under the budget the model actually exhausted.
_TRUNCATION_SLACK = 0.05

_FIX_REQUEST = (
    "That answer could not be used ({problem}). Reply again with only the JSON object, "
    "every dimension present, each score an integer from {low} to {high}."
)
_SHORTER_REQUEST = (
    "\n\nYour previous answer ran out of space before it was complete. Reply with only "
    "the JSON object and keep each rationale under 15 words."
)


def template_source() -> str:
    """The judge's Jinja template; part of the judgment cache key, since it shapes scores."""
    path = importlib_resources.files("prefdelta.builders") / "templates" / "judge.jinja2"
    return path.read_text(encoding="utf-8")


class ReasoningJudge(Task):
    """Scores one reasoning trace on every recipe dimension in a single LLM call.

    Attributes:
        dimensions: ``{name, rubric}`` dicts (built-in names and ``Dimension`` objects are
            accepted and expanded); defaults to the five built-in rubrics.
        scale: ``(low, high)`` integer scale; out-of-scale answers are errors, not clamped.
        samples: judgments per trace; >1 averages scores per dimension and records their
            standard deviation (needs a sampling temperature to mean anything).
        max_retries: re-asks for a judgment that could not be parsed, each round batched
            across all rows that still need one. (``num_generations`` must stay 1: use
            ``samples``.)

    Input columns:
        - instruction (`str`): the problem.
        - generation (`str`): the reasoning trace to judge (``None``: not judged, kept).

    Output columns:
        - scores (`dict[str, float | None]`): mean score per dimension; every dimension is
          present, all ``None`` unless ``judge_status == "ok"``.
        - score_spread (`dict[str, float | None]`): population std over the ok samples.
        - rationales (`dict[str, str | None]`): the first ok sample's rationales.
        - judge_status (`str`): ok | parse_error | refused | truncated.
        - judge_problem (`str | None`): why the last attempt failed; ``None`` when ok.
        - judge_raw (`list[str]`): the raw output of every attempt, sample by sample.
        - judge_attempts (`int`): LLM generations spent on the row.
        - judge_samples (`int`): ok samples averaged into ``scores``.
        - model_name (`str`): the judge model.
    """

    dimensions: list[dict[str, str]] = Field(
        default_factory=lambda: [{"name": n, "rubric": r} for n, r in BUILTIN_RUBRICS.items()]
    )
    scale: tuple[int, int] = (1, 5)
    samples: PositiveInt = 1
    max_retries: NonNegativeInt = 2

    _template: Template | None = PrivateAttr(default=None)

    @field_validator("dimensions", mode="before")
    @classmethod
    def _expand_dimensions(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        out = []
        for item in value:
            if isinstance(item, str):
                if item not in BUILTIN_RUBRICS:
                    raise ValueError(f"unknown dimension {item!r}; give {{name, rubric}}")
                item = {"name": item, "rubric": BUILTIN_RUBRICS[item]}
            elif hasattr(item, "model_dump"):
                item = item.model_dump()
            out.append(item)
        return out

    @field_validator("dimensions")
    @classmethod
    def _check_dimensions(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        names = [d.get("name", "") for d in value]
        if not value or not all(names) or not all(d.get("rubric") for d in value):
            raise ValueError("every dimension needs a non-empty name and rubric")
        if len(set(names)) != len(names):
            raise ValueError(f"dimension listed twice in {names}")
        return value

    @field_validator("scale")
    @classmethod
    def _check_scale(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] >= value[1]:
            raise ValueError(f"scale must be (low, high) with low < high, got {value}")
        return value

    @property
    def dimension_names(self) -> list[str]:
        return [d["name"] for d in self.dimensions]

    def load(self) -> None:
        if self.num_generations != 1:
            raise ValueError(
                f"{type(self).__name__} ignores num_generations; set samples={self.num_generations}"
                " instead (repeated judgments are averaged, not emitted as rows)"
            )
        super().load()
        self._template = Template(template_source())

    @property
    def process_parameters(self) -> list[inspect.Parameter]:
        """distilabel finds a step's input by its ``StepInput`` annotation; resolving string
        annotations keeps subclasses that override ``process`` under ``from __future__
        import annotations`` usable in a Pipeline (distilabel rejects them otherwise)."""
        try:
            return list(inspect.signature(self.process, eval_str=True).parameters.values())
        except Exception:
            return super().process_parameters

    @property
    def inputs(self) -> list[str]:
        return ["instruction", "generation"]

    @property
    def outputs(self) -> list[str]:
        return list(JUDGE_OUTPUTS)

    def format_input(self, input: dict[str, Any]) -> "ChatType":
        """One user turn: rubrics, the problem, the trace and the JSON shape to answer in."""
        if self._template is None:  # rendering needs no LLM: let prompts be built unloaded
            self._template = Template(template_source())
        content = self._template.render(
            dimensions=self.dimensions,
            low=self.scale[0],
            high=self.scale[1],
            instruction=input["instruction"],
            generation=input["generation"],
        )
        return [{"role": "user", "content": content.strip()}]

    def format_output(
        self, output: str | None, input: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One raw answer as output columns (``process`` adds retries and samples)."""
        judgment = parse_judgment(output, self.dimension_names, self.scale)
        return self._row_outputs([judgment] if judgment.ok else [], judgment, [output or ""])

    @override
    def get_structured_output(self) -> dict[str, Any]:
        """JSON schema of the answer, for backends that can enforce it."""
        entry = {
            "type": "object",
            "properties": {
                "score": {
                    "type": "integer",
                    "minimum": self.scale[0],
                    "maximum": self.scale[1],
                },
                "rationale": {"type": "string"},
            },
            "required": ["score", "rationale"],
        }
        names = self.dimension_names
        return {
            "type": "object",
            "properties": {n: entry for n in names},
            "required": names,
            "title": "Judgment",
        }

    # ----------------------------------------------------------------------- process

    @override
    def process(self, inputs: StepInput) -> "StepOutput":  # type: ignore[override]
        """Judge every row: first attempts in one batched call, then each retry round in one.

        ``samples`` judgments per row are requested as ``num_generations``; a sample that
        fails is retried on its own, so one bad sample never costs the others.
        """
        rows = list(inputs)
        budget = self._token_budget()
        slots = [
            _Slot(row=i)
            for i, row in enumerate(rows)
            if isinstance(row.get("generation"), str)
            for _ in range(self.samples)
        ]
        first = [i for i in range(len(rows)) if isinstance(rows[i].get("generation"), str)]
        if first:
            outputs = self._generate([self.format_input(rows[i]) for i in first], self.samples)
            by_row: dict[int, list[_Slot]] = {}
            for slot in slots:
                by_row.setdefault(slot.row, []).append(slot)
            for n, i in enumerate(first):
                generated = self._unpack(outputs, n, self.samples)
                for slot, (text, tokens, error) in zip(by_row[i], generated, strict=True):
                    slot.record(text, tokens, self._parse(text, tokens, budget, error))

        for _ in range(self.max_retries):
            pending = [s for s in slots if not s.ok]
            if not pending:
                break
            retry_inputs = [self._retry_input(rows[s.row], s) for s in pending]
            outputs = self._generate(retry_inputs, 1)
            for n, slot in enumerate(pending):
                text, tokens, error = self._unpack(outputs, n, 1)[0]
                slot.record(text, tokens, self._parse(text, tokens, budget, error))

        results: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            mine = [s for s in slots if s.row == i]
            results.append({**row, **self._aggregate(row, mine)})
        yield results

    def _generate(self, inputs: list["ChatType"], num_generations: int) -> Any:
        """All prompts of one round in one call; an exception marks the round as failed."""
        try:
            return self.llm.generate_outputs(
                inputs=inputs,
                num_generations=num_generations,
                **(self.llm.get_generation_kwargs() or {}),
            )
        except Exception as exc:  # the rows stay, with the failure in judge_problem
            self._logger.warning(f"Judge '{self.name}': LLM call failed: {exc!r}")
            return exc

    @staticmethod
    def _unpack(
        outputs: list["GenerateOutput"] | Exception, n: int, count: int
    ) -> list[tuple[str | None, int | None, str | None]]:
        """(text, output tokens, error) for each of the ``count`` generations of input n."""
        if isinstance(outputs, Exception):
            error = f"LLM call failed: {type(outputs).__name__}: {outputs}"
            return [(None, None, error)] * count
        if n >= len(outputs):
            return [(None, None, "the LLM returned fewer outputs than inputs")] * count
        output = normalize_statistics(outputs[n])
        generations = list(output.get("generations") or [])
        tokens = list((output.get("statistics") or {}).get("output_tokens") or [])
        unpacked = []
        for k in range(count):
            text = generations[k] if k < len(generations) else None
            n_tokens = tokens[k] if k < len(tokens) else None
            unpacked.append(
                (text, n_tokens, None if text is not None else "the LLM returned no output")
            )
        return unpacked

    def _parse(
        self, text: str | None, tokens: int | None, budget: int | None, error: str | None
    ) -> Judgment:
        if text is None:
            return Judgment("parse_error", problem=error or "the LLM returned no output")
        truncated = (
            tokens is not None and budget is not None and tokens >= budget * (1 - _TRUNCATION_SLACK)
        )
        return parse_judgment(text, self.dimension_names, self.scale, truncated=truncated)

    def _token_budget(self) -> int | None:
        """max_new_tokens in effect: the LLM's generation_kwargs, else generate()'s default."""
        kwargs = self.llm.get_generation_kwargs() or {}
        if kwargs.get("max_new_tokens") is not None:
            return int(kwargs["max_new_tokens"])
        for param in self.llm.generate_parameters:
            if param.name == "max_new_tokens" and param.default is not inspect.Parameter.empty:
                return int(param.default)
        return None

    def _retry_input(self, row: dict[str, Any], slot: "_Slot") -> "ChatType":
        """Re-ask: a truncated answer gets a fresh prompt asking for brevity; any other
        failure is shown back to the judge with what was wrong, which also unsticks greedy
        decoding (the same prompt would give the same answer)."""
        messages = self.format_input(row)
        last = slot.judgments[-1]
        raw = slot.raw[-1]
        if last.status == "truncated":
            messages[-1] = {"role": "user", "content": messages[-1]["content"] + _SHORTER_REQUEST}
            return messages
        if not raw.strip():
            return messages
        fix = _FIX_REQUEST.format(problem=last.problem, low=self.scale[0], high=self.scale[1])
        return [*messages, {"role": "assistant", "content": raw}, {"role": "user", "content": fix}]

    def _aggregate(self, row: dict[str, Any], slots: list["_Slot"]) -> dict[str, Any]:
        if not slots:
            failed = Judgment("parse_error", problem="no trace to judge (generation is missing)")
            return self._row_outputs([], failed, [], row=row)
        ok = [s.judgments[-1] for s in slots if s.ok]
        last_failure = next((s.judgments[-1] for s in slots if not s.ok), slots[0].judgments[-1])
        raw = [text for s in slots for text in s.raw]
        out = self._row_outputs(ok, last_failure, raw, row=row)
        tokens = [t for s in slots for t in s.tokens if t is not None]
        if tokens:
            meta = out[DISTILABEL_METADATA_KEY]
            meta[f"statistics_{self.name}"] = {"output_tokens": sum(tokens)}
        return out

    def _row_outputs(
        self,
        ok: list[Judgment],
        failure: Judgment,
        raw: list[str],
        row: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        names = self.dimension_names
        status: JudgeStatus = "ok" if ok else failure.status
        scores: dict[str, float | None] = dict.fromkeys(names)
        spread: dict[str, float | None] = dict.fromkeys(names)
        rationales: dict[str, str | None] = dict.fromkeys(names)
        if ok:
            for name in names:
                values = [j.scores[name] for j in ok]
                scores[name] = statistics.fmean(values)
                spread[name] = statistics.pstdev(values)
                rationales[name] = ok[0].rationales.get(name, "")
        meta = dict((row or {}).get(DISTILABEL_METADATA_KEY) or {})
        if self.add_raw_input and row is not None and isinstance(row.get("generation"), str):
            meta[f"raw_input_{self.name}"] = self.format_input(row)
        return {
            "scores": scores,
            "score_spread": spread,
            "rationales": rationales,
            "judge_status": status,
            "judge_problem": None if ok else failure.problem,
            "judge_raw": raw,
            "judge_attempts": len(raw),
            "judge_samples": len(ok),
            "model_name": self.llm.model_name,
            DISTILABEL_METADATA_KEY: meta,
        }


@dataclass
class _Slot:
    """One requested judgment of one row, across its attempts."""

    row: int
    raw: list[str] = field(default_factory=list)
    tokens: list[int | None] = field(default_factory=list)
    judgments: list[Judgment] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.judgments) and self.judgments[-1].ok

    def record(self, text: str | None, tokens: int | None, judgment: Judgment) -> None:
        self.raw.append(text or "")
        self.tokens.append(tokens)
        self.judgments.append(judgment)


def judge_from_config(
    judge_config: "JudgeConfig",
    llm: "LLM",
    *,
    task_class: type[ReasoningJudge] = ReasoningJudge,
    **step_kwargs: Any,
) -> ReasoningJudge:
    """A judge step for a recipe's ``judge`` block.

    ``task_class`` lets a subclass (e.g. one that consults a result store first) get the
    same configuration; ``step_kwargs`` (name, input_mappings, input_batch_size, the
    subclass's own fields) go to the step. The LLM's generation parameters stay the
    caller's: they belong to the backend that built ``llm``.
    """
    return task_class(
        llm=llm,
        dimensions=[d.model_dump() for d in judge_config.dimensions],
        scale=tuple(judge_config.scale),
        samples=judge_config.samples,
        max_retries=judge_config.max_retries,
        **step_kwargs,
    )
