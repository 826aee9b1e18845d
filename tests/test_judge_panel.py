"""A judge panel (judge.panel) and reference-guided judging (judge.show_reference): each
judge's cache is its own, so a panel that gains a judge asks only that judge; the reference
answer reaches the judge's prompt, and the validity report says what that costs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from prefdelta.builders.build import run_build
from prefdelta.builders.judge.prompt import judge_prompt
from prefdelta.builders.judge.spec import JudgeSpec, JudgeTemplateError
from prefdelta.builders.judge.validity import NOT_INDEPENDENT, validity_rows
from prefdelta.builders.panel import combine_judges
from prefdelta.recipe import JudgeConfig, RecipeError, load_recipe
from support.api_build import write_api_recipe
from support.model_fixtures import ChatServer, chat_server  # noqa: F401

DIMS = ("step_coherence", "factuality")


def _judgment(score: int) -> str:
    return json.dumps({d: {"rationale": "ok", "score": score} for d in DIMS})


def _asked(server: ChatServer, model: str) -> int:
    return sum(1 for b in server.state.bodies if b["model"] == model)


def _with_panel(path: Path, judges: list[str]) -> None:
    """The api recipe's judge block turned into a panel of ``judges`` (YAML flow maps)."""
    text = path.read_text()
    lines = "".join(f"      - {j}\n" for j in judges)
    path.write_text(text + f"  panel:\n    combine: mean\n    judges:\n{lines}")


