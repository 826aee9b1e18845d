"""What the judge reads of a trace (``judge.reads``): the whole trace, the reasoning, the
final answer, or the reasoning cut to a budget; and a trace over the judge's context,
cut to fit or refused with its id, never sent to fail."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rich.console import Console
from transformers import AutoTokenizer

from prefdelta.builders.build import run_build
from prefdelta.builders.judge_input import split_think
from prefdelta.builders.prompt_length import chat_token_counts
from prefdelta.push.build_folder import read_build
from prefdelta.push.card import render_card
from prefdelta.recipe import RecipeError, load_recipe
from support.model_fixtures import (  # noqa: F401
    ChatServer,
    chat_server,
    short_context_model_dir,
    tiny_model_dir,
)

DIMS = ("step_coherence", "factuality")
ANSWER = r"The answer is \boxed{14}."
LONG = "<think>\nFirst I add seven and seven." + " Then I check it again." * 600
LONG += " So it is fourteen.\n</think>\n" + ANSWER
SHORT = "Seven and seven make 14, so " + ANSWER  # no think block: all reasoning, all answer

RECIPE = """
name: reads
prompts: {{path: prompts.jsonl, column: problem, reference_column: answer}}
generators:
  r1: {{backend: dataset, model: org/r1, column: long}}
  sol: {{backend: dataset, model: org/sol, column: short}}
pairing: {{chosen: r1, rejected: [sol]}}
judge:
  model: the-judge
  backend: openai
  base_url: {url}
  dimensions: [step_coherence, factuality]
  scoring: sampled
  max_retries: 0
  generation: {{temperature: 0.0, max_new_tokens: 200}}{reads}
"""


def write_reads_recipe(
    folder: Path, server: ChatServer, model: Path, reads: str = "", rows: int = 2
) -> Path:
    """Two dataset generators (one long R1-style trace, one short answer per prompt)
    judged on the loopback server; the tiny model's tokenizer counts the judge's tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "tiny-model"
    if not link.exists():
        link.symlink_to(model, target_is_directory=True)
    lines = [
        {
            "problem": f"Problem {i}: what is seven plus seven?",
            "answer": "14",
            "long": LONG if i == 0 else f"<think>\nSeven plus seven.\n</think>\n{ANSWER}",
            "short": SHORT,
        }
        for i in range(rows)
    ]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    server.state.content = json.dumps({d: {"rationale": "ok", "score": 3} for d in DIMS})
    path = folder / "recipe.yaml"
    path.write_text(RECIPE.format(url=server.url, reads=f"\n  reads: {reads}" if reads else ""))
    return path


def _sent(server: ChatServer) -> list[str]:
    """The trace of every judge request, as the judge read it."""
    out = []
    for body in server.state.bodies:
        text = body["messages"][-1]["content"]
        out.append(text[text.index("<trace>\n") + 8 : text.index("\n</trace>")])
    return out


def test_split_think_finds_the_reasoning_and_the_answer() -> None:
    assert split_think("<think>a</think>b") == ("<think>", "a", "</think>b", "b")
    assert split_think("a</think>b") == ("", "a", "</think>b", "b")  # opened by the template
    assert split_think("<think>a b") == ("<think>", "a b", "", "")  # stopped mid-thought
    assert split_think("plain") == ("", "plain", "", "plain")


@pytest.mark.parametrize(
    ("reads", "expected"),
    [
        ("{part: answer, max_tokens: 10}", "max_tokens cuts the reasoning"),
        ("{part: answer, over_context: cut}", "over_context 'cut' cuts the reasoning"),
        ("{part: whole, marker: '[{gone}]'}", "marker may hold {cut} and no other"),
        ("{context_tokens: 4096}", "an API judge's tokens are counted with a tokenizer"),
        ("{part: all}", "judge.reads.part"),
    ],
)
def test_a_reads_choice_that_cannot_work_is_refused_in_one_line(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    tiny_model_dir: Path,  # noqa: F811
    reads: str,
    expected: str,
) -> None:
    with pytest.raises(RecipeError, match=expected.replace("{", r"\{").replace("}", r"\}")):
        load_recipe(write_reads_recipe(tmp_path, chat_server, tiny_model_dir, reads))


