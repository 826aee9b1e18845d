"""A generator that is a dataset's column (``backend: dataset``): OpenR1-Math-220k's R1
traces judged and paired against a model generator, with no call made for them."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from prefdelta.builders.build import plan_traces, run_build
from prefdelta.builders.given import given_columns, read_given
from prefdelta.builders.prompts import load_prompts
from prefdelta.cli import app
from prefdelta.push.build_folder import read_build
from prefdelta.push.card import render_card
from prefdelta.recipe import RecipeError, load_recipe
from support.api_build import interrupt_build
from support.model_fixtures import ChatServer, chat_server, tiny_model_dir  # noqa: F401

DIMS = ("step_coherence", "factuality")

# OpenR1-Math-220k's columns and types, a handful of rows: (answer, traces, correctness
# as the dataset gives it, finish reasons). Two given verdicts disagree with math-verify:
# row 0's second trace (says 5, marked correct) and row 3's second (says 10, marked wrong).
ROWS = [
    ("4", [r"So \boxed{4}", r"So \boxed{5}"], [True, True], ["stop", "stop"]),
    ("6", [r"\boxed{6}", r"it is \boxed{6}", r"\boxed{7}"], [True, True, False], ["stop"] * 3),
    ("8", ["", r"\boxed{8}", r"\boxed{8}.", r"\boxed{9}"], [False, True, True, False],
     ["length", "stop", "stop", "stop"]),
    ("10", [r"\boxed{10}", r"hence \boxed{10}"], [True, False], ["stop", "stop"]),
]  # fmt: skip

SCHEMA = pa.schema(
    [
        ("problem", pa.string()),
        ("solution", pa.string()),
        ("answer", pa.string()),
        ("problem_type", pa.string()),
        ("question_type", pa.string()),
        ("source", pa.string()),
        ("uuid", pa.string()),
        ("is_reasoning_complete", pa.list_(pa.bool_())),
        ("generations", pa.list_(pa.string())),
        ("correctness_math_verify", pa.list_(pa.bool_())),
        ("correctness_llama", pa.list_(pa.bool_())),
        ("finish_reasons", pa.list_(pa.string())),
        ("correctness_count", pa.int64()),
        ("messages", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
    ]
)

RECIPE = """
name: r1-given
prompts: {{path: openr1.parquet, column: problem, reference_column: answer}}
generators:
  r1:
    backend: dataset
    model: deepseek-ai/DeepSeek-R1
    column: generations
    correct_column: correctness_math_verify
    finish_column: finish_reasons{extra}
  small:
    model: gen-small
    backend: openai
    base_url: {url}
    batch_size: 2
    concurrency: 1
    samples_per_prompt: 2
pairing: {{chosen: r1, rejected: [small]}}
judge:
  model: the-judge
  backend: openai
  base_url: {url}
  dimensions: [step_coherence, factuality]
  scoring: sampled
"""


def write_openr1(folder: Path, url: str = "http://127.0.0.1:9", extra: str = "") -> Path:
    """The parquet and a recipe reading its R1 traces against a loopback generator."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "problem": f"Problem {i}: what is {int(answer) // 2} doubled?",
            "solution": f"Doubling gives {answer}.",
            "answer": answer,
            "problem_type": "Algebra",
            "question_type": "math-word-problem",
            "source": "olympiads",
            "uuid": f"uuid-{i}",
            "is_reasoning_complete": [True] * len(traces),
            "generations": traces,
            "correctness_math_verify": correct,
            "correctness_llama": None,
            "finish_reasons": finish,
            "correctness_count": sum(correct),
            "messages": [{"content": "q", "role": "user"}],
        }
        for i, (answer, traces, correct, finish) in enumerate(ROWS)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), folder / "openr1.parquet")
    path = folder / "recipe.yaml"
    path.write_text(RECIPE.format(url=url, extra=extra))
    return path


