"""Judge-human agreement: accuracy and Cohen's kappa per dimension and overall, with intervals.

Both raters are put on the same three categories, in un-blinded terms:

- ``chosen``: the chosen trace is better; ``rejected``: the rejected trace is better;
- ``same``: neither is better. For the judge that is a delta inside the tie band,
  ``|delta| < tie_band`` on that dimension (for ``overall``: on the aggregate delta; a band of
  0 keeps only an exact 0); for a reviewer it is the answer "same" on a dimension or "tie" on
  the overall preference. Probability-weighted scores are almost never exactly equal, so
  without a band the judge would never say "same" while reviewers often do.

"same" is a category of its own, not dropped and not half a point: a reviewer who calls a
tie where the judge saw a gap disagrees with it, and that should show. Kappa corrects the
raw accuracy for the agreement two raters with these marginals would reach by chance; it is
what to read when one category dominates (the judge usually prefers ``chosen``).

Each submitted response is one comparison with the judge: a pair reviewed by two people
counts twice. The 95% intervals are percentile bootstraps over the reviewed records (pairs),
each resampled record bringing all of its comparisons (:func:`prefdelta.stats.bootstrap_interval`).

Where two or more reviewers answered the same record, their agreement with each other is
the ceiling to read the judge's against (:func:`reviewer_agreement`): a judge cannot be
expected to agree with reviewers more than they agree among themselves.

The generator-level check needs no judge: per generator pair, how often reviewers found
the chosen generator's trace the better one overall (:func:`generator_preference`). It
covers the pairs the judge could not score as well.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and scipy load when an interval is computed, not with the CLI
    import numpy as np

CATEGORIES = ("chosen", "rejected", "same")
OVERALL = "overall"

DEFAULT_TIE_BAND = 0.25
"""Score points within which the judge's delta counts as "same" when scoring it against
reviewers. A quarter point on the default 1-5 scale: a probability-weighted score moves by
that much when a quarter of the judge's probability shifts to the next score, a difference no
reviewer asked "which is better?" could be expected to see. Set it per pull (``--tie-band``)."""


def judge_label(delta: float | None, tie_band: float = 0.0) -> str | None:
    """The judge's view of one dimension: "same" when ``|delta| < tie_band`` (or exactly 0),
    else the sign of chosen-minus-rejected."""
    if delta is None:
        return None
    if delta == 0 or abs(delta) < tie_band:
        return "same"
    return "chosen" if delta > 0 else "rejected"


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
    records: int = 0  # reviewed records (pairs) behind the n comparisons: the bootstrap's units
    accuracy_interval: tuple[float, float] | None = None  # 95%, bootstrap over the records
    kappa_interval: tuple[float, float] | None = None
    # the reviewers' agreement with each other on this question, where records had several
    between_reviewers: ReviewerAgreement | None = None

    @property
    def unjudged_count(self) -> int:
        return sum(self.unjudged.values())

    @property
    def answered(self) -> dict[str, int]:
        """Every reviewer answer to the question, the judge's view or not."""
        return {c: self.human.get(c, 0) + self.unjudged.get(c, 0) for c in CATEGORIES}


def _accuracy_of_sums(agree: np.ndarray, n: np.ndarray, *_: np.ndarray, axis: int) -> np.ndarray:
    return agree.sum(axis=axis) / n.sum(axis=axis)


def _kappa_of_sums(
    agree: np.ndarray, n: np.ndarray, *marginals: np.ndarray, axis: int
) -> np.ndarray:
    """:func:`cohen_kappa` from per-record counts summed over a resample; NaN where p_e is 1."""
    import numpy as np

    total = n.sum(axis=axis)
    k = len(marginals) // 2
    expected = sum(
        f.sum(axis=axis) * s.sum(axis=axis)
        for f, s in zip(marginals[:k], marginals[k:], strict=True)
    ) / (total * total)
    observed = agree.sum(axis=axis) / total
    with np.errstate(invalid="ignore", divide="ignore"):  # p_e = 1: NaN, picked out here
        return np.where(expected >= 1.0, np.nan, (observed - expected) / (1.0 - expected))


def record_columns(
    pairs: Sequence[tuple[str, str]], records: Sequence[Hashable], categories: Sequence[str]
) -> list[list[int]]:
    """Per record: agreeing pairs, pairs, then each rater's count per category.

    Accuracy and kappa are functions of these sums, so resampling records (each with all of
    its pairs) is resampling these columns together.
    """
    order: dict[Hashable, int] = {}
    for key in records:
        order.setdefault(key, len(order))
    columns = [[0] * len(order) for _ in range(2 + 2 * len(categories))]
    index = {c: i for i, c in enumerate(categories)}
    for (a, b), key in zip(pairs, records, strict=True):
        i = order[key]
        columns[0][i] += a == b
        columns[1][i] += 1
        if a in index:
            columns[2 + index[a]][i] += 1
        if b in index:
            columns[2 + len(categories) + index[b]][i] += 1
    return columns


