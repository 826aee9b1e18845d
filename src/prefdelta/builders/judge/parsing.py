"""Turn a judge's free-form answer into per-dimension scores, robustly and honestly.

Judges, small ones especially, rarely return the exact JSON they were asked for: they
fence it, add prose, leave trailing commas, use single quotes, rename keys
("Step coherence"), write ``**Factuality**: 4/5`` lines instead, or refuse. Every delta
in a dataset rests on these numbers, so the parser accepts every such shape it can
read unambiguously, but never invents or bends a score: a value outside the scale is an
error that names the dimension and the value, a missing dimension is an error that names
it, and ``status == "ok"`` guarantees an in-range float for every dimension.

One lenient parser for prose judge answers (JSON, then repaired JSON, then labelled
lines), whose fallbacks are read together to know what a status means; the forgiving JSON
reader itself is :mod:`prefdelta.builders.judge.lenient_json`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from prefdelta.builders.judge.lenient_json import objects_in
from prefdelta.builders.judge.thinking import split_reasoning

JudgeStatus = Literal[
    "ok",
    "parse_error",
    "refused",
    "truncated",
    "schema_violation",
    "empty",
    "failed",
    "empty_trace",
    "over_context",
    "empty_part",
]
JUDGE_STATUSES: tuple[str, ...] = (
    "ok",
    "parse_error",
    "refused",
    "truncated",
    "schema_violation",
    "empty",  # the call succeeded with no text
    "failed",  # the call itself failed (after the client's retries)
    "empty_trace",  # the generator answered no text: nothing to judge, never asked
    "over_context",  # too long for the judge's context (judge.reads): never asked
    "empty_part",  # the part judge.reads names is empty (no final answer): never asked
)
# A trace with no text (empty or whitespace): kept, counted, not judged, never paired.
EMPTY_TRACE: JudgeStatus = "empty_trace"
# A trace whose judge prompt would not fit the judge's context: kept, counted, not judged.
OVER_CONTEXT: JudgeStatus = "over_context"
# A trace with text whose read part (judge.reads: the answer, say) is empty: not judged.
EMPTY_PART: JudgeStatus = "empty_part"

__all__ = [
    "EMPTY_PART",
    "EMPTY_TRACE",
    "JUDGE_STATUSES",
    "OVER_CONTEXT",
    "JudgeStatus",
    "Judgment",
    "parse_judgment",
]


@dataclass(frozen=True)
class Judgment:
    """One parsed judge answer.

    ``scores`` and ``rationales`` are filled only when ``status == "ok"`` (then they hold
    every dimension, in the order asked); otherwise ``problem`` says what went wrong, so a
    failed judgment can never be mistaken for a partial one.
    """

    status: JudgeStatus
    scores: dict[str, float] = field(default_factory=dict)
    rationales: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    probs: dict[str, list[float]] | None = None  # per dimension over the scale, when known

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def parse_judgment(
    text: str | None,
    dimensions: Iterable[Any],
    scale: Sequence[int],
    *,
    truncated: bool = False,
) -> Judgment:
    """Parse a judge's answer; never raises.

    Args:
        text: the judge's raw output (``None`` when the LLM returned nothing).
        dimensions: dimension names, or objects/dicts with a ``name``.
        scale: ``(low, high)``; scores outside it are errors, never clamped.
        truncated: the generation hit its token budget; an answer that cannot be fully
            read is then reported as ``truncated`` rather than ``parse_error``.
    """
    names = _dimension_names(dimensions)
    low, high = float(scale[0]), float(scale[1])
    try:
        return _parse(text, names, low, high, truncated)
    except Exception as exc:  # a malformed answer must never take a pipeline down
        return Judgment(
            "truncated" if truncated else "parse_error",
            problem=f"parser failure ({type(exc).__name__}: {exc})",
        )


# --------------------------------------------------------------------------- driver


def _dimension_names(dimensions: Iterable[Any]) -> list[str]:
    names = []
    for d in dimensions:
        if isinstance(d, str):
            names.append(d)
        elif isinstance(d, Mapping):
            names.append(str(d["name"]))
        else:
            names.append(str(d.name))
    return names


@dataclass
class _Found:
    """Every value seen for one dimension, in document order, plus its rationale."""

    values: list[Any] = field(default_factory=list)
    rationale: str | None = None


def _parse(
    text: str | None, names: list[str], low: float, high: float, truncated: bool
) -> Judgment:
    failed: JudgeStatus = "truncated" if truncated else "parse_error"
    if text is None or not text.strip():
        return Judgment(failed, problem="the judge returned no text")
    body = _strip_reasoning(text)
    if body is None:
        return Judgment(
            failed, problem="the judge's <think> block never closed; no answer followed"
        )
    if not body.strip():
        return Judgment(failed, problem="the judge returned only reasoning, no answer")

    found = _from_json(body, names) or _from_text(body, names)
    if not found:
        if _REFUSAL.search(body[:600]):
            snippet = " ".join(body.split())[:100]
            return Judgment("refused", problem=f"the judge declined: {snippet!r}")
        return Judgment(failed, problem="no score found for any dimension")

    scores: dict[str, float] = {}
    rationales: dict[str, str] = {}
    value_problems: list[str] = []
    missing: list[str] = []
    for name in names:
        item = found.get(name)
        if item is None:
            missing.append(name)
            continue
        score, problem = _resolve(name, item.values, low, high)
        if problem is not None:
            value_problems.append(problem)
        else:
            assert score is not None
            scores[name] = score
            rationales[name] = (item.rationale or "").strip()

    if value_problems:
        if missing:
            value_problems.append(f"missing dimensions: {', '.join(missing)}")
        return Judgment("parse_error", problem="; ".join(value_problems))
    if missing:
        return Judgment(failed, problem=f"missing dimensions: {', '.join(missing)}")
    return Judgment("ok", scores=scores, rationales=rationales)


def _strip_reasoning(text: str) -> str | None:
    """The answer part of a reasoning model's output; None if reasoning never ended."""
    split = split_reasoning(text)
    return split.answer if split.closed else None