def _asked(server: ChatServer, model: str) -> int:
    return sum(1 for b in server.state.bodies if b["model"] == model)


def test_a_dataset_column_is_judged_and_paired_against_a_model_generator(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """Every element of the list column is a trace (sample 0..n-1), stored and judged like
    a generated one, with the dataset's correctness and finish reasons kept; no request
    names the dataset's model; a rebuild asks nothing; inspect plans no call for it."""
    path = write_openr1(tmp_path, chat_server.url)
    chat_server.state.content = json.dumps({d: {"rationale": "ok", "score": 3} for d in DIMS})
    out = tmp_path / "out"

    plan = CliRunner().invoke(app, ["inspect", str(path)], env={"COLUMNS": "200"})
    assert plan.exit_code == 0, plan.output
    assert "traces read from column 'generations': r1 (no calls)" in plan.output
    assert "generations: r1" not in plan.output and "r1 (deepseek" not in plan.output
    # 11 read traces, one of them empty (never judged), and 4 prompts x 2 samples
    assert re.search(r"│ judge calls +│ +18 │", plan.output), plan.output
    assert re.search(r"│ generations: small +│ +8 │", plan.output), plan.output
    assert re.search(r"r1 \(no calls\) +│ +11 │", plan.output), plan.output
    assert chat_server.state.bodies == []

    log = io.StringIO()
    summary = run_build(load_recipe(path), out, console=Console(file=log, width=300))
    assert (
        "r1: 11 traces read from the dataset, no call made; its correctness disagrees with "
        "math-verify's on 2 of 11" in log.getvalue()
    )
    assert _asked(chat_server, "deepseek-ai/DeepSeek-R1") == 0
    assert _asked(chat_server, "gen-small") == 8
    assert _asked(chat_server, "the-judge") == 18  # the empty trace is not judged
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    r1 = sorted(
        (t for t in traces if t["generator"] == "r1"), key=lambda t: (t["reference"], t["sample"])
    )
    by_answer = sorted(ROWS, key=lambda r: r[0])
    assert [(t["reference"], t["sample"], t["trace"]) for t in r1] == [
        (answer, s, text) for answer, texts, _, _ in by_answer for s, text in enumerate(texts)
    ]
    assert [t["correct"] for t in r1] == [c for _, _, correct, _ in by_answer for c in correct]
    assert [t["finish_reason"] for t in r1] == [f for *_, finish in by_answer for f in finish]
    assert {t["model"] for t in r1} == {"deepseek-ai/DeepSeek-R1"}
    empty = [t for t in r1 if t["trace"] == ""]
    assert len(empty) == 1 and empty[0]["judge_status"] == "empty_trace"
    assert summary["empty_traces"] == {"r1": 1}
    assert summary["given_traces"]["r1"] == {
        "traces": 11,
        "shortfall": 0,
        "correct_given": 11,
        "checked": 11,
        "correct_disagreements": 2,
    }
    assert set(summary["tokens"]["generators"]) == {"small"}  # read traces took no tokens

    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    # r1's sample i against small's sample i: rows of 2+ traces, less the empty sample 0
    assert len(pairs) == 7 and {p["chosen_generator"] for p in pairs} == {"r1"}
    r1_texts = {t["trace"] for t in r1}
    assert all(p["chosen"][-1]["content"] in r1_texts for p in pairs)

    card = render_card(
        read_build(out), splits={"train": 7}, plots=[], dataset_ref="org/r1", license="mit"
    )
    assert "| `r1` | `deepseek-ai/DeepSeek-R1` | dataset | chosen |" in card

    chat_server.state.bodies.clear()
    again = run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    assert chat_server.state.bodies == []  # every trace and judgment is reused
    assert again["reused"]["generated"] == 0 and again["reused"]["judged"] == 0
    assert again["reused"]["generations"] == 8  # small's; r1's are read, never generated
    assert pq.read_table(out / "traces.parquet").to_pylist() == traces

    # a changed trace in the column re-keys that trace alone: one new judgment
    table = pq.read_table(tmp_path / "openr1.parquet").to_pylist()
    table[0]["generations"][0] = r"Therefore \boxed{4}"
    pq.write_table(pa.Table.from_pylist(table, schema=SCHEMA), tmp_path / "openr1.parquet")
    run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    assert len(chat_server.state.bodies) == 1 and _asked(chat_server, "the-judge") == 1


def test_samples_per_prompt_takes_the_first_k_and_counts_the_shortfall(tmp_path: Path) -> None:
    recipe = load_recipe(write_openr1(tmp_path, extra="\n    samples_per_prompt: 3"))
    prompts, _ = load_prompts(recipe.prompts, recipe.base_dir, given_columns(recipe))
    records, short = read_given(recipe, prompts)
    assert short == {"r1": 2}  # rows 0 and 3 hold 2 traces each
    planned = plan_traces(recipe, prompts)
    got = {(t.prompt.reference, t.sample) for t in planned if t.generator == "r1"}
    for p in prompts:
        for s in range(3):
            assert ((p.reference, s) in got) == (s < len(p.columns["generations"]))
    assert len(records) == 2 + 3 + 3 + 2


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("\n    generation: {temperature: 0.5}", "calls no model: remove `generation`"),
        ("\n    concurrency: 4", "calls no model: remove `concurrency`"),
        ("\n    base_url: http://x", "`base_url`/`api_key` apply to API backends"),
    ],
)
def test_a_dataset_generator_refuses_what_only_a_model_uses(
    tmp_path: Path, extra: str, expected: str
) -> None:
    with pytest.raises(RecipeError, match=expected):
        load_recipe(write_openr1(tmp_path, extra=extra))


