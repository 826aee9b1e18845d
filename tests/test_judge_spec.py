"""JudgeSpec: a recipe's judge resolved once, with the keys every earlier build stored."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from prefdelta.builders.judge.prompt import judge_prompt
from prefdelta.builders.judge.spec import JudgeSpec
from prefdelta.builders.judge.task import judge_from_spec
from prefdelta.builders.keys import judgment_key
from prefdelta.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]

CUSTOM_TEMPLATE = (
    "Rate this solution from {{ low }} to {{ high }}.\n"
    "PROBLEM: {{ instruction }}\nSOLUTION: {{ generation }}\n"
    "{% for d in dimensions %}{{ d.name }}; {% endfor %}\n"
)


def _custom_recipe(folder: Path) -> Path:
    """demo.yaml with a judge template file and a system prompt of its own."""
    (folder / "my_judge.jinja2").write_text(CUSTOM_TEMPLATE)
    prompts = ROOT / "recipes" / "data" / "demo-prompts.jsonl"
    text = (ROOT / "recipes" / "demo.yaml").read_text()
    text = text.replace("path: data/demo-prompts.jsonl", f"path: {prompts}")
    text = text.replace(
        "  max_retries: 0\n",
        "  max_retries: 0\n  template: my_judge.jinja2\n  system_prompt: You are a strict grader.\n",
    )
    (folder / "r.yaml").write_text(text)
    return folder / "r.yaml"


# Computed by the code before the judge became a package (judge fingerprint of the recipe,
# the judgment key of ("What is 6*7?", "6*7=42") under it, and the template's sha256): a
# change here would make every earlier build judge its traces again.
BEFORE_THE_MOVE = {
    "demo": (
        "9f9fae18290018b5bd2bd03f97995621c68e07b23ba65b660087e942b885db9f",
        "e0f64714f7eda3724af638cd47e7dc72a652ff7b11da7aaf8b43b83b311189a2",
        "ea86a4884d40e87d599199d956bda472745ec77d475dc5bd5c2b309bb2abcec6",
    ),
    "openr1-math-api": (  # the paper recipe as first shipped (tests/recipes)
        "6f1e91cfcb1f8e7070274c379133ac49863ae6a643d189a6987bd15262f1de06",
        "7404436e5a8cf18d67b872522ad15e4e59e59723b31b0fcb688d088855e277c5",
        "ea86a4884d40e87d599199d956bda472745ec77d475dc5bd5c2b309bb2abcec6",
    ),
    "custom": (
        "8c1f84e7b5b25ac55dac66ae7b108c20bb69dcb89274a9ba4f907c02f7b5c8c7",
        "bd8e5daf29d3324419377e8de57ec1c9e3ba22415c5bf92175bbfb479a3983fa",
        "f4768a58c46df23519f68a717dc563e312e8fe31858225fd11563ba9ad4031cf",
    ),
}


@pytest.mark.parametrize("name", list(BEFORE_THE_MOVE))
def test_fingerprints_and_judgment_keys_are_those_earlier_builds_stored(
    name: str, tmp_path: Path
) -> None:
    path = _custom_recipe(tmp_path) if name == "custom" else ROOT / "recipes" / f"{name}.yaml"
    path = path if path.exists() else ROOT / "tests" / "recipes" / path.name
    recipe = load_recipe(path)
    judge = recipe.judge
    if judge.thinking is not None:
        # GPT-OSS reasons now (judge.reasoning auto): a judge that reasons judges anew, and
        # one told `reasoning: off` keeps the key it always had
        reasoning = JudgeSpec.resolve(judge, recipe.base_dir).fingerprint
        judge = judge.model_copy(update={"reasoning": "off"})
        assert reasoning != JudgeSpec.resolve(judge, recipe.base_dir).fingerprint
    spec = JudgeSpec.resolve(judge, recipe.base_dir)
    fingerprint, key, sha = BEFORE_THE_MOVE[name]
    assert spec.fingerprint == fingerprint
    assert judgment_key(spec.fingerprint, "What is 6*7?", "6*7=42") == key
    assert spec.template_sha256 == sha


def test_the_spec_is_the_only_reader_of_the_template(tmp_path: Path) -> None:
    """Once resolved, the spec holds the template's text: the prompt, the judge step, the
    fingerprint and the hash all come from it, whatever happens to the file after."""
    recipe = load_recipe(_custom_recipe(tmp_path))
    spec = JudgeSpec.resolve(recipe.judge, recipe.base_dir)
    (tmp_path / "my_judge.jinja2").unlink()

    assert spec.template == CUSTOM_TEMPLATE
    assert spec.template_sha256 == hashlib.sha256(CUSTOM_TEMPLATE.encode()).hexdigest()
    system, user = judge_prompt(spec, "What is 6*7?", "6*7=42")
    assert system == {"role": "system", "content": "You are a strict grader."}
    assert user["content"].startswith("Rate this solution from 1 to 5.\nPROBLEM: What is 6*7?")
    step = judge_from_spec(spec, llm=_offline_llm())
    assert step.format_input({"instruction": "What is 6*7?", "generation": "6*7=42"}) == [
        system,
        user,
    ]
    assert step.dimension_names == spec.dimension_names == recipe.judge.dimension_names
    assert step.scale == spec.scale == (1, 5)


def _offline_llm() -> object:
    """An LLM the judge step accepts without loading anything (rendering needs no model)."""
    from distilabel.models.llms import OpenAILLM

    return OpenAILLM(model="offline", base_url="http://127.0.0.1:9/v1", api_key="none")
