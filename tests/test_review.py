"""`prefdelta review push|pull` against a real Argilla server, no mocks.

The server is the session's stack from tests/support/argilla_fixtures.py.

Reviewers are annotator accounts answering through the argilla SDK with their own API keys, as
the web UI does; the owner pushes and pulls. Agreement numbers are worked out by hand.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest
from huggingface_hub import DatasetCard
from typer.testing import CliRunner

from prefdelta.cli import app
from prefdelta.push import publish_build
from prefdelta.review.agreement import GeneratorPreference, judge_label
from prefdelta.review.argilla_client import ArgillaUnreachable, ReviewError
from prefdelta.review.pull import pull_reviews
from prefdelta.review.send import push_review
from prefdelta.review.stack import ArgillaStack
from support.argilla_fixtures import argilla_stack, not_argilla  # noqa: F401
from support.build_fixtures import make_build
from support.hub_server import HubServer

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

DIMS = ("factuality", "strategy_coherence", "step_coherence", "numerical_precision")
runner = CliRunner()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review")
    publish_build(make_build(root / "build", n_prompts=30), root / "published")
    return root / "published"


@pytest.fixture(scope="module")
def owner(argilla_stack: ArgillaStack) -> Any:  # noqa: F811
    import argilla as rg

    return rg.Argilla(api_url=argilla_stack.api_url, api_key=argilla_stack.api_key)


@pytest.fixture
def api(argilla_stack: ArgillaStack) -> dict[str, str]:  # noqa: F811
    return {"api_url": argilla_stack.api_url, "api_key": argilla_stack.api_key}


def _annotator(owner: Any, name: str, workspace: str = "prefdelta") -> Any:
    """An annotator account in the workspace, and an SDK client signed in as it."""
    import argilla as rg

    user = (
        owner.users(name)
        or rg.User(
            username=name, password=f"{name}-password", role="annotator", client=owner
        ).create()
    )
    ws = owner.workspaces(workspace)
    if user.id not in {u.id for u in ws.users}:
        ws.add_user(user)
    # The SDK's user model drops the key the server returns; the owner may read it.
    key = owner.http_client.get(f"/api/v1/users/{user.id}").json()["api_key"]
    return rg.Argilla(api_url=owner.api_url, api_key=key)


def _records(owner: Any, name: str) -> dict[str, Any]:
    ds = owner.datasets(name, workspace="prefdelta")
    return {r.id: r for r in ds.records(with_suggestions=True, with_responses=True)}


def _answer(client: Any, record: Any, values: dict[str, str], status: str = "submitted") -> None:
    import argilla as rg

    response = rg.UserResponse(
        [rg.Response(q, v, user_id=client.me.id, status=status) for q, v in values.items()],
        _record=record,
    )
    client.api.records.create_record_response(record._server_id, response.api_model())


def _ab(label: str, a_is: str, tie: str = "same") -> str:
    """What a reviewer clicks to mean `label` (chosen/rejected/same), given the blinding."""
    return tie if label == "same" else ("A" if label == a_is else "B")


# ----------------------------------------------------------------------------- push


def test_push_sends_a_blinded_stratified_sample(
    published: Path, owner: Any, api: dict[str, str]
) -> None:
    result = push_review(published, n=12, dataset_name="blinded", **api)
    assert (result.created, result.updated, result.total) == (12, 0, 12)
    assert sum(s.sampled for s in result.sample.strata) == 12
    assert {s.generator_pair for s in result.sample.strata} == {
        "strong vs weak",
        "strong vs weaker",
    }
    assert result.url.startswith(api["api_url"])

    pairs = {r["pair_id"]: r for r in datasets.load_dataset(str(published), "pairs", split="train")}
    records = _records(owner, "blinded")
    assert len(records) == 12 and set(records) <= set(pairs)
    sides = set()
    for pair_id, record in records.items():
        row, meta = pairs[pair_id], record.metadata
        a_is = meta["a_is"]
        sides.add(a_is)
        a, b = (
            (row["chosen"], row["rejected"])
            if a_is == "chosen"
            else (row["rejected"], row["chosen"])
        )
        assert record.fields["response_a"] == a[-1]["content"]
        assert record.fields["response_b"] == b[-1]["content"]
        assert record.fields["prompt"] == row["prompt"][-1]["content"]
        assert meta["delta"] == pytest.approx(row["delta"])
        assert meta["generator_pair"] == f"{row['chosen_generator']} vs {row['rejected_generator']}"
        assert meta["correctness"] in ("both correct", "one correct", "neither correct", "unknown")
        suggested = {s.question_name: s.value for s in record.suggestions}
        assert suggested["overall"] == _ab(judge_label(row["delta"]), a_is, tie="tie")
        for d in DIMS:
            assert meta[f"delta_{d}"] == pytest.approx(row[f"delta_{d}"])
            assert suggested[d] == _ab(judge_label(row[f"delta_{d}"]), a_is)
    assert sides == {"chosen", "rejected"}  # the order really varies


def test_two_pushes_at_once_make_one_dataset_and_neither_fails(
    published: Path, owner: Any, api: dict[str, str]
) -> None:
    """The second push finds the dataset half created, or loses the race to create it: it
    waits for the first to finish, then upserts the same records (no "other questions")."""
    import threading

    start = threading.Barrier(2)
    results: list[Any] = []

    def push() -> None:
        start.wait()
        try:
            results.append(push_review(published, n=8, dataset_name="raced", **api))
        except Exception as exc:  # kept for the assertion, with its message
            results.append(exc)

    threads = [threading.Thread(target=push) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(r.created + r.updated for r in results) == [8, 8]
    assert len(_records(owner, "raced")) == 8


def test_review_dataset_names_do_not_depend_on_the_path_spelling(
    published: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefdelta.review.argilla_client import default_dataset_name

    monkeypatch.chdir(published.parent.parent)
    rel = f"{published.parent.name}/{published.name}"
    spellings = [rel, f"./{rel}", f"{rel}/", str(published), published, Path(rel)]
    names = {default_dataset_name(s) for s in spellings}
    assert len(names) == 1, names
    (name,) = names
    assert name.startswith("synthetic-") and name.endswith("-review") and len(name) == 29
    assert default_dataset_name("tester/Some.Data") == "tester-some-data-review"


def test_annotators_cannot_see_the_blinding(
    owner: Any, api: dict[str, str], published: Path
) -> None:
    push_review(published, n=4, dataset_name="hidden-map", **api)
    reviewer = _annotator(owner, "reviewer-blind")
    ds = owner.datasets("hidden-map", workspace="prefdelta")
    # The web UI's own search call, as the annotator.
    found = reviewer.http_client.post(f"/api/v1/me/datasets/{ds.id}/records/search", json={})
    found.raise_for_status()
    items = found.json()["items"]
    assert len(items) == 4
    for item in items:
        # no a_is, no delta, no generator pair, no correctness: nothing tells the sides apart
        assert item["record"]["metadata"] in ({}, None)
        assert set(item["record"]["fields"]) == {"prompt", "response_a", "response_b"}
    props = {m.name: m.visible_for_annotators for m in ds.settings.metadata}
    assert {"a_is", "delta", "delta_step_coherence", "generator_pair", "correctness"} <= set(props)
    assert not any(props.values())

    # a dataset pushed while a property was still shown: the next push hides it
    shown = next(m for m in ds.settings.metadata if m.name == "generator_pair")
    shown.visible_for_annotators = True
    shown.update()
    push_review(published, n=4, dataset_name="hidden-map", **api)
    again = owner.datasets("hidden-map", workspace="prefdelta")
    assert not any(m.visible_for_annotators for m in again.settings.metadata)
    found = reviewer.http_client.post(f"/api/v1/me/datasets/{ds.id}/records/search", json={})
    assert all(i["record"]["metadata"] in ({}, None) for i in found.json()["items"])


def test_repush_upserts_and_keeps_the_order(
    published: Path, owner: Any, api: dict[str, str]
) -> None:
    first = push_review(published, n=10, dataset_name="repush", seed=5, **api)
    before = {k: r.metadata["a_is"] for k, r in _records(owner, "repush").items()}
    again = push_review(published, n=10, dataset_name="repush", seed=5, **api)
    assert (again.created, again.updated, again.total) == (0, 10, 10)
    assert again.sample == first.sample
    # Another seed: another sample (new records added), but no existing record changes sides.
    other = push_review(published, n=10, dataset_name="repush", seed=6, **api)
    after = {k: r.metadata["a_is"] for k, r in _records(owner, "repush").items()}
    assert other.total == len(after) == 10 + other.created
    assert {k: after[k] for k in before} == before


def test_hide_suggestions(published: Path, owner: Any, api: dict[str, str]) -> None:
    hidden = push_review(published, n=6, dataset_name="no-hints", hide_suggestions=True, **api)
    assert not hidden.suggestions
    assert all(len(r.suggestions) == 0 for r in _records(owner, "no-hints").values())
    # Shown first, hidden on a re-push: the existing suggestions are deleted.
    push_review(published, n=6, dataset_name="hints-then-not", **api)
    assert all(len(r.suggestions) == 5 for r in _records(owner, "hints-then-not").values())
    again = push_review(published, n=6, dataset_name="hints-then-not", hide_suggestions=True, **api)
    assert again.suggestions_deleted == 30 and again.total == 6
    assert all(len(r.suggestions) == 0 for r in _records(owner, "hints-then-not").values())


def test_push_refuses_a_foreign_dataset(published: Path, owner: Any, api: dict[str, str]) -> None:
    import argilla as rg

    settings = rg.Settings(
        fields=[rg.TextField(name="text")],
        questions=[rg.LabelQuestion(name="ok", labels=["yes", "no"])],
    )
    rg.Dataset(name="foreign", workspace="prefdelta", settings=settings, client=owner).create()
    with pytest.raises(ReviewError, match="exists with other questions"):
        push_review(published, n=4, dataset_name="foreign", **api)


# ----------------------------------------------------------------------------- pull


# Six pairs with hand-picked deltas; two dimensions.
HAND = {  # pair_id: (delta, delta_factuality, delta_step_coherence)
    "h1": (2.0, 1.0, 0.0),
    "h2": (1.0, -1.0, 2.0),
    "h3": (-0.5, 0.0, -1.0),
    "h4": (1.5, 2.0, 1.0),
    "h5": (0.0, 1.0, 0.0),
    "h6": (3.0, 1.0, 3.0),
}
# What the reviewer means, un-blinded (chosen / rejected / same), per question.
MEANT = {
    "h1": ("chosen", "chosen", "same"),
    "h2": ("rejected", "rejected", "chosen"),
    "h3": ("rejected", "same", "rejected"),
    "h4": ("chosen", "chosen", "chosen"),
    "h5": ("chosen", "same", "same"),
    "h6": ("chosen", "rejected", "chosen"),
}


def _hand_pairs() -> datasets.Dataset:
    def conv(role: str, text: str) -> list[dict[str, str]]:
        return [{"role": role, "content": text}]

    rows = []
    for pid, (delta, fact, step) in HAND.items():
        rows.append(
            {
                "pair_id": pid,
                "prompt": conv("user", f"Problem {pid}"),
                "chosen": conv("assistant", f"chosen answer to {pid}"),
                "rejected": conv("assistant", f"rejected answer to {pid}"),
                "chosen_generator": "strong",
                "rejected_generator": "weak",
                "delta_factuality": fact,
                "delta_step_coherence": step,
                "delta": delta,
                "chosen_correct": True,
                "rejected_correct": False,
                "judge_model": "org/judge",
            }
        )
    return datasets.Dataset.from_list(rows)


@pytest.fixture
def target(published: Path, tmp_path: Path) -> Path:
    """A private copy of the published folder to publish reviews into."""
    copy = tmp_path / "target"
    shutil.copytree(published, copy)
    return copy


def test_pull_unblinds_and_scores_agreement_by_hand(
    target: Path, owner: Any, api: dict[str, str], tmp_path: Path
) -> None:
    push_review(target, n=6, dataset_name="by-hand", pairs=_hand_pairs(), seed=0, **api)
    records = _records(owner, "by-hand")
    assert {r.metadata["a_is"] for r in records.values()} == {"chosen", "rejected"}
    alice, bob = _annotator(owner, "alice"), _annotator(owner, "bob")
    for pid, (overall, fact, step) in MEANT.items():
        a_is = records[pid].metadata["a_is"]
        answers = {
            "overall": _ab(overall, a_is, tie="tie"),
            "factuality": _ab(fact, a_is),
            "step_coherence": _ab(step, a_is),
        }
        if pid == "h1":
            answers["note"] = "clear win"
        _answer(alice, records[pid], answers)
    # bob's draft is unfinished business: it must not count.
    _answer(bob, records["h2"], {"overall": "A", "factuality": "A", "step_coherence": "A"}, "draft")

    result = pull_reviews(target, dataset_name="by-hand", **api)
    assert [r["pair_id"] for r in result.rows] == list(MEANT)
    assert {r["annotator"] for r in result.rows} == {"alice"}
    for row in result.rows:
        overall, fact, step = MEANT[row["pair_id"]]
        assert (row["overall"], row["factuality"], row["step_coherence"]) == (overall, fact, step)
        assert row["note"] == ("clear win" if row["pair_id"] == "h1" else None)
    assert [r["judge_overall"] for r in result.rows] == [
        "chosen", "chosen", "rejected", "chosen", "same", "chosen",
    ]  # fmt: skip

    by = {a.question: a for a in result.agreement}
    # overall, (judge, human): (c,c) (c,r) (r,r) (c,c) (s,c) (c,c): 4 of 6 agree.
    # judge c4 r1 s1, human c4 r2 s0: p_e = (4*4 + 1*2 + 1*0) / 36 = 1/2
    # kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3
    assert by["overall"].n == 6
    assert by["overall"].accuracy == pytest.approx(4 / 6)
    assert by["overall"].kappa == pytest.approx(1 / 3)
    # factuality: (c,c) (r,r) (s,s) (c,c) (c,s) (c,r): 4 of 6 agree.
    # judge c4 r1 s1, human c2 r2 s2: p_e = (4*2 + 1*2 + 1*2) / 36 = 1/3
    # kappa = (2/3 - 1/3) / (2/3) = 1/2
    assert by["factuality"].accuracy == pytest.approx(4 / 6)
    assert by["factuality"].kappa == pytest.approx(0.5)
    assert by["factuality"].judge == {"chosen": 4, "rejected": 1, "same": 1}
    assert by["factuality"].human == {"chosen": 2, "rejected": 2, "same": 2}
    # step_coherence: all six agree -> accuracy 1, kappa 1 (p_e = (9 + 1 + 4) / 36 < 1).
    assert by["step_coherence"].accuracy == pytest.approx(1.0)
    assert by["step_coherence"].kappa == pytest.approx(1.0)

    # Published next to the data: a `reviews` config and the agreement in the card.
    assert result.published is not None and result.published.changed
    reviews = datasets.load_dataset(str(target), "reviews", split="train")
    assert reviews.to_list() == result.rows
    assert datasets.get_dataset_config_names(str(target)) == ["pairs", "traces", "reviews"]
    assert len(datasets.load_dataset(str(target), split="train")) > 6  # pairs is still default
    card = DatasetCard.load(target / "README.md")
    assert "## Human review" in card.text
    for a, figures in (
        (by["overall"], "0.667 {} | 0.333 {} | 4 / 1 / 1 | 4 / 2 / 0 | 0 |"),
        (by["factuality"], "0.667 {} | 0.500 {} | 4 / 1 / 1 | 2 / 2 / 2 | 0 |"),
    ):
        accuracy, kappa = (
            f"[{lo:.3f}, {hi:.3f}]" for lo, hi in (a.accuracy_interval, a.kappa_interval)
        )
        assert f"| {a.question} | 6 | {figures.format(accuracy, kappa)}" in card.text
    assert by["overall"].records == 6 and by["overall"].between_reviewers is None
    assert "Tie band: 0.25 score points" in card.text
    assert "No pair was answered by two reviewers" in card.text
    # the generator-level check: reviewers preferred the strong generator's trace 4 times in 6
    assert {r["generator_pair"] for r in result.rows} == {"strong vs weak"}
    assert result.preference == [GeneratorPreference("strong vs weak", 4, 2, 0)]
    assert "| strong vs weak | 6 | 4 | 2 | 0 | 67% |" in card.text
    assert "## Columns of `pairs`" in card.text  # the rest of the card is intact

    # A second reviewer submits: pulling again rewrites the section, never duplicates it.
    _answer(bob, records["h4"], {"overall": _ab("chosen", records["h4"].metadata["a_is"], "tie"),
                                 "factuality": "same", "step_coherence": "same"})  # fmt: skip
    again = pull_reviews(target, dataset_name="by-hand", **api)
    assert [(r["pair_id"], r["annotator"]) for r in again.rows if r["pair_id"] == "h4"] == [
        ("h4", "alice"),
        ("h4", "bob"),
    ]
    assert again.agreement[0].n == 7
    text = (target / "README.md").read_text()
    assert text.count("## Human review") == 1
    # datasets keys a local folder's cache on the config's file patterns, not on the files'
    # content: a reload after a change needs a fresh cache (so does a republished `pairs`).
    fresh = datasets.load_dataset(
        str(target), "reviews", split="train", cache_dir=str(tmp_path / "fresh-cache")
    )
    assert len(fresh) == 7
    unchanged = pull_reviews(target, dataset_name="by-hand", **api)
    assert unchanged.published is not None and not unchanged.published.changed


def test_pairs_the_judge_could_not_score_are_still_reviewed(
    target: Path, owner: Any, api: dict[str, str]
) -> None:
    """A build whose judge scored nothing: the review checks the generator-level delta."""
    unscored = _hand_pairs().map(
        lambda r: {"delta": None, "delta_factuality": None, "delta_step_coherence": None}
    )
    with pytest.raises(ReviewError, match="nothing to review"):
        push_review(target, n=4, dataset_name="no-scores", pairs=unscored, unscored=False, **api)
    result = push_review(target, n=4, dataset_name="no-scores", pairs=unscored, **api)
    assert [(s.generator_pair, s.label, s.available, s.sampled) for s in result.sample.strata] == [
        ("strong vs weak", "no score", 6, 4)
    ]
    records = _records(owner, "no-scores")
    assert len(records) == 4
    assert all(not r.suggestions for r in records.values())  # no judge view to suggest
    assert all("delta" not in r.metadata for r in records.values())
    alice = _annotator(owner, "alice")
    meant = dict(zip(sorted(records), ["chosen", "chosen", "rejected", "same"], strict=True))
    for pid, overall in meant.items():
        a_is = records[pid].metadata["a_is"]
        answer = _ab(overall, a_is, tie="tie")
        _answer(
            alice, records[pid], {"overall": answer, "factuality": "same", "step_coherence": "same"}
        )

    pulled = pull_reviews(target, dataset_name="no-scores", publish=False, **api)
    assert [a.n for a in pulled.agreement] == [0, 0, 0]  # nothing to agree with
    assert pulled.preference == [GeneratorPreference("strong vs weak", 2, 1, 1)]
    # ...but the reviewers did answer: shown as theirs, with the reason there is no kappa
    overall = pulled.agreement[0]
    assert overall.answered == {"chosen": 2, "rejected": 1, "same": 1}
    assert pulled.agreement[1].answered == {"chosen": 0, "rejected": 0, "same": 4}
    from prefdelta.review.pull import agreement_section

    section = agreement_section(pulled, str(target))
    assert "| overall | 0 | — | — | 0 / 0 / 0 | 2 / 1 / 1 | 4 |" in section
    assert "The judge scored none of the reviewed pairs" in section


# What a second reviewer means on the six hand pairs (overall, factuality, step_coherence).
BOB = {
    "h1": ("same", "chosen", "same"),
    "h2": ("rejected", "same", "chosen"),
    "h3": ("rejected", "same", "rejected"),
    "h4": ("chosen", "rejected", "chosen"),
    "h5": ("chosen", "same", "chosen"),
    "h6": ("rejected", "rejected", "chosen"),
}


def test_two_reviewers_on_the_same_records_give_the_ceiling(
    target: Path, owner: Any, api: dict[str, str], monkeypatch: Any
) -> None:
    # h1's aggregate delta is 0.2: inside the default tie band the judge says "same" overall
    pairs = _hand_pairs().map(lambda r: {"delta": 0.2 if r["pair_id"] == "h1" else r["delta"]})
    pushed = push_review(
        target, n=6, dataset_name="two-reviewers", pairs=pairs, reviewers_per_record=2, **api
    )
    assert pushed.reviewers_per_record == 2
    assert owner.datasets("two-reviewers", workspace="prefdelta").distribution.min_submitted == 2
    records = _records(owner, "two-reviewers")
    alice, bob = _annotator(owner, "alice"), _annotator(owner, "bob")
    for client, meant in ((alice, MEANT), (bob, BOB)):
        for pid, (overall, fact, step) in meant.items():
            a_is = records[pid].metadata["a_is"]
            answers = {"overall": _ab(overall, a_is, tie="tie"), "factuality": _ab(fact, a_is)}
            _answer(client, records[pid], {**answers, "step_coherence": _ab(step, a_is)})
        # Argilla counts a record done only once both have submitted it
        status = {r.status for r in _records(owner, "two-reviewers").values()}
        assert status == {"pending" if client is alice else "completed"}

    result = pull_reviews(target, dataset_name="two-reviewers", **api)
    assert result.tie_band == 0.25 and len(result.rows) == 12 and result.reviewed == 6
    by = {a.question: a for a in result.agreement}
    overall = by["overall"]
    # judge (band 0.25): h1 s, h2 c, h3 r, h4 c, h5 s, h6 c
    # alice: c r r c c c -> agrees on h3 h4 h6; bob: s r r c c r -> agrees on h1 h3 h4
    # 6 of 12; judge c6 r2 s4, humans c6 r5 s1: p_e = (36 + 10 + 4) / 144 = 50/144
    # kappa = (72/144 - 50/144) / (94/144) = 22/94
    assert (overall.n, overall.records, overall.agree) == (12, 6, 6)
    assert overall.kappa == pytest.approx(22 / 94)
    # alice against bob, overall: c/s r/r r/r c/c c/c c/r -> 4 of 6 agree
    # alice c4 r2 s0, bob c2 r3 s1: p_e = (8 + 6 + 0) / 36 = 14/36
    # kappa = (24/36 - 14/36) / (22/36) = 10/22
    between = overall.between_reviewers
    assert between is not None and (between.records, between.n, between.agree) == (6, 6, 4)
    assert between.kappa == pytest.approx(10 / 22)
    # factuality: c/c r/s s/s c/r s/s r/r -> 4 of 6; alice c2 r2 s2, bob c1 r2 s3:
    # p_e = (2 + 4 + 6) / 36 = 1/3, kappa = (2/3 - 1/3) / (2/3) = 1/2
    fact = by["factuality"].between_reviewers
    assert fact is not None and fact.accuracy == pytest.approx(4 / 6)
    assert fact.kappa == pytest.approx(0.5)
    lo, hi = between.kappa_interval or (1.0, -1.0)
    assert lo <= between.kappa <= hi and lo < hi

    # the card: intervals, the band and the ceiling beside the judge's figures
    card = (target / "README.md").read_text()
    assert "Tie band: 0.25 score points" in card and "|delta| < 0.25" in card
    assert "reviewer-reviewer kappa [95% CI]" in card
    a_lo, a_hi = overall.accuracy_interval or (0, 0)
    k_lo, k_hi = overall.kappa_interval or (0, 0)
    b_lo, b_hi = between.accuracy_interval or (0, 0)
    assert (
        f"| overall | 12 | 0.500 [{a_lo:.3f}, {a_hi:.3f}] | {22 / 94:.3f} [{k_lo:.3f}, {k_hi:.3f}] "
        f"| 6 / 2 / 4 | 6 / 5 / 1 | 0 | 6 | 0.667 [{b_lo:.3f}, {b_hi:.3f}] | {10 / 22:.3f} ["
    ) in card

    # a narrower band: h1's 0.2 is now the judge preferring the chosen trace
    narrow = pull_reviews(target, dataset_name="two-reviewers", tie_band=0.1, publish=False, **api)
    assert narrow.tie_band == 0.1
    assert [r["judge_overall"] for r in narrow.rows if r["pair_id"] == "h1"] == ["chosen"] * 2
    # alice's "chosen" on h1 now agrees with the judge and bob's "same" no longer does
    assert narrow.agreement[0].judge == {"chosen": 8, "rejected": 2, "same": 2}
    assert narrow.agreement[0].agree == 6
    assert narrow.agreement[0].between_reviewers == between  # the reviewers did not change
    with pytest.raises(ReviewError, match="--tie-band must be"):
        pull_reviews(target, dataset_name="two-reviewers", tie_band=-1, publish=False, **api)

    # the same through the CLI: the band's width and the ceiling columns in the terminal table
    monkeypatch.setenv("ARGILLA_API_URL", api["api_url"])
    monkeypatch.setenv("ARGILLA_API_KEY", api["api_key"])
    monkeypatch.setenv("COLUMNS", "300")
    args = ["review", "pull", str(target), "--dataset-name", "two-reviewers", "--no-publish"]
    pulled = runner.invoke(app, [*args, "--tie-band", "0.1"])
    assert pulled.exit_code == 0, pulled.output
    assert "tie band |delta| < 0.1" in pulled.output
    assert "reviewers against each other" in pulled.output
    refused = runner.invoke(app, [*args, "--tie-band", "-0.5"])
    assert refused.exit_code != 0 and "tie-band" in refused.output


def test_reviewers_per_record_on_a_repush(
    published: Path, owner: Any, api: dict[str, str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("ARGILLA_API_URL", api["api_url"])
    monkeypatch.setenv("ARGILLA_API_KEY", api["api_key"])
    monkeypatch.setenv("COLUMNS", "300")
    args = ["review", "push", str(published), "--n", "2", "--dataset-name", "per-record"]

    def min_submitted() -> int:
        return int(owner.datasets("per-record", workspace="prefdelta").distribution.min_submitted)

    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "1 reviewer(s) per pair" in first.output and min_submitted() == 1
    more = runner.invoke(app, [*args, "--reviewers-per-record", "3"])
    assert more.exit_code == 0, more.output
    assert "3 reviewer(s) per pair" in more.output and min_submitted() == 3
    again = runner.invoke(app, args)  # left out: the dataset keeps its setting
    assert again.exit_code == 0 and min_submitted() == 3
    assert "3 reviewer(s) per pair" in again.output
    refused = runner.invoke(app, [*args, "--reviewers-per-record", "0"])
    assert refused.exit_code != 0
    assert "--reviewers-per-record (reviewers per record) must be at least 1" in refused.output


def test_pull_to_a_new_folder_copies_the_dataset_beside_its_reviews(
    target: Path, owner: Any, api: dict[str, str], tmp_path: Path
) -> None:
    push_review(target, n=2, dataset_name="to-new", **api)
    records = _records(owner, "to-new")
    carol = _annotator(owner, "carol-new")
    first = sorted(records)[0]
    from support.build_fixtures import DIMENSIONS

    _answer(carol, records[first], {"overall": "A", **dict.fromkeys(DIMENSIONS, "same")})
    new = tmp_path / "reviewed-copy"
    result = pull_reviews(target, to=new, dataset_name="to-new", **api)
    assert result.published is not None and result.published.target == str(new)
    assert datasets.get_dataset_config_names(str(new)) == ["pairs", "traces", "reviews"]
    assert len(datasets.load_dataset(str(new), "reviews", split="train")) == 1
    assert len(datasets.load_dataset(str(new), "pairs", split="train")) == len(
        datasets.load_dataset(str(target), "pairs", split="train")
    )
    assert not (target / "data" / "reviews").exists()  # the source is left as it was


def test_pull_without_answers_publishes_nothing(target: Path, api: dict[str, str]) -> None:
    push_review(target, n=3, dataset_name="unanswered", **api)
    result = pull_reviews(target, dataset_name="unanswered", **api)
    assert result.rows == [] and result.published is None and result.records == 3
    assert not (target / "data" / "reviews").exists()


def test_pull_unknown_dataset_says_push_first(target: Path, api: dict[str, str]) -> None:
    with pytest.raises(ReviewError, match="run `prefdelta review push"):
        pull_reviews(target, dataset_name="never-pushed", **api)


# ----------------------------------------------------------------------------- Hub and CLI


def test_cli_push_and_pull_through_the_hub(
    tmp_path: Path,
    hub: HubServer,
    owner: Any,
    argilla_stack: ArgillaStack,  # noqa: F811
    monkeypatch: Any,
) -> None:
    repo = "tester/reviewed"
    publish_build(make_build(tmp_path / "build", n_prompts=12), repo, private=False)
    monkeypatch.setenv("ARGILLA_API_URL", argilla_stack.api_url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.api_key)

    pushed = runner.invoke(app, ["review", "push", repo, "--n", "5", "--seed", "2"])
    assert pushed.exit_code == 0, pushed.output
    assert "pushed 5 pairs to prefdelta/tester-reviewed-review" in pushed.output
    assert "strong vs weak" in pushed.output  # the per-stratum table

    records = _records(owner, "tester-reviewed-review")
    carol = _annotator(owner, "carol")
    for record in list(records.values())[:2]:
        _answer(carol, record, {"overall": "A", **dict.fromkeys(DIMS, "same")})

    pulled = runner.invoke(app, ["review", "pull", repo])
    assert pulled.exit_code == 0, pulled.output
    assert "judge-human agreement" in pulled.output and "step_coherence" in pulled.output
    assert f"published: 2 reviews in {repo}@" in pulled.output
    reviews = datasets.load_dataset(repo, "reviews", split="train")
    assert len(reviews) == 2 and set(reviews["annotator"]) == {"carol"}
    for row in reviews:
        assert row["overall"] == records[row["pair_id"]].metadata["a_is"]  # "A" un-blinded
    card = DatasetCard.load(repo, repo_type="dataset")
    assert "## Human review" in card.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nobody listens on."""
    return f"http://127.0.0.1:{_free_port()}"