def test_a_model_generator_refuses_a_column_and_a_missing_column_is_named(tmp_path: Path) -> None:
    path = write_openr1(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("samples_per_prompt: 2", "samples_per_prompt: 2\n    column: x"))
    with pytest.raises(RecipeError, match="generates its traces: remove `column`"):
        load_recipe(path)
    path.write_text(text.replace("column: generations", "column: r1_traces"))
    recipe = load_recipe(path)
    with pytest.raises(RecipeError, match=r"generators\.r1\.column: column 'r1_traces' is not in"):
        load_prompts(recipe.prompts, recipe.base_dir, given_columns(recipe))


def test_a_text_column_is_one_trace_with_its_tokens_and_no_correctness(tmp_path: Path) -> None:
    """A string column gives one trace per prompt; ``tokens_column`` (int64) is its output
    tokens; without ``correct_column`` nothing is given, and the finish reason is unknown."""
    path = write_openr1(tmp_path)
    text = path.read_text().replace(
        "  small:\n",
        "  sol: {backend: dataset, model: human, column: solution, "
        "tokens_column: correctness_count}\n  small:\n",
    )
    path.write_text(text.replace("rejected: [small]", "rejected: [small, sol]"))
    recipe = load_recipe(path)
    prompts, _ = load_prompts(recipe.prompts, recipe.base_dir, given_columns(recipe))
    records, short = read_given(recipe, prompts)
    sol = {pid: r for (name, pid, _), r in records.items() if name == "sol"}
    assert short == {"r1": 0, "sol": 0} and len(sol) == len(prompts)
    for p in prompts:
        assert sol[p.prompt_id]["trace"] == f"Doubling gives {p.reference}."
        assert sol[p.prompt_id]["output_tokens"] == p.columns["correctness_count"]
        assert sol[p.prompt_id]["given_correct"] is None
        assert sol[p.prompt_id]["finish_reason"] == "unknown"


