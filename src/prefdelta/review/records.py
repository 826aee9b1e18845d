"""A review dataset's schema and records: the fields, questions and metadata Argilla holds,
one blinded record per pair, and the A/B <-> chosen/rejected mapping both ways.

Blinding. Each record shows the prompt and the two traces as "Response A" and "Response B",
the chosen trace first or second at random (a seeded hash of seed and pair id, so the order
does not depend on what else is in the sample). Which one A is lives in the record's metadata
property ``a_is`` (``chosen`` or ``rejected``), declared ``visible_for_annotators=False``:
argilla-server 2.8.0 strips it from every record it returns to a user with the *annotator*
role (and hides it from their filters), while owners and admins still read it, so
``review pull`` un-blinds from the server alone, on any machine, with no local file to lose.

Metadata for filtering and sorting: every delta (float), the generator pair and verifier
correctness in blinded terms ("one correct", not which one). All of it is hidden from
annotators like ``a_is``, because each can tell which response is the chosen one: the
deltas are the judge's view in numbers (a signed delta next to an A/B suggestion gives the
side away), the generator pair names the two styles ("careful vs hasty"), and "one
correct" next to two final answers points at the chosen one. Owners and admins filter and
sort by all of it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prefdelta.review.agreement import OVERALL, judge_label
from prefdelta.review.argilla_client import ReviewError
from prefdelta.review.sample import generator_pair_name

if TYPE_CHECKING:
    import argilla as rg

NOTE = "note"
BLINDING = "a_is"  # metadata: which trace is Response A ("chosen" or "rejected")
GENERATOR_PAIR = "generator_pair"
CORRECTNESS = "correctness"
CORRECTNESS_TERMS = ("both correct", "one correct", "neither correct", "unknown")
SIDES = ("chosen", "rejected")
# Reviewer labels per question kind: dimension questions say "same", overall says "tie".
DIMENSION_LABELS = {"A": "Response A", "B": "Response B", "same": "About the same"}
OVERALL_LABELS = {"A": "Response A", "B": "Response B", "tie": "Tie"}
_AGENT_UNSAFE = re.compile(r"[^a-zA-Z0-9\-_:./\s]")

GUIDELINES = """\
Each record is one prompt and two reasoning traces, **Response A** and **Response B**, shown in
a random order: nothing tells you which model wrote which, and the order says nothing either.

