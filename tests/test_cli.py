"""The command line as a user meets it: exit codes, one-line errors, the plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefdelta.cli import app
from prefdelta.docs import (
    END,
    RECIPE_REFERENCE,
    START,
    TRAIN_END,
    TRAIN_START,
    TRAINING_REFERENCE,
    reference_markdown,
    training_reference_markdown,
)
from support.model_fixtures import tiny_model_dir  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_validate_ok() -> None:
    result = runner.invoke(app, ["validate", str(ROOT / "recipes" / "openr1-math-delta.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid recipe 'openr1-math-delta'" in result.output


def test_validate_and_inspect_read_a_local_prompts_file_without_models(tmp_path: Path) -> None:
    """A CSV without the prompt column is caught by validate and inspect, naming the file
    and its columns; a good one is counted from its rows."""
    recipe = (ROOT / "recipes" / "demo.yaml").read_text()
    (tmp_path / "p.csv").write_text("question,answer\nWhat is 1+1?,2\nWhat is 2+2?,4\n")
    path = tmp_path / "r.yaml"
    path.write_text(recipe.replace("data/demo-prompts.jsonl", "p.csv"))
    assert "data/demo-prompts.jsonl" in recipe
    for command in ("validate", "inspect"):
        result = runner.invoke(app, [command, str(path)])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert f"prompts.column: column 'problem' is not in {tmp_path / 'p.csv'}" in " ".join(
            result.output.split()
        )
        assert "columns: question, answer" in result.output
    (tmp_path / "p.csv").write_text("problem,answer\nWhat is 1+1?,2\nWhat is 2+2?,4\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 prompts in p.csv" in result.output


def test_inspect_wraps_long_text_and_shows_only_what_applies(tmp_path: Path) -> None:
    """Piped at 80 columns, a long rubric is wrapped, never cropped; best-vs-worst shows its
    pool and the resolved ties policy, not `rejected`; a folder target has no `private`."""
    rubric = " ".join(f"word{i}" for i in range(60)) + " the end."
    (tmp_path / "p.jsonl").write_text('{"problem": "What is 1+1?", "answer": "2"}\n')
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: wide\n"
        "prompts: {path: p.jsonl, reference_column: answer}\n"
        "generators:\n"
        "  a: {model: org/a, backend: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
        "  b: {model: org/b, backend: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
        "pairing: {strategy: best-vs-worst, pool: [a, b]}\n"
        "judge:\n"
        "  model: org/j\n"
        "  backend: openai\n"
        "  base_url: 'http://127.0.0.1:9/v1'\n"
        f"  dimensions: [{{name: clarity, rubric: '{rubric}'}}]\n"
        "publish: {folder: ./out}\n"
    )
    result = runner.invoke(app, ["inspect", str(path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    rubric_lines = [line for line in result.output.splitlines() if "word" in line]
    assert len(rubric_lines) > 1 and max(map(len, rubric_lines)) <= 90  # wrapped
    words = result.output.split()
    assert [f"word{i}" for i in range(60) if f"word{i}" not in words] == [], result.output
    assert "ties: drop" in result.output and "pool:" in result.output
    assert "rejected:" not in result.output and "private:" not in result.output


def test_inspect_judge_prompt_prints_what_the_judge_is_asked() -> None:
    result = runner.invoke(app, ["inspect", str(ROOT / "recipes" / "demo.yaml"), "--judge-prompt"])
    assert result.exit_code == 0, result.output
    for name in ("factuality", "step_coherence", "signal_to_noise"):
        assert f"- {name}: " in result.output
    assert "<problem>" in result.output and "<trace>" in result.output
    assert "each rationale at most 24 characters" in result.output  # the schema's bound


def test_validate_reports_problems_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprompts: {path: p.jsonl}\ngenerators: {}\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert f"{bad}:3: generators: declare at least one generator" in lines
    assert f"{bad}:1: pairing: required field is missing" in lines


def test_inspect_shows_the_plan() -> None:
    result = runner.invoke(app, ["inspect", str(ROOT / "recipes" / "demo.yaml")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "prompts" in out and "8" in out
    assert "generations: careful" in out and "generations: hasty" in out
    assert "judge calls" in out and "16" in out  # 8 prompts x 2 generators x 1 sample


def test_inspect_never_prints_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1_API_KEY", "sk-top-secret")
    api_recipe = ROOT / "tests" / "recipes" / "openr1-math-api.yaml"
    result = runner.invoke(app, ["inspect", str(api_recipe)])
    assert result.exit_code == 0, result.output
    assert "sk-top-secret" not in result.output
    assert "${R1_API_KEY} is set" in result.output


def test_python_dash_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "prefdelta", "validate", str(ROOT / "recipes" / "demo.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "valid recipe 'demo'" in proc.stdout


def test_inspect_prints_no_library_warnings() -> None:
    """Importing distilabel made pydantic warn twice on stderr of every inspect: a user
    reads that as a problem with the recipe. A fresh process, as warnings show once each."""
    proc = subprocess.run(
        [sys.executable, "-m", "prefdelta", "inspect", str(ROOT / "recipes" / "demo.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warn" not in proc.stderr.lower(), proc.stderr
    assert "judge calls" in proc.stdout


def test_the_reference_pages_are_current() -> None:
    page = (ROOT / RECIPE_REFERENCE).read_text()
    section = page[page.index(START) : page.index(END) + len(END)]
    assert section == reference_markdown(), "run: python -m prefdelta.docs"
    page = (ROOT / TRAINING_REFERENCE).read_text()
    section = page[page.index(TRAIN_START) : page.index(TRAIN_END) + len(TRAIN_END)]
    assert section == training_reference_markdown(), "run: python -m prefdelta.docs"
    for key in ("min_delta", "top_fraction", "num_pairs", "kto_source", "options_column"):
        assert f"| `{key}` |" in section


def test_inspect_says_how_much_of_the_work_is_already_stored(tmp_path: Path) -> None:
    """Counted by the keys the build looks up: a half-generated, one-judged store."""
    from prefdelta.builders.build import plan_traces
    from prefdelta.builders.judge.spec import JudgeSpec
    from prefdelta.builders.keys import judgment_key
    from prefdelta.builders.prompts import load_prompts
    from prefdelta.builders.store import ResultStore
    from prefdelta.recipe import load_recipe
    from prefdelta.schema import STORE

    recipe_text = (ROOT / "recipes" / "demo.yaml").read_text()
    out = tmp_path / "build"
    path = tmp_path / "demo.yaml"
    prompts_file = ROOT / "recipes" / "data" / "demo-prompts.jsonl"
    path.write_text(
        recipe_text.replace("path: data/demo-prompts.jsonl", f"path: {prompts_file}")
        + f"output_dir: {out}\n"
    )
    recipe = load_recipe(path)
    planned = plan_traces(recipe, load_prompts(recipe.prompts, recipe.base_dir)[0])
    careful = [t for t in planned if t.generator == "careful"]
    out.mkdir()
    store = ResultStore(out / STORE)
    store.put_many("generation", {t.key: {"trace": f"trace {t.key}"} for t in careful[:5]})
    first = careful[0]
    fingerprint = JudgeSpec.resolve(recipe.judge).fingerprint
    jkey = judgment_key(fingerprint, first.prompt.prompt, f"trace {first.key}")
    store.put_many("judgment", {jkey: {"judge_answers": []}})

    result = runner.invoke(app, ["inspect", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert (
        f"already in {out}'s store (a build reuses it): generations careful 5/16, hasty 0/16; "
        "judgments 1/5 of the stored traces"
    ) in result.output


def test_a_recipe_can_give_the_judge_its_own_template_and_system_prompt(tmp_path: Path) -> None:
    """The override is what the judge is sent (inspect shows it), its text is part of the
    judgment key (its path is not), and a template that hides the trace is refused."""
    from prefdelta.builders.judge.spec import JudgeSpec
    from prefdelta.recipe import load_recipe

    prompts = ROOT / "recipes" / "data" / "demo-prompts.jsonl"
    template = tmp_path / "my_judge.jinja2"
    template.write_text(
        "Rate this solution from {{ low }} to {{ high }}.\n"
        "PROBLEM: {{ instruction }}\nSOLUTION: {{ generation }}\n"
        "{% for d in dimensions %}{{ d.name }}; {% endfor %}\n"
    )
    text = (ROOT / "recipes" / "demo.yaml").read_text()
    text = text.replace("path: data/demo-prompts.jsonl", f"path: {prompts}")
    text = text.replace(
        "  max_retries: 0\n",
        "  max_retries: 0\n  template: my_judge.jinja2\n  system_prompt: You are a strict grader.\n",
    )
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(text)

    result = runner.invoke(app, ["inspect", str(recipe_path), "--judge-prompt"])
    assert result.exit_code == 0, result.output
    assert "--- system" in result.output and "You are a strict grader." in result.output
    assert "Rate this solution from 1 to 5." in result.output
    assert "factuality; strategy_coherence;" in result.output
    assert "<trace>" not in result.output  # not the built-in template

    recipe = load_recipe(recipe_path)
    key = JudgeSpec.resolve(recipe.judge, recipe.base_dir).fingerprint
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "my_judge.jinja2").write_text(template.read_text())
    (moved / "r.yaml").write_text(text)
    # the template's path is not part of the key, its text is
    assert JudgeSpec.resolve(load_recipe(moved / "r.yaml").judge, moved).fingerprint == key
    template.write_text(template.read_text() + "Be brief.\n")
    assert JudgeSpec.resolve(recipe.judge, recipe.base_dir).fingerprint != key  # text: yes

    template.write_text("Grade {{ instruction }} on {{ low }}..{{ high }}.\n")
    result = runner.invoke(app, ["validate", str(recipe_path)])
    assert result.exit_code == 1
    assert "judge.template: " in result.output and "never shows {{ generation }}" in result.output
    template.write_text("{% for d in dimensions %}{{ instruction }} {{ generation }}\n")
    result = runner.invoke(app, ["validate", str(recipe_path)])
    assert result.exit_code == 1 and "not a valid Jinja template" in result.output


def test_inspect_estimates_tokens_and_cost_checked_by_hand(tmp_path: Path) -> None:
    from prefdelta.builders.judge.prompt import judge_prompt
    from prefdelta.builders.judge.spec import JudgeSpec
    from prefdelta.builders.prompts import load_prompts
    from prefdelta.plan import estimate_tokens
    from prefdelta.recipe import load_recipe

    (tmp_path / "p.jsonl").write_text(
        json.dumps({"problem": "abcd" * 10}) + "\n" + json.dumps({"problem": "xy" * 10}) + "\n"
    )
    (tmp_path / "r.yaml").write_text(
        """\