_REFUSAL = re.compile(
    r"\b(?:I\s+can(?:no|'|’)?t|I\s+cannot|I\s+(?:am|'m|’m)\s+(?:not\s+able|unable|sorry)"
    r"|I\s+won(?:'|’)t|I\s+will\s+not|I\s+must\s+decline|I\s+apologi[sz]e"
    r"|as\s+an\s+AI|as\s+a\s+(?:large\s+)?language\s+model|I'm\s+not\s+comfortable)\b",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------- scores

_NUM = r"[-+]?\d+(?:\.\d+)?"
_SCORE_STR = re.compile(
    r"^[\s*_\"'`\[(]*(?:(?:score|rating|grade)\s*[:=]?\s*)?"
    rf"({_NUM})(?:\s*(?:/|out\s+of\b|of\b)\s*({_NUM}))?",
    re.IGNORECASE,
)


def _resolve(
    name: str, values: list[Any], low: float, high: float
) -> tuple[float | None, str | None]:
    """The first readable value for a dimension, checked against the scale."""
    first_problem: str | None = None
    for value in values:
        number, problem = _to_number(value, high)
        if number is None:
            first_problem = first_problem or f"{name}: {problem}"
            continue
        shown = _show(value)
        if not math.isfinite(number):
            return None, f"{name}: score {shown} is not a finite number"
        if not low <= number <= high:
            return None, f"{name}: score {shown} is outside the scale {_fmt(low)}-{_fmt(high)}"
        return number, None
    return None, first_problem or f"{name}: no score given"


def _to_number(value: Any, high: float) -> tuple[float | None, str | None]:
    if isinstance(value, bool) or value is None:
        return None, f"score {json.dumps(value)} is not a number"
    if isinstance(value, int | float):
        return float(value), None
    if isinstance(value, str):
        m = _SCORE_STR.match(value)
        if not m:
            return None, f"no numeric score in {_show(value)}"
        number = float(m.group(1))
        if m.group(2) is not None and float(m.group(2)) != high:
            # "8/10" on a 1-5 scale: rescaling would guess the judge's intent; refuse.
            shown = f"{m.group(1)}/{m.group(2)}"
            return None, f"score {shown!r} is not on the scale (its top is {_fmt(high)})"
        return number, None
    return None, f"score {_show(value)} is not a number"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    s = value if isinstance(value, str) else json.dumps(value, default=str)
    s = " ".join(s.split())
    return repr(s[:60] + ("..." if len(s) > 60 else ""))


# --------------------------------------------------------------------------- keys


def _compact(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


_SCORE_KEYS = frozenset({"score", "rating", "value", "grade", "points", "mark", "rate"})
_RATIONALE_KEYS = frozenset({
    "rationale", "reason", "reasoning", "explanation", "justification", "comment",
    "comments", "feedback", "why", "analysis", "critique", "notes",
})  # fmt: skip
_NAME_KEYS = frozenset(
    {"dimension", "name", "criterion", "criteria", "aspect", "metric", "category"}
)


def _plural_stripped(key: str) -> str:
    return key[:-1] if key.endswith("s") else key


class _KeyMatcher:
    """Maps a key such as "Step coherence", "step-coherence" or "factuality_score"."""

    def __init__(self, names: list[str]) -> None:
        self.by_compact = {_compact(n): n for n in names}

    def match(self, key: str) -> tuple[str | None, str]:
        """(dimension, role) with role "entry", "score" or "rationale"."""
        c = _compact(key)
        if c in self.by_compact:
            return self.by_compact[c], "entry"
        for compact, name in self.by_compact.items():
            if c.startswith(compact):
                rest = c[len(compact) :]
                if rest in _SCORE_KEYS:
                    return name, "score"
                if rest in _RATIONALE_KEYS:
                    return name, "rationale"
        return None, ""


# --------------------------------------------------------------------------- JSON


def _from_json(body: str, names: list[str]) -> dict[str, _Found]:
    """Dimensions found in every JSON-like object of the answer (first one wins)."""
    matcher = _KeyMatcher(names)
    found: dict[str, _Found] = {}
    for obj in _json_candidates(body):
        _collect(obj, matcher, found)
    return found


_FENCE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


def _json_candidates(body: str) -> Iterator[Any]:
    fenced = [m.group(1) for m in _FENCE.finditer(body)]
    for chunk in [*fenced, body]:
        yield from objects_in(chunk)


def _collect(obj: Any, matcher: _KeyMatcher, found: dict[str, _Found]) -> None:
    """Breadth-first walk so the shallowest mention of a dimension wins."""
    queue: list[tuple[Any, str]] = [(obj, "")]
    seen = 0
    while queue and seen < 5000:
        node, parent = queue.pop(0)
        seen += 1
        if isinstance(node, list):
            queue.extend((item, parent) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        parent_role = _plural_stripped(parent)
        # [{"dimension": "factuality", "score": 4, "rationale": "..."}, ...]
        for k, v in node.items():
            if _compact(str(k)) in _NAME_KEYS and isinstance(v, str):
                name, role = matcher.match(v)
                if name is not None and role == "entry":
                    _add_entry(found, name, node)
        for k, v in node.items():
            name, role = matcher.match(str(k))
            if name is None:
                queue.append((v, _compact(str(k))))
                continue
            item = found.setdefault(name, _Found())
            if role == "rationale" or (parent_role in _RATIONALE_KEYS and isinstance(v, str)):
                if item.rationale is None and isinstance(v, str):
                    item.rationale = v
            elif role == "score":
                item.values.append(v)
            else:
                _add_entry(found, name, v)


def _add_entry(found: dict[str, _Found], name: str, value: Any) -> None:
    item = found.setdefault(name, _Found())
    if isinstance(value, dict):
        for k, v in value.items():
            c = _compact(str(k))
            if c in _SCORE_KEYS or c.endswith("score") or c.endswith("rating"):
                item.values.append(v)
            elif c in _RATIONALE_KEYS and isinstance(v, str) and item.rationale is None:
                item.rationale = v
        if not item.values:
            item.values.append(value)  # reported as "not a number", never dropped
    elif isinstance(value, list):
        nums = [v for v in value if isinstance(v, int | float | str) and not isinstance(v, bool)]
        texts = [v for v in value if isinstance(v, str)]
        item.values.extend(nums[:1] or [value])
        if texts and item.rationale is None and len(value) > 1:
            item.rationale = max(texts, key=len)
    else:
        item.values.append(value)


def _label_regex(name: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in re.split(r"[_\s]+", name) if w]
    label = r"[\s_-]*".join(words)
    return re.compile(
        # a line start (after list or heading marks), a quoted key after { or , (broken
        # one-line JSON), or a table cell; never a mention inside a sentence
        r"(?:^[ \t]*(?:[#>*+|-]+[ \t]*)*(?:\d{1,2}[.)][ \t]*)?|(?<=[{,])[ \t]*(?=[\"'])"
        r"|(?<=\|)[ \t]*)[*_\"'`]*"
        rf"{label}"
        r"(?:[ \t_-]*(?:score|rating))?[*_\"'`]*(?![a-z0-9])",
        re.IGNORECASE | re.MULTILINE,
    )


_LEAD = re.compile(r"(?:[\s*_\"'`:=|\[\](){}–—]|-(?=\s)|(?:score|rating|grade)\b)*", re.IGNORECASE)
_NUM_AT = re.compile(rf"({_NUM})(?:\s*(?:/|out\s+of\b)\s*({_NUM}))?", re.IGNORECASE)
_KEYWORD_SCORE = re.compile(
    rf"\b(?:score|rating|grade)\b[\s:=*_\"'`\[(]{{0,6}}({_NUM}(?:\s*(?:/|out\s+of\b)\s*{_NUM})?)",
    re.IGNORECASE,
)
_EXPRESSION = re.compile(r"\s*(?:[*+×x=^<>]|-\s*\d|\.\d)")
_FRACTION = re.compile(rf"{_NUM}\s*(?:/|out\s+of\b)\s*{_NUM}", re.IGNORECASE)
_RATIONALE_LEAD = re.compile(
    r"^[\s*_\"'`:=|\-–—.,)\]}]*(?:(?:rationale|reason|explanation|justification)\b[\s*_:]*)?",
    re.IGNORECASE,
)


def _from_text(body: str, names: list[str]) -> dict[str, _Found]:
    """``Dimension: 4`` lines, ``**Factuality**: 4/5``, headings with a score below."""
    labels: list[tuple[int, int, str]] = []
    for name in names:
        labels.extend((m.start(), m.end(), name) for m in _label_regex(name).finditer(body))
    labels.sort(key=lambda t: (t[0], -(t[1] - t[0])))
    found: dict[str, _Found] = {}
    for idx, (_start, end, name) in enumerate(labels):
        if name in found:
            continue
        seg_end = next((s for s, _, _ in labels[idx + 1 : idx + 8] if s >= end), len(body))
        segment = body[end:seg_end]
        hit = _score_in(segment)
        if hit is None:
            continue
        value, begin, after = hit
        rationale = _RATIONALE_LEAD.sub("", segment[after:], count=1).strip(" \t\n|*_")
        if not rationale:  # "Factuality: the facts hold. Score: 4"
            rationale = _RATIONALE_LEAD.sub("", segment[:begin], count=1).strip(" \t\n|*_")
            rationale = rationale.rstrip(" \t\n*_:=([")
            for word in ("score", "rating", "grade"):
                if rationale.lower().endswith(word):
                    rationale = rationale[: -len(word)].rstrip(" \t\n*_:=([")
        found[name] = _Found(values=[value], rationale=" ".join(rationale.split())[:2000])
    return found


def _score_in(segment: str) -> tuple[str, int, int] | None:
    """(score text, end offset) for the section after a label, most explicit form first:
    "Score: N" on the label's line, a number right after the label, a number alone on the
    next line (headings), "Score: N" further down, a fraction on the label's line."""
    line_end = segment.find("\n")
    line = segment if line_end < 0 else segment[:line_end]
    m = _KEYWORD_SCORE.search(line)
    if m:
        return m.group(1), m.start(1), m.end()
    lead = _LEAD.match(segment)
    m = _NUM_AT.match(segment, lead.end() if lead else 0)
    if m and _EXPRESSION.match(segment, m.end()):
        m = None  # "6*7 is given as 43": a quantity from the trace, not a score
    if m and (line_end < 0 or m.start() <= line_end):
        return m.group(0), m.start(), m.end()
    if m and not line.strip(" \t*_:#") and not re.match(r"[.)]\s", segment[m.end() :]):
        return m.group(0), m.start(), m.end()
    m = _KEYWORD_SCORE.search(segment)
    if m:
        return m.group(1), m.start(1), m.end()
    m = _FRACTION.search(line)
    if m:
        return m.group(0), m.start(), m.end()
    return None
