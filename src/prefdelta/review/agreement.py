"""Judge-human agreement: accuracy and Cohen's kappa per dimension and overall.

Both raters are put on the same three categories, in un-blinded terms:

- ``chosen``: the chosen trace is better; ``rejected``: the rejected trace is better;
- ``same``: neither is better. For the judge that is a delta of exactly 0 on that dimension
  (for ``overall``: an aggregate delta of 0); for a reviewer it is the answer "same" on a
  dimension or "tie" on the overall preference.

"same" is a category of its own, not dropped and not half a point: a reviewer who calls a
tie where the judge saw a gap disagrees with it, and that should show. Kappa corrects the
raw accuracy for the agreement two raters with these marginals would reach by chance; it is
what to read when one category dominates (the judge usually prefers ``chosen``).

Each submitted response is one comparison with the judge: a pair reviewed by two people
counts twice.

The generator-level check needs no judge: per generator pair, how often reviewers found
the chosen generator's trace the better one overall (:func:`generator_preference`). It
covers the pairs the judge could not score as well.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

CATEGORIES = ("chosen", "rejected", "same")
OVERALL = "overall"


def judge_label(delta: float | None) -> str | None:
    """The judge's view of one dimension: the sign of chosen-minus-rejected."""
    if delta is None:
        return None
    if delta > 0:
        return "chosen"
    if delta < 0:
        return "rejected"
    return "same"


def cohen_kappa(
    pairs: Iterable[tuple[str, str]], categories: Sequence[str] = CATEGORIES
) -> float | None:
    """Cohen's kappa of (rater 1, rater 2) labels: (p_o - p_e) / (1 - p_e).

    None when it is undefined: no pairs, or chance agreement of 1 (both raters gave one and
    the same label to everything, so there is nothing to correct for).
    """
    pairs = list(pairs)
    n = len(pairs)
    if n == 0:
        return None
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    observed = sum(a == b for a, b in pairs) / n
    expected = sum(first[c] * second[c] for c in categories) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class Agreement:
    """Judge-human agreement on one question, over ``n`` (judge, human) label pairs."""

    question: str
    n: int
    agree: int
    accuracy: float | None
    kappa: float | None
    judge: dict[str, int]  # label -> count
    human: dict[str, int]
    confusion: dict[str, dict[str, int]]  # judge label -> human label -> count
    # reviewers' answers where the judge gave no view (it could not score the pair): they
    # count for nothing above, and are still answers
    unjudged: dict[str, int] = field(default_factory=dict)

    @property
    def unjudged_count(self) -> int:
        return sum(self.unjudged.values())

    @property
    def answered(self) -> dict[str, int]:
        """Every reviewer answer to the question, the judge's view or not."""
        return {c: self.human.get(c, 0) + self.unjudged.get(c, 0) for c in CATEGORIES}


def agreement(
    question: str, pairs: Iterable[tuple[str, str]], categories: Sequence[str] = CATEGORIES
) -> Agreement:
    """Accuracy, kappa and counts for (judge, human) label pairs."""
    pairs = list(pairs)
    n = len(pairs)
    agree = sum(j == h for j, h in pairs)
    judge = Counter(j for j, _ in pairs)
    human = Counter(h for _, h in pairs)
    confusion = {j: {h: 0 for h in categories} for j in categories}
    for j, h in pairs:
        confusion.setdefault(j, {}).setdefault(h, 0)
        confusion[j][h] += 1
    return Agreement(
        question=question,
        n=n,
        agree=agree,
        accuracy=agree / n if n else None,
        kappa=cohen_kappa(pairs, categories),
        judge={c: judge[c] for c in categories},
        human={c: human[c] for c in categories},
        confusion=confusion,
    )


def agreement_table(
    reviews: Iterable[Mapping[str, str | None]], questions: Sequence[str]
) -> list[Agreement]:
    """One :class:`Agreement` per question from review rows.

    Each row holds the reviewer's un-blinded label under ``question`` and the judge's under
    ``judge_<question>``; a row where either is missing does not count for that question.
    """
    rows = list(reviews)
    out = []
    for q in questions:
        pairs = [
            (str(r[f"judge_{q}"]), str(r[q]))
            for r in rows
            if r.get(q) is not None and r.get(f"judge_{q}") is not None
        ]
        alone = Counter(
            str(r[q]) for r in rows if r.get(q) is not None and r.get(f"judge_{q}") is None
        )
        out.append(replace(agreement(q, pairs), unjudged={c: alone[c] for c in CATEGORIES}))
    return out


@dataclass(frozen=True)
class GeneratorPreference:
    """Reviewers' overall answers for one generator pair, in un-blinded terms."""

    generator_pair: str
    chosen: int  # the chosen generator's trace was the better one
    rejected: int
    tie: int

    @property
    def n(self) -> int:
        return self.chosen + self.rejected + self.tie

    @property
    def chosen_share(self) -> float | None:
        return self.chosen / self.n if self.n else None


def generator_preference(
    reviews: Iterable[Mapping[str, str | None]], question: str = OVERALL
) -> list[GeneratorPreference]:
    """Per generator pair (sorted by name), the reviewers' answers to ``question``."""
    counts: dict[str, Counter[str]] = {}
    for r in reviews:
        answer = r.get(question)
        if answer is not None:
            counts.setdefault(str(r.get("generator_pair")), Counter())[answer] += 1
    return [
        GeneratorPreference(pair, c["chosen"], c["rejected"], c["same"])
        for pair, c in sorted(counts.items())
    ]