def test_adding_a_judge_to_a_panel_asks_only_that_judge(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """One judge, then a panel of it and a second, then a third: each rebuild sends
    requests to the judge added only (counted at the loopback server), each judge's
    scores are kept in its own columns, and the deltas use their mean."""
    path = write_api_recipe(tmp_path, chat_server, prompts=3)
    chat_server.state.content_by_model = {
        "gen-weak": "A shorter answer.",  # 6 different traces: 6 judgments per judge
        "judge-b": _judgment(5),
        "judge-c": _judgment(4),
    }
    out = tmp_path / "out"
    quiet = Console(file=io.StringIO())
    run_build(load_recipe(path), out, console=quiet)
    assert _asked(chat_server, "the-judge") == 6  # 3 prompts x 2 generators

    # the first panel member changes nothing of the judge block: its judgments are stored
    _with_panel(path, ["{name: a}", "{name: b, model: judge-b}"])
    chat_server.state.bodies.clear()
    summary = run_build(load_recipe(path), out, console=quiet)
    assert (_asked(chat_server, "the-judge"), _asked(chat_server, "judge-b")) == (0, 6)
    assert len(chat_server.state.bodies) == 6  # and no generator was asked again
    assert summary["reused"]["judgments"] == 6 and summary["reused"]["judged"] == 6

    path.write_text(path.read_text() + "      - {name: c, model: judge-c}\n")
    chat_server.state.bodies.clear()
    log = io.StringIO()
    summary = run_build(load_recipe(path), out, console=Console(file=log, width=300))
    assert [b["model"] for b in chat_server.state.bodies] == ["judge-c"] * 6
    assert summary["reused"] == {"generations": 6, "generated": 0, "judgments": 12, "judged": 6}

    traces = pq.read_table(out / "traces.parquet").to_pylist()
    for t in traces:
        assert t["scores_a"] == dict.fromkeys(DIMS, 3.0)
        assert t["scores_b"] == dict.fromkeys(DIMS, 5.0)
        assert t["scores_c"] == dict.fromkeys(DIMS, 4.0)
        assert t["scores"] == dict.fromkeys(DIMS, 4.0)  # the mean of 3, 5 and 4
        assert t["score_spread"]["factuality"] == pytest.approx((2 / 3) ** 0.5)
        assert [t[f"judge_status_{j}"] for j in "abc"] == ["ok"] * 3
        assert t["judge_model"] == "the-judge + judge-b + judge-c"
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert [p["delta"] for p in pairs] == [0.0] * 3  # every trace got the same panel score
    panel = summary["judge_panel"]
    assert panel["judges"] == {"a": "the-judge", "b": "judge-b", "c": "judge-c"}
    assert panel["judge_status"] == {j: {"ok": 6} for j in "abc"}
    # every trace is scored (3, 5, 4): all the disagreement is between judges. By hand:
    # within each of the 6 units, ordered pairs sum 2 * (3 * 50 - 12^2) = 12, over m - 1 = 2:
    # 6, so 36 in all; over all 18 values, 2 * (18 * 300 - 72^2) = 432 (T2 = 6 * 50,
    # T1 = 6 * 12); alpha = 1 - (18 - 1) * 36 / 432 = -5/12: worse than chance
    factuality = panel["agreement"]["dimensions"]["factuality"]
    assert factuality["alpha"] == pytest.approx(-5 / 12) and factuality["n"] == 6
    assert factuality["label"] == "too few to tell"
    assert set(panel["by_judge"]) == {"a", "b", "c"}
    assert "judge c (judge-c): ok: 6" in log.getvalue()
    assert "inter-judge alpha: factuality" in log.getvalue()


def test_a_judge_that_fails_is_counted_per_judge_and_the_trace_kept(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """A panel judge that answers no JSON for every trace: each trace is kept, unscored,
    with that judge's status; the summary counts it under that judge, and the other
    judge's scores stay in its own columns."""
    from prefdelta.builders.build import BuildIncomplete

    path = write_api_recipe(tmp_path, chat_server, prompts=2)
    chat_server.state.content_by_model = {"judge-b": "I will not grade this."}
    _with_panel(path, ["{name: a}", "{name: b, model: judge-b, structured: off}"])
    text = path.read_text().replace(
        "  scoring: sampled\n", "  scoring: sampled\n  max_retries: 0\n"
    )
    path.write_text(text)
    out = tmp_path / "out"
    try:
        summary = run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    except BuildIncomplete:  # an unusable answer is a result, not a failed call
        pytest.fail("an unusable judgment must not fail the build")
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    assert len(traces) == 4
    for t in traces:
        assert t["judge_status_a"] == "ok" and t["scores_a"] == dict.fromkeys(DIMS, 3.0)
        assert t["judge_status_b"] != "ok" and t["scores_b"] == dict.fromkeys(DIMS)
        assert t["judge_status"] == t["judge_status_b"] and t["scores"] == dict.fromkeys(DIMS)
        assert t["judge_problem"].startswith("b: ")
    by_judge = summary["judge_panel"]["judge_status"]
    assert by_judge["a"] == {"ok": 4} and sum(by_judge["b"].values()) == 4
    assert "ok" not in by_judge["b"]


def test_combine_median_and_mean() -> None:
    def judged(score: float) -> dict:
        return {
            "scores": {"x": score},
            "rationales": {"x": "r"},
            "judge_status": "ok",
            "judge_problem": None,
            "judge_raw": ["raw"],
            "judge_attempts": 1,
            "score_kind": "sampled",
            "score_fallback": None,
        }

    by_judge = {"a": judged(1), "b": judged(2), "c": judged(5)}
    assert combine_judges(by_judge, ["x"], "median")["scores"] == {"x": 2}
    mean = combine_judges(by_judge, ["x"], "mean")
    assert mean["scores"] == {"x": pytest.approx(8 / 3)}
    assert mean["judge_raw"] == ["raw"] * 3 and mean["judge_attempts"] == 3


def test_a_panel_member_is_checked_like_a_judge(tmp_path: Path) -> None:
    """A member's changes are validated as the judge block they make, and named."""
    base = {"model": "m", "backend": "openai", "base_url": "http://127.0.0.1:1"}
    with pytest.raises(ValueError, match=r"judge name listed twice: a"):
        JudgeConfig(**base, panel={"judges": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ValueError, match=r"at least two judges"):
        JudgeConfig(**base, panel={"judges": [{"name": "a"}]})
    with pytest.raises(ValueError, match=r"panel.judges\[1\] \(b\): .*needs a .gguf file"):
        JudgeConfig(**base, panel={"judges": [{"name": "a"}, {"name": "b", "backend": "gguf"}]})
    judge = JudgeConfig(
        **base,
        generation={"temperature": 0.0, "max_new_tokens": 700},
        panel={"judges": [{"name": "a"}, {"name": "b", "generation": {"temperature": 0.7}}]},
    )
    members = judge.judges
    assert members["b"].generation.temperature == 0.7
    assert members["b"].generation.max_new_tokens == 700  # the block's, not the default
    assert members["a"].panel is None and members["a"].base_url == base["base_url"]


def test_a_recipe_with_a_bad_panel_member_says_where(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    (tmp_path / "p.jsonl").write_text('{"problem": "1+1?"}\n')
    path.write_text(
        "name: t\nprompts: {path: p.jsonl}\n"
        "generators:\n  a: {model: m, backend: openai, base_url: 'http://x'}\n"
        "  b: {model: n, backend: openai, base_url: 'http://x'}\n"
        "pairing: {chosen: a, rejected: [b]}\n"
        "judge:\n  model: m\n  backend: openai\n  base_url: 'http://x'\n"
        "  panel:\n    judges:\n      - {name: one}\n      - {name: two, temperature: 1}\n"
    )
    with pytest.raises(RecipeError, match="temperature"):
        load_recipe(path)
    # a member's local model file must exist now, not when its judge is loaded
    text = path.read_text().replace(
        "{name: two, temperature: 1}", "{name: two, model: x.gguf, backend: gguf}"
    )
    path.write_text(text)
    with pytest.raises(RecipeError, match=r"judge.panel.judges\[1\].model: model file not found"):
        load_recipe(path)


# --------------------------------------------------------------------------- show_reference


def _judge(**extra: object) -> JudgeConfig:
    return JudgeConfig(model="m", backend="openai", base_url="http://127.0.0.1:1", **extra)


def test_the_reference_reaches_the_prompt_and_the_key_only_when_shown() -> None:
    plain = JudgeSpec.resolve(_judge())
    shown = JudgeSpec.resolve(_judge(show_reference=True))
    [user] = judge_prompt(shown, "What is 6*7?", "6*7=42", "42")
    assert "<reference_answer>\n42\n</reference_answer>" in user["content"]
    assert user["content"].index("</problem>") < user["content"].index("<reference_answer>")
    [without] = judge_prompt(plain, "What is 6*7?", "6*7=42", "42")
    assert "42\n</reference_answer>" not in without["content"]
    # a prompt without a reference shows no empty block
    [none] = judge_prompt(shown, "What is 6*7?", "6*7=42", None)
    assert "reference_answer" not in none["content"]
    assert shown.fingerprint != plain.fingerprint
    assert shown.key("p", "t", "42") != shown.key("p", "t", "41")
    assert plain.key("p", "t", "42") == plain.key("p", "t", "41")  # not shown: not keyed
    # false is the default: the same keys as a judge that never set it
    assert JudgeSpec.resolve(_judge(show_reference=False)).fingerprint == plain.fingerprint


def test_a_template_that_never_shows_the_reference_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "judge.jinja2"
    path.write_text("{{ instruction }} {{ generation }} {{ dimensions }}")
    with pytest.raises(JudgeTemplateError, match=r"never shows \{\{ reference \}\}"):
        JudgeSpec.resolve(_judge(template="judge.jinja2", show_reference=True), tmp_path)
    path.write_text("{{ instruction }} {{ generation }} ref: {{ reference }}")
    spec = JudgeSpec.resolve(_judge(template="judge.jinja2", show_reference=True), tmp_path)
    assert judge_prompt(spec, "q", "t", "7")[0]["content"] == "q t ref: 7"


def test_a_build_shown_the_references_sends_them_and_says_the_auc_is_not_independent(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    path = write_api_recipe(tmp_path, chat_server, prompts=2)
    path.write_text(path.read_text() + "  show_reference: true\n")
    out = tmp_path / "out"
    summary = run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    judged = [b for b in chat_server.state.bodies if b["model"] == "the-judge"]
    assert len(judged) == 4
    users = [b["messages"][-1]["content"] for b in judged]
    for i in range(2):  # each prompt's reference (2 * i) reaches its two traces' judgments
        asked = [u for u in users if f"What is {i} plus {i}?" in u]
        assert len(asked) == 2
        assert all(f"<reference_answer>\n{2 * i}\n</reference_answer>" in u for u in asked)
    report = summary["judge_validity"]
    assert report["verifier_agreement"]["independent"] is False
    assert ("verifier AUC", "-", "-", NOT_INDEPENDENT) in validity_rows(report)


def test_the_card_states_reference_guided_judging_and_the_panel(tmp_path: Path) -> None:
    import dataclasses

    from prefdelta.push.build_folder import read_build
    from prefdelta.push.card import render_card
    from support.build_fixtures import make_build

    build = read_build(make_build(tmp_path / "b"))
    recipe = build.recipe.model_copy(
        update={"judge": build.recipe.judge.model_copy(update={"show_reference": True})}
    )
    summary = build.summary | {
        "judge_panel": {
            "judges": {"a": "m1", "b": "m2"},
            "combine": "mean",
            "judge_status": {"a": {"ok": 3}, "b": {"ok": 2, "failed": 1}},
            "agreement": {
                "aggregate": {"alpha": 0.5, "ci95": [0.1, 0.9], "n": 3, "label": "too few"},
                "dimensions": {},
            },
            "by_judge": {
                "a": build.summary["judge_validity"],
                "b": build.summary["judge_validity"],
            },
        }
    }
    build = dataclasses.replace(build, recipe=recipe, summary=summary)
    card = render_card(build, splits={"train": 1}, plots=[], dataset_ref="org/x", license="mit")
    assert "was shown each prompt's reference answer" in card
    assert "no longer measures the judge independently" in card
    assert "| a | `m1` | 3 | 0 |" in card and "| b | `m2` | 2 | 1 |" in card
    assert "| inter-judge alpha: aggregate | 0.50 [0.10, 0.90] | 3 traces | too few |" in card
    assert "| Check | a | b |" in card


def test_the_demo_panel_is_the_demo_judge_and_a_second_decoding() -> None:
    """recipes/demo-panel.yaml: its first judge is the demo's judge (the same cache key),
    its second the same model sampled; nothing else differs from the demo."""
    root = Path(__file__).resolve().parents[1] / "recipes"
    demo, panel = load_recipe(root / "demo.yaml"), load_recipe(root / "demo-panel.yaml")
    judges = panel.judge.judges
    assert list(judges) == ["greedy", "warm"]
    assert (
        JudgeSpec.resolve(judges["greedy"]).fingerprint == JudgeSpec.resolve(demo.judge).fingerprint
    )
    assert judges["warm"].model == demo.judge.model
    assert judges["warm"].generation.temperature == 0.8
    assert panel.generators == demo.generators and panel.prompts == demo.prompts


def test_the_plan_counts_every_judge_of_a_panel() -> None:
    """inspect's plan: each judge of the panel reads every trace (its own estimate)."""
    from prefdelta.builders.prompts import load_prompts
    from prefdelta.plan import estimate_tokens, plan_build

    root = Path(__file__).resolve().parents[1] / "recipes"
    demo, panel = load_recipe(root / "demo.yaml"), load_recipe(root / "demo-panel.yaml")
    prompts, _ = load_prompts(panel.prompts, panel.base_dir)
    assert plan_build(panel, loaded=prompts).judge_calls == 2 * 32
    assert plan_build(demo, loaded=prompts).judge_calls == 32
    *_, single = estimate_tokens(demo, prompts)
    *_, greedy, warm = estimate_tokens(panel, prompts)
    assert (greedy.name, warm.name, single.name) == ("judge greedy", "judge warm", "judge")
    assert greedy.calls == warm.calls == single.calls == 32
    assert greedy.input_tokens == single.input_tokens  # the same judge, the same prompts


def test_the_alpha_verdicts() -> None:
    from prefdelta.builders.panel import alpha_entry

    scores = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    agree = alpha_entry([scores, scores])
    assert agree["alpha"] == pytest.approx(1.0) and agree["n"] == 10
    assert agree["label"] == "judges agree (alpha >= 0.8)"
    # the second judge's scores reversed: alpha far below 0, the whole interval too
    against = alpha_entry([scores, [6 - s for s in scores]])
    assert against["ci95"][1] < 0
    assert against["label"] == "judges disagree, beyond chance (alpha < 0)"
    assert alpha_entry([scores[:4], scores[:4]])["label"] == "too few to tell"
    one_each = alpha_entry([[1, None, 3], [None, 2, None]])
    assert one_each["alpha"] is None and one_each["n"] == 0
    assert one_each["label"] == "no traces scored by two judges"


def test_inspect_judge_prompt_shows_the_reference_when_the_judge_is_shown_it(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from prefdelta.cli import app

    root = Path(__file__).resolve().parents[1] / "recipes"
    text = (root / "demo.yaml").read_text().replace("path: data/", f"path: {root}/data/")
    path = tmp_path / "demo.yaml"
    path.write_text(
        text.replace("  max_retries: 0\n", "  max_retries: 0\n  show_reference: true\n")
    )
    first = json.loads((root / "data" / "demo-prompts.jsonl").read_text().splitlines()[0])
    result = CliRunner().invoke(app, ["inspect", str(path), "--judge-prompt"])
    assert result.exit_code == 0, result.output
    assert f"<reference_answer>\n{first['answer']}\n</reference_answer>" in result.output