def test_the_part_read_is_what_the_judge_is_sent_and_a_change_rejudges_only_what_it_changes(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """``reads: whole`` written out reuses every judgment; ``reasoning`` re-judges only the
    traces with a think block (a trace without one is all reasoning); ``answer`` sends the
    text after ``</think>``; a budget cuts the reasoning's middle, with the marker."""
    path = write_reads_recipe(tmp_path, chat_server, tiny_model_dir)
    out = tmp_path / "out"
    run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    assert sorted(_sent(chat_server)) == sorted([LONG, SHORT, SHORT, _short_r1()])

    def rebuild(reads: str) -> list[str]:
        chat_server.state.bodies.clear()
        path = write_reads_recipe(tmp_path, chat_server, tiny_model_dir, reads)
        run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
        return sorted(_sent(chat_server))

    assert rebuild("whole") == []  # the same text: the same judgment
    reasoning = rebuild("reasoning")
    assert reasoning == sorted([split_think(LONG)[1].strip(), "Seven plus seven."])
    assert rebuild("answer") == [ANSWER, ANSWER]  # the short one's text is the same: reused

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    budget = 80
    cut = rebuild(f"{{part: reasoning, max_tokens: {budget}, marker: ' [{{cut}} cut] ', "
                  "tokenizer: tiny-model}")  # fmt: skip
    assert len(cut) == 1  # only the long reasoning is over the budget
    total = len(tokenizer(split_think(LONG)[1], add_special_tokens=False)["input_ids"])
    head, tail = cut[0].split(f" [{total - budget} cut] ")
    assert cut[0].startswith("First I add seven") and cut[0].endswith("So it is fourteen.")
    assert len(tokenizer(head + tail, add_special_tokens=False)["input_ids"]) <= budget + 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge_reads"]["cut"] == {"r1": 1}
    assert summary["judge_status"] == {"ok": 4}


def _short_r1() -> str:
    return f"<think>\nSeven plus seven.\n</think>\n{ANSWER}"


@pytest.mark.parametrize("policy", ["cut", "refuse"])
def test_a_trace_over_the_judges_context_is_cut_to_fit_or_refused_never_sent_to_fail(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    tiny_model_dir: Path,  # noqa: F811
    policy: str,
) -> None:
    """The long trace's judge prompt (~4,000 tokens of the tiny tokenizer) is over the
    stated context of 1,500 less the judge's 200 new tokens. cut: its reasoning's middle
    goes, the marker says how much, the answer stays, and the prompt sent fits. refuse: it
    is never sent, kept with judge_status over_context and its problem, named by id in
    the summary and the terminal, counted on the card, and its pair has no deltas."""
    context, budget = 1500, 200
    reads = f"{{over_context: {policy}, context_tokens: {context}, tokenizer: tiny-model}}"
    path = write_reads_recipe(tmp_path, chat_server, tiny_model_dir, reads)
    out = tmp_path / "out"
    log = io.StringIO()
    summary = run_build(load_recipe(path), out, console=Console(file=log, width=400))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sent = [body["messages"] for body in chat_server.state.bodies]
    counts = chat_token_counts(tokenizer, sent)
    assert all(n <= context - budget for n in counts)  # nothing sent over the bound
    full = chat_token_counts(tokenizer, [[{"role": "user", "content": LONG}]])[0]
    assert full > context  # the trace alone is over the whole context
    traces = {
        (t["generator"], t["prompt"][:9]): t
        for t in pq.read_table(out / "traces.parquet").to_pylist()
    }
    long_row = traces[("r1", "Problem 0")]
    reads_summary = summary["judge_reads"]
    assert reads_summary["bound"] == context - budget
    assert reads_summary["bound_why"] == f"context {context} - max_new_tokens {budget}"
    if policy == "cut":
        assert len(sent) == 4 and long_row["judge_status"] == "ok"
        [read] = [t for t in _sent(chat_server) if "cut here" in t]
        assert read.startswith("<think>\nFirst I add seven") and read.endswith(ANSWER)
        assert "tokens of reasoning cut here ...]" in read
        assert max(counts) > context - budget - 40  # cut to fit, not to nothing
        assert reads_summary["cut"] == {"r1": 1} and reads_summary["over_context"] == {}
        assert summary["pairs"] == 2 and summary["judged_pairs"] == 2
        return
    assert len(sent) == 3 and LONG not in _sent(chat_server)
    assert long_row["judge_status"] == "over_context" and long_row["judge_attempts"] == 0
    assert long_row["trace"] == LONG  # kept whole in the table
    assert f"over the judge's bound of {context - budget}" in long_row["judge_problem"]
    assert reads_summary["over_context"] == {"r1": 1}
    [refused] = reads_summary["over_context_traces"]
    assert refused["trace_key"] == long_row["trace_key"]
    assert refused["prompt_id"] == long_row["prompt_id"] and refused["tokens"] > context
    assert summary["judge_status"] == {"ok": 3, "over_context": 1}
    # its pair is kept without deltas (pairing.unjudged: keep), counted by the status
    assert summary["unjudged_pairs"] == {"over_context": 1} and summary["unjudged_pairs_kept"]
    assert (summary["pairs"], summary["judged_pairs"]) == (2, 1)
    said = " ".join(log.getvalue().split())
    assert "1 of 4 traces are too long for the judge (r1: 1; bound 1,300 tokens" in said
    assert long_row["trace_key"][:12] in said
    card = render_card(
        read_build(out), splits={"train": 1}, plots=[], dataset_ref="o/r", license="mit"
    )
    assert "| judge status `over_context` | 1 |" in card
    assert "a trace too long for the judge's context (1,300 tokens" in card

    chat_server.state.bodies.clear()  # a rebuild neither asks nor loses it
    again = run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    assert chat_server.state.bodies == [] and again["judge_reads"]["over_context"] == {"r1": 1}


def test_a_local_judge_is_bounded_by_its_models_context(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    short_context_model_dir: Path,  # noqa: F811
) -> None:
    """A transformers judge's context is its model's (here 512 tokens): a judge prompt
    that cannot fit even with no trace stops the build before any call, saying so."""
    path = write_reads_recipe(tmp_path, chat_server, short_context_model_dir, "reasoning")
    text = path.read_text().replace(
        "model: the-judge\n  backend: openai\n", "model: tiny-model\n  backend: transformers\n"
    )
    path.write_text(text.replace(f"  base_url: {chat_server.url}\n", ""))
    with pytest.raises(
        RecipeError,
        match=r"judge's prompt alone takes \d+ tokens, over its bound of 312 \(context 512 - max_new_tokens 200\)",
    ):
        run_build(load_recipe(path), tmp_path / "out", console=Console(file=io.StringIO()))
    assert chat_server.state.bodies == []


def _local_judge(path: Path, server: ChatServer) -> None:
    """The recipe's judge made the tiny model itself, on transformers."""
    text = path.read_text().replace(
        "model: the-judge\n  backend: openai\n", "model: tiny-model\n  backend: transformers\n"
    )
    path.write_text(text.replace(f"  base_url: {server.url}\n", ""))


def test_without_reads_a_trace_over_a_local_judges_context_is_refused_and_counted(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """No ``judge.reads`` in the recipe: the judge still reads the whole trace, and the long
    one (~9,000 tokens) is over the tiny judge's 4,096-token context less its 200 new
    tokens: never sent (no attempt), kept with judge_status over_context, named and
    counted. The others are judged under the keys they always had (the trace's own text)."""
    from prefdelta.builders.judge.spec import JudgeSpec
    from prefdelta.builders.keys import judgment_key
    from prefdelta.builders.store import ResultStore

    path = write_reads_recipe(tmp_path, chat_server, tiny_model_dir)
    _local_judge(path, chat_server)
    recipe = load_recipe(path)
    assert recipe.judge.reads is None
    out = tmp_path / "out"
    summary = run_build(recipe, out, console=Console(file=io.StringIO()))
    rows = pq.read_table(out / "traces.parquet").to_pylist()
    [long_row] = [t for t in rows if t["trace"] == LONG]
    assert long_row["judge_status"] == "over_context" and long_row["judge_attempts"] == 0
    assert "over the judge's bound of 3896 (context 4096" in long_row["judge_problem"]
    assert all(t["judge_attempts"] > 0 for t in rows if t is not long_row)
    reads = summary["judge_reads"]
    assert reads["reads"] is None and reads["context_tokens"] == 4096
    assert reads["over_context"] == {"r1": 1}
    assert [r["trace_key"] for r in reads["over_context_traces"]] == [long_row["trace_key"]]
    assert summary["judge_status"]["over_context"] == 1
    spec = JudgeSpec.resolve(recipe.judge, recipe.base_dir)
    keys = [judgment_key(spec.fingerprint, t["prompt"], t["trace"]) for t in rows]
    stored = ResultStore(out / "store.sqlite").existing("judgment", keys)
    assert (
        len(stored) == 3 and judgment_key(spec.fingerprint, long_row["prompt"], LONG) not in stored
    )
    card = render_card(
        read_build(out), splits={"train": 1}, plots=[], dataset_ref="o/r", license="mit"
    )
    assert "the whole trace; a trace too long for the judge's context (3,896 tokens" in card
    assert "| judge status `over_context` | 1 |" in card


@pytest.mark.parametrize(
    ("backend", "bound"),
    [
        ("vllm", 4096 - 100 - (100 + 64)),
        ("transformers", 4096 - 100 - (100 + 64)),
        ("openai", None),
    ],
)
def test_without_reads_the_bound_is_the_judges_model_context_where_it_is_known(
    tiny_model_dir: Path,  # noqa: F811
    backend: str,
    bound: int | None,
) -> None:
    """A vLLM or local judge's context comes from its model's config (less its new tokens
    and a re-ask's room); an API judge's is unknown, and no tokenizer is loaded for it. A
    trace that fits is read as it is: the text its judgment's key always hashed."""
    from prefdelta.builders.judge.spec import JudgeSpec
    from prefdelta.builders.judge_input import JudgeInput
    from prefdelta.recipe import JudgeConfig

    judge = JudgeConfig(
        model=str(tiny_model_dir),
        backend=backend,
        base_url="http://localhost:1/v1" if backend == "openai" else None,
        dimensions=["factuality"],
        max_retries=1,
        generation={"max_new_tokens": 100},
    )
    judge_input = JudgeInput(JudgeSpec.resolve(judge, tiny_model_dir), tiny_model_dir)
    assert judge_input.bound == bound and (judge_input.tokenizer is None) == (bound is None)
    read = judge_input.read("What is seven plus seven?", _short_r1())
    assert read.text == _short_r1() and read.status is None and read.cut == 0
    long = judge_input.read("What is seven plus seven?", LONG)
    assert long.status == ("over_context" if bound else None)


def test_an_api_judge_without_a_stated_context_is_sent_every_trace_unmeasured(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """An API judge's context is not known without ``reads.context_tokens``: the long trace
    is sent as before, and the card says it was not measured."""
    path = write_reads_recipe(tmp_path, chat_server, tiny_model_dir)
    out = tmp_path / "out"
    summary = run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    assert LONG in _sent(chat_server) and summary["judge_status"] == {"ok": 4}
    assert summary["judge_reads"]["bound"] is None
    card = render_card(
        read_build(out), splits={"train": 1}, plots=[], dataset_ref="o/r", license="mit"
    )
    assert "the whole trace, as written, unmeasured (the judge's context was not known)" in card


def test_a_trace_with_nothing_in_the_part_read_is_kept_counted_and_never_sent(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """``reads: answer`` and a trace that stopped mid-thought (no ``</think>``): nothing to
    judge, so no call; the row keeps its text with judge_status empty_part and the reason,
    the summary and the terminal count it, and it is not an empty trace."""
    path = write_reads_recipe(tmp_path, chat_server, tiny_model_dir, "answer")
    prompts = tmp_path / "prompts.jsonl"
    rows = [json.loads(line) for line in prompts.read_text().splitlines()]
    rows[1]["long"] = "<think>\nSeven plus seven is"  # cut off before an answer
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = io.StringIO()
    summary = run_build(load_recipe(path), tmp_path / "out", console=Console(file=log, width=300))
    assert sorted(_sent(chat_server)) == sorted([ANSWER, SHORT, SHORT])
    traces = pq.read_table(tmp_path / "out" / "traces.parquet").to_pylist()
    [row] = [t for t in traces if t["judge_status"] == "empty_part"]
    assert row["trace"] == rows[1]["long"] and row["judge_attempts"] == 0
    assert "no final answer (no text after </think>)" in row["judge_problem"]
    assert summary["judge_reads"]["empty_part"] == {"r1": 1} and not summary["empty_traces"]
    assert "1 traces have nothing in the part the judge reads (r1: 1)" in log.getvalue()


def test_the_judges_token_estimate_counts_what_it_reads(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    from prefdelta.builders.given import given_columns
    from prefdelta.builders.prompts import load_prompts
    from prefdelta.plan import CHARS_PER_TOKEN, estimate_tokens

    def judge_tokens(reads: str) -> int:
        recipe = load_recipe(write_reads_recipe(tmp_path, chat_server, tiny_model_dir, reads))
        prompts, _ = load_prompts(recipe.prompts, recipe.base_dir, given_columns(recipe))
        [judge] = [e for e in estimate_tokens(recipe, prompts) if e.name == "judge"]
        return judge.input_tokens

    whole, answer = judge_tokens(""), judge_tokens("answer")
    cut = judge_tokens("{max_tokens: 10, tokenizer: tiny-model}")
    # the long trace's ~14,000 characters: all of them, none (its answer), 10 tokens' worth
    assert (
        whole - answer
        == (len(LONG) - len(ANSWER) + len(_short_r1()) - len(ANSWER)) // CHARS_PER_TOKEN
    )
    assert answer < cut < whole and whole - cut > (len(LONG) - 100) // CHARS_PER_TOKEN


def test_inspect_judge_prompt_shows_what_the_judge_reads_of_a_built_trace(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    from typer.testing import CliRunner

    from prefdelta.cli import app

    path = write_reads_recipe(tmp_path, chat_server, tiny_model_dir, "answer")
    path.write_text(path.read_text() + f"output_dir: {tmp_path / 'out'}\n")
    run_build(load_recipe(path), None, console=Console(file=io.StringIO()))
    shown = CliRunner().invoke(app, ["inspect", str(path), "--judge-prompt"])
    assert shown.exit_code == 0, shown.output
    assert f"<trace>\n{ANSWER}\n</trace>" in shown.output and "<think>" not in shown.output
