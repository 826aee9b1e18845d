"""Bad input gets one line naming the file and the field, never a traceback.

Each case runs the real CLI (``prefdelta validate`` or ``build``) the way a user would;
nothing here reaches a model: every case fails before the first call.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefdelta.cli import app

API = "{model: m, backend: openai, base_url: http://127.0.0.1:9/v1}"


def recipe_text(path: str, prompts: str, gen: str, extra: str) -> str:
    return (
        "name: bad\n"
        f"prompts: {{path: {path}{prompts}}}\n"
        "generators:\n"
        f"  a: {gen}\n"
        f"  b: {API}\n"
        "pairing: {chosen: a, rejected: [b]}\n"
        f"judge: {API}\n"
        f"{extra}"
    )


PROMPT_FILES: list[tuple[str, str, bytes, str]] = [
    ("empty jsonl", "p.jsonl", b"", "is empty"),
    ("empty csv", "p.csv", b"", "is empty"),
    ("header-only csv", "p.csv", b"problem,answer\n", "has no rows"),
    (
        "bad JSON line",
        "p.jsonl",
        b'{"problem": "a"}\n{"problem": \n',
        "p.jsonl:2: not a JSON object",
    ),
    ("Latin-1 text", "p.jsonl", '{"problem": "caf\xe9"}\n'.encode("latin-1"), "is not UTF-8 text"),
    ("UTF-16 text", "p.jsonl", '{"problem": "x"}\n'.encode("utf-16"), "is UTF-16 text"),
    ("lone surrogate", "p.jsonl", b'{"problem": "\\ud800"}\n', "lone surrogate"),
    ("binary .parquet", "p.parquet", b"\x00\x01garbage" * 10, "cannot read"),
    ("unclosed CSV quote", "p.csv", b'problem,answer\n"unclosed,1\n', "EOF inside string"),
]

RECIPES: list[tuple[str, dict[str, str], str]] = [
    (
        "negative seed",
        {"prompts": ", seed: -3"},
        "prompts.seed: expected greater than or equal to 0",
    ),
    ("limit: true", {"prompts": ", limit: true"}, "prompts.limit: expected a number, got true"),
    ("NUL byte", {"extra": "description: a\x00b\n"}, "character U+0000 is not allowed"),
    ("self-referencing alias", {"extra": "description: &d\n  - *d\n"}, "alias refers to itself"),
    (
        "3,000 levels of nesting",
        {"extra": "description: " + "[" * 3000 + "]" * 3000 + "\n"},
        "nests deeper",
    ),
    (
        "infinite weight",
        {"extra": "delta: {weights: {factuality: .inf}}\n"},
        "delta.weights.factuality: expected a finite number",
    ),
    ("wrong prompts extension", {"path": "p.txt"}, "prompts.path: must end in"),
    (
        "missing model folder",
        {"gen": "{model: ./no-such-model, backend: transformers}"},
        "generators.a.model: model folder not found",
    ),
    (
        "empty model folder",
        {"gen": "{model: ./empty-model, backend: transformers}"},
        "has no config.json",
    ),
]


def _write(tmp_path: Path, path: str = "p.jsonl", **parts: str) -> Path:
    fields = {"path": path, "prompts": "", "gen": API, "extra": ""} | parts
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text(**fields), encoding="utf-8")
    return recipe


def _one_line_failure(args: list[str], expected: str) -> str:
    result = CliRunner().invoke(app, args)
    output = result.output.strip()
    assert result.exit_code == 1, output
    assert ("Traceback" not in output and result.exception is None) or isinstance(
        result.exception, SystemExit
    ), output
    assert expected in output, output
    return output


@pytest.mark.parametrize(
    ("case", "name", "data", "expected"), PROMPT_FILES, ids=[c[0] for c in PROMPT_FILES]
)
def test_a_bad_prompts_file_is_one_line(
    tmp_path: Path, case: str, name: str, data: bytes, expected: str
) -> None:
    (tmp_path / name).write_bytes(data)
    recipe = _write(tmp_path, path=name)
    output = _one_line_failure(["build", str(recipe), "-o", str(tmp_path / "out")], expected)
    assert "prompts.path" in output and name in output
    assert len(output.splitlines()) == 1, output


@pytest.mark.parametrize(("case", "parts", "expected"), RECIPES, ids=[c[0] for c in RECIPES])
def test_a_bad_recipe_is_one_line_per_problem(
    tmp_path: Path, case: str, parts: dict[str, str], expected: str
) -> None:
    (tmp_path / "p.jsonl").write_text('{"problem": "1+1?"}\n')
    (tmp_path / "empty-model").mkdir()
    recipe = _write(tmp_path, **parts)
    output = _one_line_failure(["validate", str(recipe)], expected)
    assert "recipe.yaml:" in output


def test_an_alias_bomb_is_answered_at_once(tmp_path: Path) -> None:
    """A 1 kB "billion laughs" document: refused in well under 2 s, not expanded."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, name = chr(96 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("\n".join(lines) + "\n")
    assert recipe.stat().st_size < 1024
    start = time.monotonic()
    _one_line_failure(["validate", str(recipe)], "expands to more than")
    assert time.monotonic() - start < 2.0
