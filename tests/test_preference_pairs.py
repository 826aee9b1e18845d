"""Judging a preference dataset as it stands (pairing strategy ``columns``): TRL's
conversational ``chosen``/``rejected`` lists and plain texts gain every delta column,
keep their labels, and say where the judge disagrees with them."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from prefdelta.builders.build import run_build
from prefdelta.builders.given import load_build_prompts
from prefdelta.cli import app
from prefdelta.loading import PairsArgumentError, PairsLoadError, load_pairs
from prefdelta.push import publish_build
from prefdelta.recipe import RecipeError, load_recipe
from support.api_build import COLUMNS_RECIPE
from support.build_fixtures import make_build
from support.model_fixtures import ChatServer, chat_server, tiny_model_dir  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DIMS = ("step_coherence", "factuality")
MESSAGE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def _turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _conversation(prompt: list[dict[str, str]], answer: str) -> list[dict[str, str]]:
    return [*prompt, _turn("assistant", answer)]


def _user(text: str) -> list[dict[str, str]]:
    return [_turn("user", text)]


# TRL's implicit-prompt conversational format: each side is the whole conversation. Two
# rows share a prompt (two pairs of it), one has a system turn, one an empty rejected.
TRL_ROWS: list[tuple[list[dict[str, str]], str, str]] = [
    (_user("What is 3 plus 4?"), "Step 1: add 3 and 4. The answer is 7.", "The answer is 8."),
    (_user("What is 3 plus 4?"), "3 + 4 = 7, so 7.", "Compute 3 * 4 = 12."),
    (_user("What is 5 plus 5?"), "Add them: the answer is 10.", "It is 55."),
    (
        [_turn("system", "Answer briefly."), _turn("user", "What is 2 * 6?")],
        "We multiply to get 12.",
        "The answer is 8.",
    ),
    (_user("What is 9 plus 1?"), "The answer is 10.", ""),
    (_user("What is 6 * 2?"), "Hello", "We multiply to get 12, so the answer is 12."),
]

TINY_JUDGE = "tiny-model"

RECIPE = """
name: trl-prefs
prompts: {{path: {file}}}
pairing: {{strategy: columns, chosen: chosen, rejected: rejected}}
judge:
  model: {judge}
  backend: transformers
  dimensions: [step_coherence, factuality]
  generation: {{temperature: 0.0, max_new_tokens: 160}}