def intervals(
    pairs: Sequence[tuple[str, str]],
    records: Sequence[Hashable],
    categories: Sequence[str] = CATEGORIES,
    *,
    seed: int = 0,
) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """95% percentile-bootstrap intervals of (accuracy, kappa) over the records
    (:data:`prefdelta.stats.RESAMPLES` resamples drawn with ``seed``).

    ``records[i]`` names the record of ``pairs[i]``; resamples are drawn over the records in
    the order they first appear. Resamples where kappa is undefined are left out of its
    interval.
    """
    from prefdelta.stats import bootstrap_interval

    if not pairs:
        return None, None
    columns = record_columns(pairs, records, categories)
    return (
        bootstrap_interval(columns, _accuracy_of_sums, seed=seed),
        bootstrap_interval(columns, _kappa_of_sums, seed=seed),
    )


def agreement(
    question: str,
    pairs: Iterable[tuple[str, str]],
    categories: Sequence[str] = CATEGORIES,
    *,
    records: Sequence[Hashable] | None = None,
    seed: int = 0,
) -> Agreement:
    """Accuracy, kappa, their intervals and counts for (judge, human) label pairs.

    ``records`` names the reviewed record of each pair (the bootstrap's unit); by default
    each pair is its own record.
    """
    pairs = list(pairs)
    n = len(pairs)
    keys = list(range(n)) if records is None else list(records)
    accuracy_ci, kappa_ci = intervals(pairs, keys, categories, seed=seed)
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
        records=len(set(keys)),
        accuracy_interval=accuracy_ci,
        kappa_interval=kappa_ci,
    )


@dataclass(frozen=True)
class ReviewerAgreement:
    """Reviewers' agreement with each other on one question: every pair of reviewers who
    answered the same record is one comparison, the reviewer first by name as rater 1 (with
    two reviewers on every record, their Cohen's kappa)."""

    question: str
    records: int  # records answered by two or more reviewers
    n: int  # reviewer pairs compared
    agree: int
    accuracy: float | None
    kappa: float | None
    accuracy_interval: tuple[float, float] | None = None
    kappa_interval: tuple[float, float] | None = None


def reviewer_agreement(
    question: str,
    answers: Mapping[Hashable, Mapping[str, str]],
    categories: Sequence[str] = CATEGORIES,
    *,
    seed: int = 0,
) -> ReviewerAgreement:
    """Pairwise percent agreement and Cohen's kappa between reviewers of the same records.

    ``answers``: record -> reviewer -> label. Records with fewer than two answers count for
    nothing; the intervals bootstrap over the records that have two or more.
    """
    pairs: list[tuple[str, str]] = []
    keys: list[Hashable] = []
    for key, by_reviewer in answers.items():
        for (_, a), (_, b) in combinations(sorted(by_reviewer.items()), 2):
            pairs.append((a, b))
            keys.append(key)
    n = len(pairs)
    agree = sum(a == b for a, b in pairs)
    accuracy_ci, kappa_ci = intervals(pairs, keys, categories, seed=seed)
    return ReviewerAgreement(
        question=question,
        records=len(set(keys)),
        n=n,
        agree=agree,
        accuracy=agree / n if n else None,
        kappa=cohen_kappa(pairs, categories),
        accuracy_interval=accuracy_ci,
        kappa_interval=kappa_ci,
    )


def agreement_table(
    reviews: Iterable[Mapping[str, str | None]], questions: Sequence[str], *, seed: int = 0
) -> list[Agreement]:
    """One :class:`Agreement` per question from review rows.

    Each row holds the reviewer's un-blinded label under ``question`` and the judge's under
    ``judge_<question>``; a row where either is missing does not count for that question.
    Rows with a ``pair_id`` are grouped into records by it (the bootstrap's unit) and, with
    an ``annotator``, give the reviewers' agreement with each other where a record has several.
    """
    rows = list(reviews)
    out = []
    for q in questions:
        judged = [r for r in rows if r.get(q) is not None and r.get(f"judge_{q}") is not None]
        pairs = [(str(r[f"judge_{q}"]), str(r[q])) for r in judged]
        keys = [r.get("pair_id", i) for i, r in enumerate(judged)]
        alone = Counter(
            str(r[q]) for r in rows if r.get(q) is not None and r.get(f"judge_{q}") is None
        )
        answers: dict[Hashable, dict[str, str]] = {}
        for r in rows:
            if r.get(q) is not None and r.get("pair_id") is not None and r.get("annotator"):
                answers.setdefault(r["pair_id"], {})[str(r["annotator"])] = str(r[q])
        between = reviewer_agreement(q, answers, seed=seed)
        out.append(
            replace(
                agreement(q, pairs, records=keys, seed=seed),
                unjudged={c: alone[c] for c in CATEGORIES},
                between_reviewers=between if between.n else None,
            )
        )
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