@pytest.mark.parametrize("name", ["openr1-math-delta", "openr1-math-ladder"])
def test_the_paper_recipes_read_r1_from_the_dataset(name: str) -> None:
    recipe = load_recipe(Path(__file__).resolve().parents[1] / f"recipes/{name}.yaml")
    assert given_columns(recipe) == {
        "generations": "generators.r1.column",
        "correctness_math_verify": "generators.r1.correct_column",
        "finish_reasons": "generators.r1.finish_column",
    }
    # only the s1.1 models generate, and none of them through an API
    assert {g.backend for n, g in recipe.generators.items() if n != "r1"} == {"vllm"}


def test_a_recipe_of_dataset_generators_only_calls_the_judge(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    path = write_openr1(tmp_path, chat_server.url, extra="\n    samples_per_prompt: 1")
    text = path.read_text()
    small = text[text.index("  small:\n") : text.index("pairing:")]
    text = text.replace(small, "  sol: {backend: dataset, model: human, column: solution}\n")
    path.write_text(text.replace("rejected: [small]", "rejected: [sol]"))
    chat_server.state.content = json.dumps({d: {"rationale": "ok", "score": 3} for d in DIMS})
    summary = run_build(load_recipe(path), tmp_path / "out", console=Console(file=io.StringIO()))
    # the first R1 trace of each row (row 2's is empty) and one solution per row
    assert {b["model"] for b in chat_server.state.bodies} == {"the-judge"}
    assert len(chat_server.state.bodies) == 3 + 4
    assert summary["pairs"] == 3 and summary["empty_traces"] == {"r1": 1}
    assert summary["tokens"]["generators"] == {}


def test_inspect_shows_the_api_cost_of_r1_falling_to_zero() -> None:
    """The paper recipe as first shipped paid an API for 3,500 R1 traces; reading them from
    the dataset, the shipped recipe makes no API call at all."""
    root = Path(__file__).resolve().parents[1]
    env = {"COLUMNS": "200"}
    before = CliRunner().invoke(
        app, ["inspect", str(root / "tests/recipes/openr1-math-api.yaml")], env=env
    )
    after = CliRunner().invoke(
        app, ["inspect", str(root / "recipes/openr1-math-delta.yaml")], env=env
    )
    assert before.exit_code == 0 and after.exit_code == 0, before.output + after.output
    assert re.search(r"│ API calls: r1 +│ +3,500 │", before.output), before.output
    assert re.search(r"│ API calls: none +│ +0 │", after.output), after.output
    assert "traces read from column 'generations': r1 (no calls)" in after.output
    assert "generations: r1" not in after.output
    # the resolved recipe shows no decoding or request settings for traces it only reads
    r1 = after.output[after.output.index("\n  r1:") : after.output.index("\n  s1-3b:")]
    assert "column: generations" in r1
    assert "generation:" not in r1 and "temperature" not in r1 and "batch_size" not in r1


@pytest.mark.slow
def test_a_build_killed_after_the_judges_first_batch_resumes_without_rejudging(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """SIGKILL to the build's process group once the judge's first answer is stored (an
    API judge commits each row as it finishes, inside its first batch): the rerun asks
    the judge only about the traces no stored judgment covers, and reads no trace of the
    dataset's twice (the dataset's traces take no call either time)."""
    import signal
    import subprocess
    import sys

    from support.store_fixtures import InspectableStore

    path = write_openr1(tmp_path, chat_server.url, extra="\n    samples_per_prompt: 1")
    text = path.read_text()
    small = text[text.index("  small:\n") : text.index("pairing:")]
    text = text.replace(small, "  sol: {backend: dataset, model: human, column: solution}\n")
    text = text.replace("rejected: [small]", "rejected: [sol]")
    path.write_text(
        text.replace("  scoring: sampled", "  scoring: sampled\n  batch_size: 2\n  concurrency: 1")
    )
    chat_server.state.content = json.dumps({d: {"rationale": "ok", "score": 3} for d in DIMS})
    chat_server.state.delay_s = 0.4  # the build cannot outrun the kill
    out = tmp_path / "out"
    store_path = out / "store.sqlite"
    cmd = [sys.executable, "-m", "prefdelta", "build", str(path), "-o", str(out), "--no-publish"]
    interrupt_build(cmd, store_path, tmp_path / "killed.log", kind="judgment", sig=signal.SIGKILL)
    planned = 3 + 4  # the first R1 trace of each row (row 2's is empty) and 4 solutions
    stored = InspectableStore(store_path).count_all("judgment")
    assert 1 <= stored < planned, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (out / "summary.json").exists()

    chat_server.state.delay_s = 0.0
    chat_server.state.bodies.clear()
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert _asked(chat_server, "the-judge") == planned - stored  # nothing judged twice
    assert {b["model"] for b in chat_server.state.bodies} == {"the-judge"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reused"]["judgments"] == stored
    assert summary["reused"]["judged"] == planned - stored
    assert summary["judge_status"] == {"ok": planned, "empty_trace": 1}


@pytest.mark.slow
def test_openr1_traces_build_judge_publish_and_train_with_the_tiny_model(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """The OpenR1-shaped parquet end to end, offline: its list columns become samples
    beside a generated model's, the tiny model judges every trace with text, the folder
    published keeps the dataset's correctness, and DPO trains on its pairs."""
    from trl import ModelConfig

    from prefdelta.push import publish_build
    from prefdelta.train import dpo
    from prefdelta.train.configs import DataArguments
    from support.train_fixtures import dpo_config

    path = write_openr1(tmp_path)
    (tmp_path / "tiny-model").symlink_to(tiny_model_dir, target_is_directory=True)
    text = path.read_text()
    small = text[text.index("  small:\n") : text.index("pairing:")]
    text = text.replace(
        small,
        "  small:\n    model: tiny-model\n    backend: transformers\n    samples_per_prompt: 2\n"
        "    generation: {temperature: 0.7, max_new_tokens: 12}\n",
    )
    judge = text[text.index("judge:\n") :]
    text = text.replace(
        judge,
        "judge:\n  model: tiny-model\n  backend: transformers\n"
        "  dimensions: [step_coherence, factuality]\n  max_retries: 0\n"
        "  generation: {temperature: 0.0, max_new_tokens: 160}\n",
    )
    path.write_text(text)
    out = tmp_path / "out"
    summary = run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    assert summary["traces"] == 11 + 8 and summary["empty_traces"].get("r1") == 1
    assert summary["tokens"]["judge"]["calls"] == 18  # every trace with text, judged once
    assert summary["given_traces"]["r1"]["correct_disagreements"] == 2

    published = tmp_path / "published"
    publish_build(out, published)
    traces = pq.read_table(next((published / "data/traces").glob("*.parquet"))).to_pylist()
    r1 = sorted(
        (t for t in traces if t["generator"] == "r1"), key=lambda t: (t["reference"], t["sample"])
    )
    by_answer = sorted(ROWS, key=lambda r: r[0])
    assert [(t["reference"], t["sample"]) for t in r1] == [
        (answer, s) for answer, texts, _, _ in by_answer for s in range(len(texts))
    ]
    assert [t["correct"] for t in r1] == [c for _, _, correct, _ in by_answer for c in correct]
    assert {t["judge_model"] for t in traces} == {"tiny-model"}
    assert all(t["judge_attempts"] == 1 for t in traces if t["trace"].strip())
    pairs = pq.read_table(next((published / "data/pairs").glob("train-*.parquet"))).to_pylist()
    assert len(pairs) == 7 and all(p["chosen_model"] == "deepseek-ai/DeepSeek-R1" for p in pairs)

    run = dpo.main(
        DataArguments(dataset=str(published)),
        dpo_config(tmp_path / "model", max_steps=2),
        ModelConfig(model_name_or_path=str(tiny_model_dir)),
    )
    assert run.counts["pairs_selected"] == 7 and len(run.losses) == 2
    assert (run.output_dir / "model.safetensors").is_file()