1. **Overall preference**: which response is the better reasoning, or a tie.
2. **One question per dimension**: which response is better on that dimension alone (the
   question's description is the rubric), or about the same.
3. **Note** (optional): anything that explains a surprising answer.

Suggested answers, when shown, come from the LLM judge whose scores built this dataset: check
them, do not copy them.
"""


def blinding(pair_id: str, seed: int) -> str:
    """Which trace is Response A for this pair: ``chosen`` or ``rejected``, a fair coin per pair."""
    digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()
    return SIDES[digest[0] & 1]


def to_ab(label: str | None, a_is: str, *, tie: str = "same") -> str | None:
    """A un-blinded label (chosen / rejected / same) as the reviewer sees it (A / B / ``tie``)."""
    if label is None:
        return None
    if label == "same":
        return tie
    return "A" if label == a_is else "B"


def from_ab(answer: str | None, a_is: str) -> str | None:
    """A reviewer's answer (A / B / same / tie) un-blinded to chosen / rejected / same."""
    if answer is None:
        return None
    if answer in ("same", "tie"):
        return "same"
    if answer not in ("A", "B"):
        raise ReviewError(f"unexpected answer {answer!r}; expected A, B, same or tie")
    other = SIDES[1 - SIDES.index(a_is)]
    return a_is if answer == "A" else other


def dimensions_of(columns: Sequence[str]) -> list[str]:
    """The judged dimensions of a ``pairs`` table: its ``delta_<dimension>`` columns, in order."""
    dims = [c[len("delta_") :] for c in columns if c.startswith("delta_")]
    clash = [d for d in dims if d in (OVERALL, NOTE)]
    if clash:
        raise ReviewError(f"a dimension may not be named {clash[0]!r} in a review dataset")
    return dims


def _messages(value: Any, roles: tuple[str, ...]) -> str:
    """Conversation (list of {role, content}) -> markdown: the contents of the given roles."""
    if isinstance(value, str):
        return value
    parts = [
        str(m.get("content") or "") for m in value or [] if not roles or m.get("role") in roles
    ]
    return "\n\n".join(p for p in parts if p) or "(empty)"


def correctness_term(chosen: bool | None, rejected: bool | None) -> str:
    """Verifier correctness in blinded terms: how many of the two answers are right."""
    if chosen is None or rejected is None:
        return "unknown"
    return CORRECTNESS_TERMS[2 - int(chosen) - int(rejected)]


def _agent(model: str | None) -> str:
    text = _AGENT_UNSAFE.sub("-", model or "judge").strip() or "judge"
    return text if text[-1].isalnum() else text + "0"


def _float(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return None if f != f else f  # NaN is not allowed in Argilla metadata


def build_record(
    row: Mapping[str, Any], dims: Sequence[str], a_is: str, *, suggest: bool
) -> rg.Record:
    """One blinded review record for a pair row (as the ``pairs`` config holds it)."""
    import argilla as rg

    chosen = _messages(row["chosen"], ("assistant",))
    rejected = _messages(row["rejected"], ("assistant",))
    a, b = (chosen, rejected) if a_is == "chosen" else (rejected, chosen)
    metadata: dict[str, Any] = {
        BLINDING: a_is,
        GENERATOR_PAIR: generator_pair_name(
            row.get("chosen_generator"), row.get("rejected_generator")
        ),
        CORRECTNESS: correctness_term(row.get("chosen_correct"), row.get("rejected_correct")),
    }
    for column in ["delta", *(f"delta_{d}" for d in dims)]:
        value = _float(row.get(column))
        if value is not None:
            metadata[column] = value
    suggestions = []
    if suggest:
        agent = _agent(row.get("judge_model"))
        judged = [(OVERALL, row.get("delta"), "tie")] + [
            (d, row.get(f"delta_{d}"), "same") for d in dims
        ]
        for question, delta, tie in judged:
            value = to_ab(judge_label(_float(delta)), a_is, tie=tie)
            if value is not None:
                suggestions.append(rg.Suggestion(question, value, agent=agent))
    return rg.Record(
        id=str(row["pair_id"]),
        fields={
            "prompt": _messages(row["prompt"], ("system", "user")),
            "response_a": a,
            "response_b": b,
        },
        metadata=metadata,
        suggestions=suggestions,
    )


def review_settings(
    dims: Sequence[str], rubrics: Mapping[str, str], reviewers_per_record: int = 1
) -> rg.Settings:
    """Fields, questions and metadata of a review dataset for these dimensions; a record is
    complete once ``reviewers_per_record`` reviewers have submitted it (Argilla's task
    distribution), so with 2 or more the reviewers can be compared with each other."""
    import argilla as rg

    questions: list[Any] = [
        rg.LabelQuestion(
            name=OVERALL,
            title="Overall, which response is the better reasoning?",
            labels=OVERALL_LABELS,
        )
    ]
    for d in dims:
        questions.append(
            rg.LabelQuestion(
                name=d,
                title=f"Which response is better on {d.replace('_', ' ')}?",
                description=rubrics.get(d),
                labels=DIMENSION_LABELS,
            )
        )
    questions.append(
        rg.TextQuestion(name=NOTE, title="Note (optional)", required=False, use_markdown=False)
    )
    # every property can give the blinding away (see the module docstring): annotators see none
    metadata: list[Any] = [
        rg.FloatMetadataProperty(
            name="delta", title="delta (aggregate)", visible_for_annotators=False
        ),
        *(
            rg.FloatMetadataProperty(
                name=f"delta_{d}", title=f"delta {d}", visible_for_annotators=False
            )
            for d in dims
        ),
        rg.TermsMetadataProperty(
            name=GENERATOR_PAIR, title="generator pair", visible_for_annotators=False
        ),
        rg.TermsMetadataProperty(
            name=CORRECTNESS, options=list(CORRECTNESS_TERMS), visible_for_annotators=False
        ),
        rg.TermsMetadataProperty(
            name=BLINDING,
            title="Response A is",
            options=list(SIDES),
            visible_for_annotators=False,
        ),
    ]
    return rg.Settings(
        guidelines=GUIDELINES,
        fields=[
            rg.TextField(name="prompt", title="Prompt", use_markdown=True),
            rg.TextField(name="response_a", title="Response A", use_markdown=True),
            rg.TextField(name="response_b", title="Response B", use_markdown=True),
        ],
        questions=questions,
        metadata=metadata,
        distribution=rg.TaskDistribution(min_submitted=reviewers_per_record),
    )


def check_compatible(dataset: rg.Dataset, dims: Sequence[str]) -> None:
    """Refuse to upsert into a dataset whose questions or blinding are not this review's."""
    have = {q.name for q in dataset.settings.questions}
    want = {OVERALL, NOTE, *dims}
    metadata = {m.name for m in dataset.settings.metadata}
    if have != want or BLINDING not in metadata:
        raise ReviewError(
            f"Argilla dataset {dataset.name!r} exists with other questions "
            f"({', '.join(sorted(have))}) than this review needs ({', '.join(sorted(want))}); "
            "pick another --dataset-name"
        )


def review_dimensions(dataset: rg.Dataset) -> list[str]:
    """The dimension questions of a review dataset, in their order."""
    return [q.name for q in dataset.settings.questions if q.name not in (OVERALL, NOTE)]


def hide_revealing_metadata(dataset: rg.Dataset) -> list[str]:
    """Hide from annotators every metadata property of an existing review dataset that is
    still visible to them (a dataset pushed before they were all hidden); returns their
    names. A property's visibility is a server-side setting, so this fixes what every
    annotator is served, records already pushed included."""
    changed = []
    for prop in dataset.settings.metadata:
        if prop.visible_for_annotators:
            prop.visible_for_annotators = False
            prop.update()
            changed.append(prop.name)
    return changed