"""


def write_trl(folder: Path, model: Path) -> Path:
    """The TRL-style parquet, and a recipe judging it with the session's tiny model."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"chosen": _conversation(p, c), "rejected": _conversation(p, r), "score_chosen": 8.0}
        for p, c, r in TRL_ROWS
    ]
    schema = pa.schema([("chosen", MESSAGE), ("rejected", MESSAGE), ("score_chosen", pa.float64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "prefs.parquet")
    link = folder / TINY_JUDGE  # named by a link: the same store keys in every session
    if not link.exists():
        link.symlink_to(model, target_is_directory=True)
    path = folder / "recipe.yaml"
    path.write_text(RECIPE.format(file="prefs.parquet", judge=TINY_JUDGE))
    return path


def _disagreements(pairs: list[dict[str, Any]]) -> int:
    return sum(p["delta"] is not None and p["delta"] < 0 for p in pairs)


def test_a_trl_preference_dataset_gains_deltas_with_its_labels_intact(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """Every row is one published pair, its prompt the conversation before the final
    turn and its sides as labelled; every delta column, the traces and the validity report
    come with it; the disagreement count is the pairs whose published delta is below 0,
    and ``agree_with_label`` selects by the same sign. No generation is made; a rebuild
    judges nothing again."""
    recipe = load_recipe(write_trl(tmp_path, tiny_model_dir))
    out, published = tmp_path / "build", tmp_path / "published"
    log = io.StringIO()
    summary = run_build(recipe, out, console=Console(file=log, width=400))
    assert summary["tokens"]["generators"] == {}  # nothing was generated
    assert summary["given_traces"]["chosen"]["traces"] == len(TRL_ROWS)
    assert summary["traces"] == 2 * len(TRL_ROWS) and summary["pairs"] == len(TRL_ROWS)
    assert summary["judge_status"]["empty_trace"] == 1  # the empty rejected: never judged

    publish_build(out, published)
    ds = load_pairs(published)
    pairs = ds.to_list()
    expected = Counter((json.dumps(p), c, r) for p, c, r in TRL_ROWS)
    got = Counter(
        (json.dumps(p["prompt"]), p["chosen"][-1]["content"], p["rejected"][-1]["content"])
        for p in pairs
    )
    assert got == expected  # every row, its prompt and its labels as the dataset has them
    assert all(p["chosen"][0]["role"] == "assistant" and len(p["chosen"]) == 1 for p in pairs)
    assert {(p["chosen_generator"], p["rejected_generator"]) for p in pairs} == {
        ("chosen", "rejected")
    }
    columns = {"delta", *(f"delta_{d}" for d in DIMS), "label_agrees", "chosen_scores"}
    assert columns <= set(ds.column_names)

    scored = [p for p in pairs if p["delta"] is not None]
    assert len(scored) == len(TRL_ROWS) - 1  # the pair with the empty side has no delta
    (empty,) = [p for p in pairs if p["delta"] is None]
    assert empty["rejected_judge_status"] == "empty_trace" and empty["label_agrees"] is None
    for p in pairs:
        if p["delta"] is not None and p["delta"] != 0:
            assert p["label_agrees"] is (p["delta"] > 0)
    disagree = _disagreements(pairs)
    agreement = summary["label_agreement"]
    assert agreement["disagree"] == disagree
    assert agreement["agree"] == sum(p["delta"] is not None and p["delta"] > 0 for p in pairs)
    assert agreement["unscored"] == 1 and agreement["pairs"] == len(TRL_ROWS)
    assert agreement["disagree_by_dimension"] == {
        d: sum(p[f"delta_{d}"] is not None and p[f"delta_{d}"] < 0 for p in pairs) for d in DIMS
    }
    assert (
        f"the judge's delta agrees with {agreement['agree']} of {len(TRL_ROWS)} pairs and "
        f"disagrees with {disagree} (label_agrees false)" in log.getvalue()
    )
    card = (published / "README.md").read_text()
    assert f"disagrees with {disagree} (label_agrees false)" in card
    assert "### Judge validity" in card and "| `chosen` | `column chosen` | dataset |" in card

    for agree in (True, False):
        want = {p["pair_id"] for p in pairs if p["delta"] is not None and (p["delta"] > 0) is agree}
        want -= {p["pair_id"] for p in pairs if p["delta"] == 0}
        if want:
            picked = load_pairs(published, agree_with_label=agree)
            assert set(picked["pair_id"]) == want
        else:
            with pytest.raises(PairsLoadError, match=f"agree_with_label={agree}"):
                load_pairs(published, agree_with_label=agree)

    traces = pq.read_table(published / "data/traces/train-00000-of-00001.parquet").to_pylist()
    assert Counter(t["generator"] for t in traces) == {"chosen": 6, "rejected": 6}
    validity = summary["judge_validity"]
    assert validity["strategy"] == "columns" and set(validity["dimensions"]) == set(DIMS)

    again = run_build(recipe, out, console=Console(file=io.StringIO()))
    assert again["reused"]["judged"] == 0 and again["reused"]["generated"] == 0
    assert again["label_agreement"] == agreement


# the loopback judge scores a trace by a word in it: GOOD 5, BAD 1, anything else 3
PLAIN_ROWS = [
    ("What is 1 plus 1?", "GOOD: 2", "BAD: 3"),  # agrees
    ("What is 2 plus 2?", "GOOD: 4", "it is 5"),  # agrees
    ("What is 3 plus 3?", "BAD: 7", "GOOD: 6"),  # disagrees
    ("What is 4 plus 4?", "it is 8", "it is 9"),  # a tie
    ("What is 5 plus 5?", "GOOD: 10", None),  # no rejected side: no delta
]


def _scores(score: int) -> str:
    return json.dumps({d: {"rationale": "r", "score": score} for d in DIMS})


def test_plain_text_pairs_count_and_filter_the_disagreements(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    rows = [{"question": q, "better": c, "worse": r} for q, c, r in PLAIN_ROWS]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "recipe.yaml"
    path.write_text(COLUMNS_RECIPE.format(url=chat_server.url))
    state = chat_server.state
    state.content = _scores(3)
    state.content_when = {"GOOD": _scores(5), "BAD": _scores(1)}

    plan = CliRunner().invoke(app, ["inspect", str(path)], env={"COLUMNS": "200"})
    assert plan.exit_code == 0, plan.output
    assert "traces read from column 'better': chosen (no calls)" in plan.output
    assert re.search(
        r"│ pairs \(columns\): one per row of the dataset, every one kept +│ +5 │", plan.output
    )
    assert re.search(r"│ judge calls +│ +9 │", plan.output)  # the missing side: never judged

    log = io.StringIO()
    summary = run_build(load_recipe(path), tmp_path / "out", console=Console(file=log, width=300))
    assert {b["model"] for b in state.bodies} == {"the-judge"} and len(state.bodies) == 9
    publish_build(tmp_path / "out", tmp_path / "pub")
    pairs = load_pairs(tmp_path / "pub").to_list()
    by_prompt = {p["prompt"][0]["content"]: p for p in pairs}
    assert len(pairs) == len(PLAIN_ROWS)
    for q, c, r in PLAIN_ROWS:
        p = by_prompt[q]
        assert p["prompt"] == _user(q)
        assert (p["chosen"][0]["content"], p["rejected"][0]["content"]) == (c, r or "")
    assert [by_prompt[q]["label_agrees"] for q, _, _ in PLAIN_ROWS] == [
        True,
        True,
        False,
        None,
        None,
    ]
    assert summary["label_agreement"] == {
        "column": "label_agrees",
        "by": "delta",
        "pairs": 5,
        "agree": 2,
        "disagree": _disagreements(pairs),
        "ties": 1,
        "unscored": 1,
        "disagree_by_dimension": dict.fromkeys(DIMS, 1),
    }
    assert _disagreements(pairs) == 1
    assert "agrees with 2 of 5 pairs and disagrees with 1" in log.getvalue()
    (wrong,) = load_pairs(tmp_path / "pub", agree_with_label=False).to_list()
    assert wrong["prompt"] == _user("What is 3 plus 3?")
    assert len(load_pairs(tmp_path / "pub", agree_with_label=True)) == 2


def _write(folder: Path, rows: list[dict[str, Any]], pairing: str, prompts: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = folder / "recipe.yaml"
    path.write_text(
        f"name: x\nprompts: {{path: d.jsonl{prompts}}}\npairing: {pairing}\n"
        "judge: {model: j, backend: openai, base_url: http://127.0.0.1:9/v1}\n"
    )
    return path


COLUMNS = "{strategy: columns, chosen: chosen, rejected: rejected}"
GOOD_ROW = {
    "chosen": _conversation(_user("q"), "a"),
    "rejected": _conversation(_user("q"), "b"),
}


@pytest.mark.parametrize(
    ("rows", "pairing", "prompts", "expected"),
    [
        (
            [{"better": "a", "rejected": "b", "q": "x"}],
            COLUMNS,
            ", column: q",
            r"pairing\.chosen: column 'chosen' is not in .*d\.jsonl; columns: better, rejected, q",
        ),
        (
            [{"chosen": [_turn("user", "q")], "rejected": _conversation(_user("q"), "b")}],
            COLUMNS,
            "",
            r"pairing\.chosen: row 0 of .*: the conversation's last turn is 'user', not "
            "'assistant'",
        ),
        (
            [{"chosen": "a", "rejected": "b"}],
            COLUMNS,
            "",
            r"pairing\.chosen: row 0 .* no turn before the assistant's answer.*prompts\.column",
        ),
        (
            [{"chosen": GOOD_ROW["chosen"], "rejected": _conversation(_user("other"), "b")}],
            COLUMNS,
            "",
            "the chosen and rejected conversations differ before their final turn",
        ),
        (
            [{"chosen": [{"text": "a"}], "rejected": "b", "q": "x"}],
            COLUMNS,
            ", column: q",
            r"pairing\.chosen: row 0 .*: message 0 is \{'text': 'a'\}; expected \{role, content\}",
        ),
        (
            [{"chosen": "a", "rejected": "b", "q": ""}],
            COLUMNS,
            ", column: q",
            "prompts.column: row 0 .* has no prompt in 'q'",
        ),
    ],
)
def test_a_dataset_that_does_not_fit_is_refused_in_one_line(
    tmp_path: Path, rows: list[dict[str, Any]], pairing: str, prompts: str, expected: str
) -> None:
    recipe = load_recipe(_write(tmp_path, rows, pairing, prompts))
    with pytest.raises(RecipeError, match=expected) as err:
        load_build_prompts(recipe)
    assert len(err.value.lines) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "generators: {g: {model: m, backend: vllm}}\n",
            r"recipe\.yaml:\d+: generators: pairing strategy 'columns' reads both sides from "
            r"the dataset's columns and calls no generator: remove `generators`",
        ),
        ("", ""),
    ],
)
def test_columns_and_generators_do_not_mix(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, [GOOD_ROW], COLUMNS)
    path.write_text(path.read_text() + text)
    if not expected:
        assert list(load_recipe(path).generators) == ["chosen", "rejected"]
        return
    with pytest.raises(RecipeError, match=expected):
        load_recipe(path)


@pytest.mark.parametrize(
    ("pairing", "prompts", "expected"),
    [
        (
            "{strategy: columns, chosen: chosen}",
            "",
            "strategy 'columns' needs `chosen` and `rejected`",
        ),
        (
            "{strategy: columns, chosen: a, rejected: [b, c]}",
            "",
            "strategy 'columns' needs `chosen` and `rejected`",
        ),
        ("{strategy: columns, chosen: a, rejected: a}", "", "cannot be both chosen and rejected"),
        (
            "{strategy: columns, chosen: a, rejected: b, unjudged: drop}",
            "",
            "keeps every pair of the dataset: remove `unjudged: drop`",
        ),
        (
            "{strategy: columns, chosen: a, rejected: b, ties: drop}",
            "",
            "remove `ties: drop`",
        ),
        ("{chosen: g, rejected: [h]}", ", column: null", "prompts.column: expected the column"),
    ],
)
def test_a_columns_pairing_that_cannot_work_is_refused(
    tmp_path: Path, pairing: str, prompts: str, expected: str
) -> None:
    path = _write(tmp_path, [GOOD_ROW], pairing, prompts)
    with pytest.raises(RecipeError, match=expected):
        load_recipe(path)


def test_rows_sharing_a_prompt_are_its_samples_and_limit_counts_prompts(tmp_path: Path) -> None:
    rows = [
        {
            "chosen": _conversation(_user(q), f"{q}-yes-{i}"),
            "rejected": _conversation(_user(q), "no"),
        }
        for i, q in enumerate(["a", "b", "a", "c", "a"])
    ]
    recipe = load_recipe(_write(tmp_path, rows, COLUMNS))
    prompts, folded = load_build_prompts(recipe)
    assert folded == 0 and sum(len(p.columns["chosen"]) for p in prompts) == 5
    (a,) = [p for p in prompts if p.prompt == "a"]
    assert sorted(a.columns["chosen"]) == ["a-yes-0", "a-yes-2", "a-yes-4"]
    path = recipe.base_dir / "recipe.yaml"
    path.write_text(path.read_text().replace("d.jsonl}", "d.jsonl, limit: 2}"))
    limited, _ = load_build_prompts(load_recipe(path))
    assert len(limited) == 2
    assert [len(p.columns["chosen"]) for p in limited] == [
        len(p.columns["chosen"]) for p in prompts if p.prompt_id in {q.prompt_id for q in limited}
    ]


def test_agree_with_label_needs_a_labelled_dataset(tmp_path: Path) -> None:
    publish_build(make_build(tmp_path / "build", n_prompts=4), tmp_path / "pub")
    with pytest.raises(PairsLoadError, match="has no label_agrees column"):
        load_pairs(tmp_path / "pub", agree_with_label=True)
    with pytest.raises(PairsArgumentError, match="agree_with_label must be True, False or None"):
        load_pairs(tmp_path / "pub", agree_with_label="yes")  # type: ignore[arg-type]


def test_the_example_recipe_judges_a_trl_dataset_as_it_stands() -> None:
    recipe = load_recipe(ROOT / "recipes" / "ultrafeedback-judged.yaml")
    assert recipe.pairing.strategy == "columns" and recipe.prompts.column is None
    assert {n: g.column for n, g in recipe.generators.items()} == {
        "chosen": "chosen",
        "rejected": "rejected",
    }


def test_a_conversational_prompt_column_is_the_prompt_and_earlier_turns_are_not_read(
    tmp_path: Path,
) -> None:
    """TRL's explicit-prompt form (``prompt`` a conversation, each side its answer alone),
    and a side that repeats the prompt before its answer (UltraFeedback's): the prompt
    column is the prompt, published as the dataset has it."""
    system = [_turn("system", "Be brief."), _turn("user", "2 + 2?")]
    rows = [
        {
            "prompt": system,
            "chosen": [_turn("assistant", "4")],
            "rejected": [_turn("assistant", "5")],
        },
        {
            "prompt": _user("3 + 3?"),
            "chosen": _conversation(_user("3 + 3?"), "6"),
            "rejected": _conversation(_user("3 + 3?"), "7"),
        },
    ]
    recipe = load_recipe(_write(tmp_path, rows, COLUMNS, ", column: prompt"))
    prompts, _ = load_build_prompts(recipe)
    by_text = {p.prompt: p for p in prompts}
    brief = by_text["system: Be brief.\n\nuser: 2 + 2?"]
    assert [dict(m) for m in brief.messages or ()] == system
    assert brief.columns == {"chosen": ["4"], "rejected": ["5"]}
    assert by_text["3 + 3?"].columns == {"chosen": ["6"], "rejected": ["7"]}
    assert [dict(m) for m in by_text["3 + 3?"].messages or ()] == _user("3 + 3?")


def test_only_a_preference_dataset_may_leave_the_prompt_column_out(tmp_path: Path) -> None:
    """Elsewhere (a sweep's eval prompts, say) a prompts table needs its prompt column."""
    from prefdelta.builders.prompts import load_prompts
    from prefdelta.recipe import PromptsConfig

    (tmp_path / "p.jsonl").write_text(json.dumps({"problem": "q"}) + "\n")
    with pytest.raises(RecipeError, match=r"prompts\.column: name the column holding the prompt"):
        load_prompts(PromptsConfig(path="p.jsonl", column=None), tmp_path)
