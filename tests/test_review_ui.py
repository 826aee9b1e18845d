"""A reviewer answers in the real Argilla web UI (headless Debian chromium driven by Playwright),
then `prefdelta review pull` reads that answer back, un-blinded.

Needs /usr/bin/chromium (``bash scripts/install-browser.sh``) and the ``playwright`` package; no
``playwright install``: the system browser is launched by path. Like the Argilla fixture, a
missing piece fails the test with the command to run: it never skips.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from prefdelta.cli import app
from prefdelta.push import publish_build
from prefdelta.review.send import push_review
from prefdelta.review.stack import ArgillaStack
from support.argilla_fixtures import argilla_stack, eventually  # noqa: F401
from support.build_fixtures import make_build

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("PREFDELTA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DATASET = "ui-review"
REVIEWER, PASSWORD = "ui-reviewer", "ui-reviewer-password"
# What the reviewer clicks, question -> label text in the UI.
CLICKS = {
    "overall": "Response A",
    "factuality": "Response B",
    "strategy_coherence": "About the same",
    "step_coherence": "Response A",
    "numerical_precision": "Response B",
}
NOTE = "A is tidier; B checks its arithmetic."


@pytest.fixture(scope="module")
def browser() -> Any:
    if importlib.util.find_spec("playwright") is None:
        pytest.fail("playwright is not installed: pip install playwright", pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: run `bash scripts/install-browser.sh`", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_reviewer_answers_in_the_web_ui(
    browser: Any,
    argilla_stack: ArgillaStack,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argilla as rg

    folder = tmp_path / "published"
    publish_build(make_build(tmp_path / "build", n_prompts=8), folder)
    api = {"api_url": argilla_stack.api_url, "api_key": argilla_stack.api_key}
    push_review(folder, n=1, dataset_name=DATASET, hide_suggestions=True, **api)
    owner = rg.Argilla(**api)
    reviewer = (
        owner.users(REVIEWER)
        or rg.User(username=REVIEWER, password=PASSWORD, role="annotator", client=owner).create()
    )
    workspace = owner.workspaces("prefdelta")
    if reviewer.id not in {u.id for u in workspace.users}:
        workspace.add_user(reviewer)
    dataset = owner.datasets(DATASET, workspace="prefdelta")
    (record,) = list(dataset.records())
    a_is = record.metadata["a_is"]

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    shot = tmp_path / "argilla-ui.png"
    try:
        page.goto(f"{argilla_stack.api_url}/sign-in")
        page.get_by_label("Username").fill(REVIEWER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text(DATASET, exact=True).first.click()
        page.get_by_text("Overall, which response is the better reasoning?").wait_for()
        # The record on screen is the one pushed, blinded: its A/B text, no hint of the mapping.
        assert record.fields["response_a"] in page.inner_text("body")
        for question, label in CLICKS.items():
            page.locator(f"[aria-label='Question: {question}']").get_by_role(
                "button", name=label, exact=True
            ).click()
        page.locator("[aria-label='Question: note'] textarea, "
                     "[aria-label='Question: note'] [contenteditable]").first.fill(NOTE)  # fmt: skip
        page.screenshot(path=str(shot), full_page=True)
        page.get_by_role("button", name="Submit").click()

        def submitted() -> bool:
            (back,) = list(dataset.records())
            return any(r.status == "submitted" for r in back.responses)

        assert eventually(submitted), f"the UI's answer never reached the server; see {shot}"
    except BaseException:
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        raise
    finally:
        page.close()

    monkeypatch.setenv("ARGILLA_API_URL", argilla_stack.api_url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.api_key)
    pulled = CliRunner().invoke(app, ["review", "pull", str(folder), "--dataset-name", DATASET])
    assert pulled.exit_code == 0, pulled.output
    import datasets

    (row,) = datasets.load_dataset(str(folder), "reviews", split="train").to_list()
    b_is = "rejected" if a_is == "chosen" else "chosen"
    assert row["pair_id"] == record.id and row["annotator"] == REVIEWER
    assert row["a_is"] == a_is
    assert row["overall"] == a_is  # clicked Response A
    assert row["factuality"] == b_is  # clicked Response B
    assert row["strategy_coherence"] == "same"
    assert row["step_coherence"] == a_is
    assert row["numerical_precision"] == b_is
    assert row["note"] == NOTE