@pytest.mark.parametrize("command", ["push", "pull"])
def test_server_down_is_one_clear_line(published: Path, dead_url: str, command: str) -> None:
    result = runner.invoke(
        app, ["review", command, str(published), "--api-url", dead_url, "--api-key", "k"]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"{dead_url} did not answer as an Argilla server (")
    assert "start one with `prefdelta review serve` or pass --api-url" in lines[0]
    with pytest.raises(ArgillaUnreachable):
        pull_reviews(published, api_url=dead_url, api_key="k")


NOT_ARGILLA = [
    (
        404,
        "<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>",
        "text/html",
        "HTTP 404",
    ),
    (200, "<!DOCTYPE html><html><body>a web page</body></html>", "text/html", "not JSON"),
    (200, '{"status": "ok"}', "application/json", "not an Argilla user"),
    (500, "upstream failed", "text/plain", "HTTP 500"),
]


@pytest.mark.parametrize("command", ["push", "pull"])
@pytest.mark.parametrize(("status", "body", "content_type", "why"), NOT_ARGILLA)
def test_a_server_that_is_not_argilla_is_one_clear_line(
    published: Path, command: str, status: int, body: str, content_type: str, why: str
) -> None:
    """A web server on the URL that is not Argilla: a 404 page, HTML, other JSON, an error."""
    with not_argilla(status, body, content_type) as url:
        args = ["review", command, str(published), "--api-url", url, "--api-key", "k"]
        result = runner.invoke(app, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"{url} did not answer as an Argilla server (")
    assert why in lines[0] and "start one with `prefdelta review serve`" in lines[0]