name: tokens
prompts: {path: p.jsonl, column: problem}
generators:
  g1:
    model: org/one
    backend: openai
    base_url: http://127.0.0.1:9/v1
    system_prompt: SSSSSSSS
    generation: {max_new_tokens: 10}
    price: {input_per_mtok: 1.0, output_per_mtok: 2.0}
  g2: {model: org/two, backend: openai, base_url: http://127.0.0.1:9/v1, generation: {max_new_tokens: 20}}
pairing: {chosen: g1, rejected: [g2]}
judge:
  model: org/judge
  backend: openai
  base_url: http://127.0.0.1:9/v1
  structured: off
  generation: {max_new_tokens: 30}
  price: {input_per_mtok: 0.5, output_per_mtok: 4.0}
"""
    )
    recipe = load_recipe(tmp_path / "r.yaml")
    g1, g2, judge = estimate_tokens(recipe, load_prompts(recipe.prompts, tmp_path)[0])
    # g1: (8 system + 40) + (8 + 20) = 76 characters -> 19 tokens; 2 answers of 10 at most
    assert (g1.calls, g1.input_tokens, g1.output_tokens) == (2, 19, 20)
    assert g1.cost == pytest.approx((19 * 1.0 + 20 * 2.0) / 1e6)
    # g2: 40 + 20 = 60 characters -> 15 tokens; 2 answers of 20; no price, no cost
    assert (g2.calls, g2.input_tokens, g2.output_tokens, g2.cost) == (2, 15, 40, None)
    # the judge: 4 traces, each with its problem and the trace at its budget (4 chars a
    # token) inside the judge's own words (its messages with both left empty)
    frame = sum(
        len(m["content"]) for m in judge_prompt(JudgeSpec.resolve(recipe.judge, tmp_path), "", "")
    )
    chars = 4 * frame + 2 * (40 + 20) + 2 * (10 * 4) + 2 * (20 * 4)
    assert (judge.calls, judge.input_tokens, judge.output_tokens) == (4, -(-chars // 4), 120)
    assert judge.cost == pytest.approx((judge.input_tokens * 0.5 + 120 * 4.0) / 1e6)

    result = runner.invoke(app, ["inspect", str(tmp_path / "r.yaml")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "tokens (estimate)" in result.output and "cost at most" in result.output
    assert "g2 (org/two)" in result.output and "no price" in result.output


def test_a_local_generators_prompt_tokens_are_counted_by_its_tokenizer(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    from transformers import AutoTokenizer

    from prefdelta.builders.prompts import load_prompts
    from prefdelta.plan import estimate_tokens
    from prefdelta.recipe import load_recipe

    problems = ["What is 2 + 2?", "Name a prime number larger than ten."]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"problem": p}) + "\n" for p in problems))
    (tmp_path / "r.yaml").write_text(
        f"""\
name: counted
prompts: {{path: p.jsonl, column: problem}}
generators:
  local: {{model: {tiny_model_dir}, backend: transformers, system_prompt: Be brief.}}
  api: {{model: org/api, backend: openai, base_url: http://127.0.0.1:9/v1}}
pairing: {{chosen: local, rejected: [api]}}
judge: {{model: org/judge, backend: openai, base_url: http://127.0.0.1:9/v1, structured: off}}
"""
    )
    recipe = load_recipe(tmp_path / "r.yaml")
    local, api, _ = estimate_tokens(recipe, load_prompts(recipe.prompts, tmp_path)[0])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chats = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}]
        for p in problems
    ]
    texts = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats
    ]
    expected = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert local.counted and local.input_tokens == expected
    assert not api.counted and api.input_tokens == -(-sum(len(p) for p in problems) // 4)


def test_a_local_generator_without_its_tokenizer_here_is_estimated_not_an_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "p.jsonl").write_text(json.dumps({"problem": "What is 1 + 1?"}) + "\n")
    (tmp_path / "r.yaml").write_text(
        """\
name: absent-tokenizer
prompts: {path: p.jsonl, column: problem}
generators:
  a: {model: someorg/not-downloaded, backend: transformers}
  b: {model: org/b, backend: openai, base_url: http://127.0.0.1:9/v1}
pairing: {chosen: a, rejected: [b]}
judge: {model: org/j, backend: openai, base_url: http://127.0.0.1:9/v1, structured: off}
"""
    )
    result = runner.invoke(app, ["inspect", str(tmp_path / "r.yaml")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "a (someorg/not-downloaded)" in result.output and "4 ~" in result.output


def test_the_training_reference_reads_the_same_after_a_config_was_parsed() -> None:
    """TRL's parser resolves the dataclass fields' types in place; the reference prints the
    annotations as written, whichever test parsed a config first."""
    from trl import TrlParser

    from prefdelta.train.configs import DataArguments, KTODataArguments

    before = training_reference_markdown()
    TrlParser([KTODataArguments]).parse_args_and_config(["--dataset", "x"])
    TrlParser([DataArguments]).parse_args_and_config(["--dataset", "x"])
    assert training_reference_markdown() == before
    assert "<class" not in before
