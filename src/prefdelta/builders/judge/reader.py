"""How raw judge answers become scores: :class:`AnswerReader`, the one place.

The judge Task reads each fresh answer through it to decide on a retry, and the build
reads every stored answer through it again when it writes the tables, so a fix here
reaches a rebuild without calling the judge again.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prefdelta.builders.judge.parsing import JudgeStatus, Judgment, parse_judgment
from prefdelta.builders.judge.structured import (
    expected_score,
    schema_problem,
    score_distributions,
)

__all__ = ["AnswerReader", "Read", "ScoreKind", "spread"]

ScoreKind = Literal["expected", "sampled"]
# One attempt read: its judgment, and why its scores are not expected ones (None: they are)
Read = tuple[Judgment, str | None]

# Backends that count output tokens by re-encoding the decoded text (TransformersLLM)
# can report a few tokens under the budget the model actually exhausted.
_TRUNCATION_SLACK = 0.05


@dataclass(frozen=True)
class AnswerReader:
    """Reads stored answers into judgments: the one place where raw text becomes scores.

    The build keeps every raw answer (text, token count, digit-token log-probs) in its store
    and reads the tables through this, so a fix here reaches a rebuild without calling the
    judge again. ``schema``: answers must conform to it (``schema_violation`` otherwise) and
    are read as JSON; None: prose answers, read by the lenient parser. ``budget``: the
    token budget, to tell a truncated answer from a malformed one.
    """

    dimensions: tuple[str, ...]
    scale: tuple[int, int]
    schema: dict[str, Any] | None = None
    scoring: ScoreKind = "expected"
    budget: int | None = None

    def read(self, attempt: dict[str, Any]) -> Read:
        """One attempt ``{text, tokens, error, logprobs}`` -> (judgment, why not expected)."""
        text, tokens, error = attempt.get("text"), attempt.get("tokens"), attempt.get("error")
        if text is None:
            return Judgment("failed", problem=error or "the LLM returned no output"), None
        truncated = (
            tokens is not None
            and self.budget is not None
            and tokens >= self.budget * (1 - _TRUNCATION_SLACK)
        )
        if not text.strip():
            if truncated and attempt.get("reasoning"):
                why = "the judge's reasoning ran to the token budget; no answer followed"
                return Judgment("truncated", problem=why), None
            return Judgment("empty", problem="the judge answered with no text"), None
        if self.schema is None:
            judgment = parse_judgment(text, self.dimensions, self.scale, truncated=truncated)
        else:
            judgment = self._read_structured(text, truncated)
        if not judgment.ok or self.scoring != "expected":
            return judgment, None
        logprobs = attempt.get("logprobs")
        if logprobs is None:
            return judgment, "the backend returned no token probabilities"
        try:
            probs, why = score_distributions(text, logprobs, self.dimensions, self.scale)
        except (KeyError, TypeError, ValueError) as exc:
            probs, why = None, f"unreadable token probabilities ({exc})"
        if probs is None:
            return judgment, why
        return Judgment("ok", judgment.scores, judgment.rationales, probs=probs), None

    def _read_structured(self, text: str, truncated: bool) -> Judgment:
        problem = schema_problem(text, self.schema or {})
        if problem is not None:
            status: JudgeStatus = "truncated" if truncated else "schema_violation"
            return Judgment(status, problem=f"answer does not match the schema: {problem}")
        value = json.loads(text)
        return Judgment(
            "ok",
            scores={d: float(value[d]["score"]) for d in self.dimensions},
            rationales={d: value[d]["rationale"] for d in self.dimensions},
        )

    def outputs(
        self, slots: list[list[dict[str, Any]]], reads: list[list[Read]] | None = None
    ) -> dict[str, Any]:
        """The judge's output columns for one trace from its slots' attempts.

        A slot is one requested judgment (``samples`` per trace) and holds its attempts in
        order; its first usable attempt counts. Scores average over usable slots; they are
        expected scores only if every usable slot has them (never a mix within a trace).
        ``reads``: the attempts already read (:meth:`read`), aligned with ``slots``, so
        that no answer is read twice.
        """
        names = self.dimensions
        ok: list[tuple[Judgment, str | None]] = []
        failure: Judgment | None = None
        for n, attempts in enumerate(slots):
            read = reads[n] if reads is not None else [self.read(a) for a in attempts]
            usable = next((r for r in read if r[0].ok), None)
            if usable is not None:
                ok.append(usable)
            elif read and failure is None:
                failure = read[-1][0]
        if not slots:
            failure = Judgment("parse_error", problem="no trace to judge (generation is missing)")
        raw = [a.get("text") or "" for attempts in slots for a in attempts]
        # a reasoning judge's reasoning, aligned with judge_raw (None: no attempt reasoned)
        thoughts = [a.get("reasoning") for attempts in slots for a in attempts]
        out: dict[str, Any] = {
            "scores": dict.fromkeys(names),
            "score_spread": dict.fromkeys(names),
            "score_kind": None,
            "score_probs": dict.fromkeys(names),
            "score_fallback": None,
            "rationales": dict.fromkeys(names),
            "judge_status": "ok" if ok else (failure.status if failure else "parse_error"),
            "judge_problem": None if ok else (failure.problem if failure else None),
            "judge_raw": raw,
            "judge_reasoning": thoughts if any(t is not None for t in thoughts) else None,
            "judge_answers": slots,
            "judge_attempts": len(raw),
            "judge_samples": len(ok),
        }
        if not ok:
            return out
        expected = all(j.probs is not None for j, _ in ok)
        out["score_kind"] = "expected" if expected else "sampled"
        if self.scoring == "expected" and not expected:
            out["score_fallback"] = next((why for _, why in ok if why), None)
        for name in names:
            if expected:
                dists = [j.probs[name] for j, _ in ok if j.probs is not None]
                values = [expected_score(p, self.scale) for p in dists]
                out["score_probs"][name] = [statistics.fmean(p) for p in zip(*dists, strict=True)]
            else:  # the integers the judge wrote
                values = [j.scores[name] for j, _ in ok]
            out["scores"][name] = statistics.fmean(values)
            out["score_spread"][name] = spread(values)
            out["rationales"][name] = ok[0][0].rationales.get(name, "")
        return out


def spread(values: Sequence[float]) -> float:
    """The population standard deviation of a few scores, in floats: what
    ``statistics.pstdev`` gives, which computes in exact fractions, 25x slower, and is
    taken for each dimension of every answer a build reads (twice: by the judge step and
    by the build's end)."""
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
