"""The multi-dimension reasoning judge: one LLM call scores one trace on every dimension.

Asking for all dimensions at once, per trace, is what keeps judging affordable (see
``bench/judge_tokens.py``); scoring each trace alone, never side by side, is what makes
the chosen-minus-rejected delta a difference of two absolute judgments rather than a
comparison the judge could bias by position or length.

The answer's shape is enforced by the backend's decoder where the recipe says so (the
default; see ``prefdelta.recipe.judgment``), and every answer is checked against that schema.
Judges still fail in ways a schema cannot prevent (a server that ignores it, refusals,
errors), so the Task re-asks inside the step, batched across rows, and keeps every row it
could not score with its status and raw outputs: nothing the judge failed on disappears.
How raw answers become scores lives in one place,
:class:`~prefdelta.builders.judge.reader.AnswerReader`, which the build also uses to read
its stored answers again.
"""

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distilabel.constants import DISTILABEL_METADATA_KEY
from distilabel.steps.base import StepInput
from distilabel.steps.tasks.base import Task, normalize_statistics
from jinja2 import Template
from pydantic import Field, NonNegativeInt, PositiveInt, PrivateAttr
from typing_extensions import override

from prefdelta.builders.judge.parsing import Judgment
from prefdelta.builders.judge.prompt import judge_messages
from prefdelta.builders.judge.reader import AnswerReader, Read, ScoreKind
from prefdelta.builders.judge.spec import JudgeSpec, template_source
from prefdelta.builders.judge.thinking import split_answer
from prefdelta.builders.keys import row_seed
from prefdelta.builders.llms import takes_row_seeds
from prefdelta.recipe.rubrics import BUILTIN_RUBRICS

if TYPE_CHECKING:
    from distilabel.models.llms.base import LLM
    from distilabel.typing import ChatType, GenerateOutput, StepOutput

__all__ = ["JUDGE_OUTPUTS", "Ask", "ReasoningJudge", "judge_from_spec"]

# One input's output: (chat, num_generations, seed, first request of its row).
Ask = Callable[[Any, int, "int | None", bool], Awaitable[dict[str, Any]]]

JUDGE_OUTPUTS: tuple[str, ...] = (
    "scores",
    "score_spread",
    "score_kind",
    "score_probs",
    "score_fallback",
    "rationales",
    "judge_status",
    "judge_problem",
    "judge_raw",
    "judge_reasoning",
    "judge_answers",
    "judge_attempts",
    "judge_samples",
    "model_name",
)

_FIX_REQUEST = (
    "That answer could not be used ({problem}). Reply again with only the JSON object, "
    "every dimension present, each score an integer from {low} to {high}."
)
_SHORTER_REQUEST = (
    "\n\nYour previous answer ran out of space before it was complete. Reply with only "
    "the JSON object and keep each rationale under 15 words."
)