def test_not_argilla_in_a_real_process_is_one_line_on_stderr(published: Path) -> None:
    """As a user runs it: exit 1, one line on stderr, nothing else, no traceback."""
    with not_argilla(404, NOT_ARGILLA[0][1]) as url:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "prefdelta",
                "review",
                "push",
                str(published),
                "--api-url",
                url,
                "--api-key",
                "k",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"{url} did not answer as an Argilla server (HTTP 404")


@pytest.mark.parametrize("option", [["--n", "0"], ["--n", "-5"], ["-n", "0"], ["--bins", "0"]])
def test_push_refuses_n_or_bins_below_one_before_any_server(
    published: Path, option: list[str]
) -> None:
    """Checked before any server is asked: this one is not Argilla, and asking it would
    have given its own error line instead."""
    with not_argilla(200, '{"status": "ok"}', "application/json") as url:
        result = runner.invoke(
            app, ["review", "push", str(published), *option, "--api-url", url, "--api-key", "k"]
        )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    expected = "--bins (delta buckets)" if option[0] == "--bins" else "--n (pairs to send)"
    assert lines[0] == f"{expected} must be at least 1, got {option[1]}"


def test_bad_key_and_missing_key(published: Path, api: dict[str, str], monkeypatch: Any) -> None:
    result = runner.invoke(
        app, ["review", "push", str(published), "--api-url", api["api_url"], "--api-key", "nope"]
    )
    assert result.exit_code == 1 and "rejected the API key" in result.output
    monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
    result = runner.invoke(app, ["review", "pull", str(published), "--api-url", api["api_url"]])
    assert result.exit_code == 1 and "no Argilla API key" in result.output


def test_unreadable_dataset_is_one_line(
    tmp_path: Path, hub: HubServer, api: dict[str, str]
) -> None:
    for dataset in (str(tmp_path / "absent"), "tester/absent"):
        args = ["--api-url", api["api_url"], "--api-key", api["api_key"]]
        result = runner.invoke(app, ["review", "push", dataset, *args])
        assert result.exit_code == 1
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert "absent" in result.output, result.output


@pytest.mark.slow
def test_push_after_serve_needs_no_credentials(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`review serve` records its URL and key; `review push` right after it finds them, and
    the record goes when the server stops."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from prefdelta.review.argilla_client import serve_credentials_file

    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGILLA_")}
    env["PREFDELTA_CACHE"] = str(cache)
    log = tmp_path / "serve.log"
    root = Path(__file__).resolve().parents[1]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefdelta", "review", "serve"],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        monkeypatch.setenv("PREFDELTA_CACHE", str(cache))
        monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
        monkeypatch.delenv("ARGILLA_API_URL", raising=False)
        saved = serve_credentials_file()
        deadline = time.monotonic() + 600  # generous: a loaded CI machine boots slowly
        while not saved.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert saved.exists(), f"serve recorded no credentials; its output:\n{log.read_text()}"
        assert saved.stat().st_mode & 0o077 == 0  # owner-only: it holds the API key
        pushed = runner.invoke(
            app, ["review", "push", str(published), "--n", "4", "--dataset-name", "from-serve"]
        )
        assert pushed.exit_code == 0, f"{pushed.output}\nserve output:\n{log.read_text()}"
        assert "pushed 4 pairs" in pushed.output
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "export ARGILLA_API_URL=http://127.0.0.1:" in text and "ARGILLA_API_KEY=argilla." in text
    assert not saved.exists(), text  # stopped: nothing left to mislead the next push