class ReasoningJudge(Task):
    """Scores one reasoning trace on every recipe dimension in a single LLM call.

    Attributes:
        dimensions: ``{name, rubric}`` dicts; defaults to the five built-in rubrics.
        scale: ``(low, high)`` integer scale; out-of-scale answers are errors, not clamped.
            Dimensions and scale are taken as given: the recipe's ``JudgeConfig`` checks
            them, and :func:`judge_from_spec` passes on the checked ones.
        samples: judgments per trace; >1 averages scores per dimension and records their
            standard deviation (needs a sampling temperature to mean anything).
        max_retries: re-asks for a judgment that could not be used, each round batched
            across all rows that still need one. (``num_generations`` must stay 1: use
            ``samples``.)
        json_schema: the schema the LLM enforces (see ``prefdelta.recipe.judgment``); answers
            must conform to it. None: answers are prose, read by the lenient parser.
        scoring: ``expected`` reads probability-weighted scores where the LLM returns token
            log-probs (``token_logprobs`` in its outputs), ``sampled`` the integers written.
        reasoning: the judge reasons before it answers: each answer is read without its
            reasoning, which is kept (:mod:`prefdelta.builders.judge.thinking`).

    Input columns:
        - instruction (`str`): the problem.
        - generation (`str`): the reasoning trace to judge (``None``: not judged, kept).
        - reference (`str | None`): with ``show_reference``, the reference answer.

    Output columns:
        - scores (`dict[str, float | None]`): mean score per dimension; every dimension is
          present, all ``None`` unless ``judge_status == "ok"``.
        - score_spread (`dict[str, float | None]`): population std over the ok samples.
        - score_kind (`str | None`): ``expected`` or ``sampled``: what ``scores`` hold.
        - score_probs (`dict[str, list[float] | None]`): per dimension, the probability of
          each scale value (low to high), for expected scores.
        - score_fallback (`str | None`): why expected scores were asked for but not read.
        - rationales (`dict[str, str | None]`): the first ok sample's rationales.
        - judge_status (`str`): ok | parse_error | refused | truncated | schema_violation |
          empty (the call succeeded with no text) | failed (the call failed).
        - judge_problem (`str | None`): why the last attempt failed; ``None`` when ok.
        - judge_raw (`list[str]`): the raw output of every attempt, sample by sample.
        - judge_reasoning (`list[str] | None`): a reasoning judge's reasoning, per attempt.
        - judge_answers (`list[list[dict]]`): per sample, every attempt as
          ``{text, tokens, error, logprobs}``: what :class:`AnswerReader` reads.
        - judge_attempts (`int`): LLM generations spent on the row.
        - judge_samples (`int`): ok samples averaged into ``scores``.
        - model_name (`str`): the judge model.
    """

    dimensions: list[dict[str, str]] = Field(
        default_factory=lambda: [{"name": n, "rubric": r} for n, r in BUILTIN_RUBRICS.items()]
    )
    scale: tuple[int, int] = (1, 5)
    template: str | None = None  # the user turn's Jinja text; None: the built-in template
    system_prompt: str | None = None
    samples: PositiveInt = 1
    max_retries: NonNegativeInt = 2
    json_schema: dict[str, Any] | None = None
    scoring: ScoreKind = "expected"
    show_reference: bool = False  # rows carry a `reference` column, shown to the judge
    reasoning: bool = False

    _template: Template | None = PrivateAttr(default=None)

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
        self._template = Template(self.template or template_source())

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
        return ["instruction", "generation", *(["reference"] if self.show_reference else [])]

    @property
    def outputs(self) -> list[str]:
        return list(JUDGE_OUTPUTS)

    @property
    def reader(self) -> AnswerReader:
        return AnswerReader(
            dimensions=tuple(self.dimension_names),
            scale=self.scale,
            schema=self.json_schema,
            scoring=self.scoring,
            budget=self._token_budget(),
        )

    def format_input(self, input: dict[str, Any]) -> "ChatType":
        """One user turn: rubrics, the problem, the trace and the JSON shape to answer in."""
        if self._template is None:  # rendering needs no LLM: let prompts be built unloaded
            self._template = Template(self.template or template_source())
        return judge_messages(
            self._template,
            self.system_prompt,
            self.dimensions,
            self.scale,
            self.json_schema,
            input["instruction"],
            input["generation"],
            input.get("reference") if self.show_reference else None,
        )

    def format_output(
        self, output: str | None, input: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One raw answer as output columns (``process`` adds retries and samples)."""
        return self.reader.outputs([[{"text": output, "tokens": None, "error": None}]])

    @override
    def get_structured_output(self) -> dict[str, Any] | None:
        """The schema the LLM enforces (None for prose answers). The backend, not
        distilabel's default structured output, enforces it: see ``make_llm``."""
        return self.json_schema

    # ----------------------------------------------------------------------- process

    @override
    def process(self, inputs: StepInput) -> "StepOutput":  # type: ignore[override]
        """Judge every row: first attempts in one batched call, then each retry round in one.

        ``samples`` judgments per row are requested as ``num_generations``; a sample that
        fails is retried on its own, so one bad sample never costs the others.
        """
        rows = list(inputs)
        reader = self.reader
        slots = [
            _Slot(row=i)
            for i, row in enumerate(rows)
            if isinstance(row.get("generation"), str)
            for _ in range(self.samples)
        ]
        first = [i for i in range(len(rows)) if isinstance(rows[i].get("generation"), str)]
        if first:
            asked = [self.format_input(rows[i]) for i in first]
            outputs = self._generate(asked, self.samples, [0] * len(asked))
            by_row: dict[int, list[_Slot]] = {}
            for slot in slots:
                by_row.setdefault(slot.row, []).append(slot)
            for n, i in enumerate(first):
                generated = self._unpack(outputs, n, self.samples)
                for slot, attempt in zip(by_row[i], generated, strict=True):
                    slot.record(attempt, reader.read(attempt))
                    slot.asked.append(asked[n])

        greedy = self._greedy()
        for _ in range(self.max_retries):
            pending = self._pending(rows, slots, greedy)
            if not pending:
                break
            outputs = self._generate(
                [retry for _, retry in pending], 1, [len(s.attempts) for s, _ in pending]
            )
            for n, (slot, retry) in enumerate(pending):
                attempt = self._unpack(outputs, n, 1)[0]
                slot.record(attempt, reader.read(attempt))
                slot.asked.append(retry)

        results: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            mine = [s for s in slots if s.row == i]
            results.append({**row, **self._row_outputs(row, mine, reader)})
        yield results

    async def ajudge(self, row: dict[str, Any], ask: "Ask") -> dict[str, Any]:
        """One row judged on its own, as :meth:`process` judges it within a batch (the same
        requests, the same seeds), each retry sent as soon as the answer before it is read:
        for API backends, whose rows need not wait for each other. ``ask(chat,
        num_generations, seed, first)``: one input's output; ``first`` marks the row's
        first request, which an interrupted build may skip (a row once begun finishes)."""
        reader = self.reader
        slots: list[_Slot] = []
        if isinstance(row.get("generation"), str):
            asked = self.format_input(row)
            output = await ask(asked, self.samples, self._seed(asked, 0), True)
            slots = [_Slot(row=0) for _ in range(self.samples)]
            for slot, attempt in zip(slots, self._unpack([output], 0, self.samples), strict=True):
                slot.record(attempt, reader.read(attempt))
                slot.asked.append(asked)
            greedy = self._greedy()
            for _ in range(self.max_retries):
                pending = self._pending([row], slots, greedy)
                if not pending:
                    break
                outputs = await asyncio.gather(
                    *(
                        ask(retry, 1, self._seed(retry, len(s.attempts)), False)
                        for s, retry in pending
                    )
                )
                for (slot, retry), output in zip(pending, outputs, strict=True):
                    attempt = self._unpack([output], 0, 1)[0]
                    slot.record(attempt, reader.read(attempt))
                    slot.asked.append(retry)
        return {**row, **self._row_outputs(row, slots, reader)}

    def _pending(
        self, rows: list[dict[str, Any]], slots: list["_Slot"], greedy: bool
    ) -> list[tuple["_Slot", "ChatType"]]:
        """The slots to re-ask, each with its retry prompt; greedy decoding of what was
        already asked gives what it gave, so such a slot is settled instead."""
        pending = []
        for slot in (s for s in slots if not s.ok and not s.settled):
            retry = self._retry_input(rows[slot.row], slot)
            if greedy and retry in slot.asked:
                slot.settled = True
            else:
                pending.append((slot, retry))
        return pending

    def _seed(self, chat: "ChatType", attempt: int) -> int | None:
        """The seed of asking ``chat`` for the ``attempt``-th time (None: the LLM takes no
        per-row seeds)."""
        if not takes_row_seeds(self.llm):
            return None
        return row_seed(json.dumps(chat, sort_keys=True), attempt)

    def _generate(self, inputs: list["ChatType"], num_generations: int, attempts: list[int]) -> Any:
        """All prompts of one round in one call; an exception marks the round as failed.

        An LLM that takes per-row seeds samples each input from a seed of what it asks and
        its attempt number: a resumed build judges as the uninterrupted one, and a re-ask
        of the same prompt draws anew."""
        seeds = {}
        if takes_row_seeds(self.llm):
            seeds = {"seeds": [self._seed(c, a) for c, a in zip(inputs, attempts, strict=True)]}
        try:
            return self.llm.generate_outputs(
                inputs=inputs,
                num_generations=num_generations,
                **(self.llm.get_generation_kwargs() or {}),
                **seeds,
            )
        except Exception as exc:  # the rows stay, with the failure in judge_problem
            self._logger.warning(f"Judge '{self.name}': LLM call failed: {exc!r}")
            return exc

    def _unpack(
        self, outputs: list["GenerateOutput"] | Exception, n: int, count: int
    ) -> list[dict[str, Any]]:
        """The ``count`` attempts of input n as ``{text, tokens, error, logprobs}``."""
        if isinstance(outputs, Exception):
            error = f"LLM call failed: {type(outputs).__name__}: {outputs}"
            return [_attempt(None, None, error)] * count
        if n >= len(outputs):
            return [_attempt(None, None, "the LLM returned fewer outputs than inputs")] * count
        output = normalize_statistics(outputs[n])
        generations = list(output.get("generations") or [])
        stats = output.get("statistics") or {}
        tokens = list(stats.get("output_tokens") or [])
        prompt_tokens = list(stats.get("input_tokens") or [])
        logprobs = list(output.get("token_logprobs") or [])  # type: ignore[attr-defined]
        errors = list(output.get("errors") or [])  # type: ignore[attr-defined]
        thoughts = list(output.get("reasoning") or [])  # type: ignore[attr-defined]
        unpacked = []
        for k in range(count):
            text = generations[k] if k < len(generations) else None
            error = None
            if text is None:
                error = (errors[k] if k < len(errors) else None) or "the LLM returned no output"
            lp = logprobs[k] if k < len(logprobs) else None
            thought = None
            if self.reasoning:  # the answer is read without it; its tokens stay counted
                given = thoughts[k] if k < len(thoughts) else None
                text, lp, thought = split_answer(text, lp, given)
            attempt = _attempt(
                text,
                tokens[k] if k < len(tokens) else None,
                error,
                lp,
                prompt_tokens[k] if k < len(prompt_tokens) else None,
            )
            if thought is not None:
                attempt["reasoning"] = thought
            unpacked.append(attempt)
        return unpacked

    def _greedy(self) -> bool:
        """Whether the LLM decodes greedily (temperature 0, or sampling off): then the same
        prompt gives the same answer, and asking it again is skipped."""
        kwargs = self.llm.get_generation_kwargs() or {}
        return kwargs.get("temperature") == 0 or kwargs.get("do_sample") is False

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
        raw = slot.attempts[-1].get("text") or ""
        if last.status == "truncated":
            messages[-1] = {"role": "user", "content": messages[-1]["content"] + _SHORTER_REQUEST}
            return messages
        if not raw.strip():
            return messages
        fix = _FIX_REQUEST.format(problem=last.problem, low=self.scale[0], high=self.scale[1])
        return [*messages, {"role": "assistant", "content": raw}, {"role": "user", "content": fix}]

    def _row_outputs(
        self, row: dict[str, Any], slots: list["_Slot"], reader: AnswerReader
    ) -> dict[str, Any]:
        out = reader.outputs([s.attempts for s in slots], [s.reads for s in slots])
        out["model_name"] = self.llm.model_name
        meta = dict(row.get(DISTILABEL_METADATA_KEY) or {})
        if self.add_raw_input and isinstance(row.get("generation"), str):
            asked = slots[0].asked[0] if slots and slots[0].asked else None
            meta[f"raw_input_{self.name}"] = asked or self.format_input(row)
        tokens = [a["tokens"] for s in slots for a in s.attempts if a["tokens"] is not None]
        if tokens:
            meta[f"statistics_{self.name}"] = {"output_tokens": sum(tokens)}
        out[DISTILABEL_METADATA_KEY] = meta
        return out


def _attempt(
    text: str | None,
    tokens: int | None,
    error: str | None,
    logprobs: Any = None,
    input_tokens: int | None = None,
) -> dict[str, Any]:
    """One stored attempt; ``tokens`` the answer's, ``input_tokens`` the prompt's (what
    the backend reported; None when it did not)."""
    return {
        "text": text,
        "tokens": tokens,
        "error": error,
        "logprobs": logprobs,
        "input_tokens": input_tokens,
    }


@dataclass
class _Slot:
    """One requested judgment of one row, across its attempts."""

    row: int
    attempts: list[dict[str, Any]] = field(default_factory=list)
    judgments: list[Judgment] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)  # each attempt's reading, kept for outputs
    asked: list["ChatType"] = field(default_factory=list)  # what each attempt sent
    settled: bool = False  # no retry could change its answer

    @property
    def ok(self) -> bool:
        return bool(self.judgments) and self.judgments[-1].ok

    def record(self, attempt: dict[str, Any], read: Read) -> None:
        self.attempts.append(attempt)
        self.judgments.append(read[0])
        self.reads.append(read)


def judge_from_spec(
    spec: JudgeSpec,
    llm: "LLM",
    *,
    task_class: type[ReasoningJudge] = ReasoningJudge,
    **step_kwargs: Any,
) -> ReasoningJudge:
    """A judge step for a recipe's resolved ``judge`` block.

    ``task_class`` lets a subclass (e.g. one that consults a result store first) get the
    same configuration; ``step_kwargs`` (name, input_mappings, input_batch_size, the
    subclass's own fields) go to the step. The LLM's generation parameters, and the
    enforcement of the schema, stay the caller's: they belong to the backend that built
    ``llm`` (:func:`prefdelta.builders.llms.make_llm`).
    """
    return task_class(
        llm=llm,
        dimensions=[dict(d) for d in spec.dimensions],
        scale=spec.scale,
        template=spec.template,
        system_prompt=spec.system_prompt,
        samples=spec.config.samples,
        max_retries=spec.config.max_retries,
        json_schema=spec.schema,
        scoring=spec.config.scoring,
        show_reference=spec.show_reference,
        reasoning=spec.config.thinking is not None,
        **step_kwargs,
    )
