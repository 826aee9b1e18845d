"""Reading a recipe file: YAML with the line of every key, ``${VAR}`` interpolation,
validation, and every problem as one line ``file:line: field.path: what was expected, got
what`` (the wording: :mod:`prefdelta.recipe.errors`), all of them at once, so users fix
recipes without reading a traceback.

Every string but ``api_key`` may use ``${VAR}`` or ``${VAR:-default}``, resolved at load
time; ``api_key`` stays a reference, resolved (:func:`resolve_secret`) when a model is
called.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from prefdelta.recipe.base import PATTERN_MEANING
from prefdelta.recipe.checks import Declared, file_problems, reference_problems
from prefdelta.recipe.errors import LocatedYaml, RecipeError, describe_error, dotted_path
from prefdelta.recipe.schema import BuildRecipe
from prefdelta.redact import remember

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(
    value: Any,
    loc: tuple[Any, ...] = (),
    errors: list[tuple[tuple[Any, ...], str]] | None = None,
) -> Any:
    """Replace ${VAR} from the environment everywhere except secrets (kept as references).

    ``${VAR:-default}`` falls back to ``default``. An unset variable without a default stays
    as written, and is reported in ``errors`` (``(location, message)``) when a list is given.
    ``loc`` is where ``value`` sits in the document (an ``api_key`` there is left alone).
    """
    if isinstance(value, dict):
        return {k: interpolate_env(v, (*loc, k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, (*loc, i), errors) for i, v in enumerate(value)]
    if isinstance(value, str) and loc and loc[-1] != "api_key":

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                remember(name, os.environ[name])  # shown as ${name} in any output
                return os.environ[name]
            if default is not None:
                return default
            if errors is not None:
                errors.append(
                    (loc, f"environment variable {name} is not set (or write ${{{name}:-default}})")
                )
            return match.group(0)

        return _ENV_REF.sub(sub, value)
    return value


def describe_recipe_error(err: Mapping[str, Any]) -> tuple[tuple[Any, ...], str]:
    """One pydantic error of a :class:`BuildRecipe` as (location, 'what was expected, got what')."""
    return describe_error(err, BuildRecipe, PATTERN_MEANING)


def parse_recipe(text: str, source: str = "<recipe>", base_dir: Path | None = None) -> BuildRecipe:
    """Validate recipe text; raise :class:`RecipeError` with one line per problem, all of
    them at once: a recipe with a type error and a typo'd generator name hears of both."""
    doc = LocatedYaml(text, source)
    env_errors: list[tuple[tuple[Any, ...], str]] = []
    data = interpolate_env(doc.data, (), env_errors)
    problems: list[tuple[tuple[Any, ...], str]] = list(env_errors)
    recipe: BuildRecipe | None = None
    try:
        recipe = BuildRecipe.model_validate(data, context={"defer_references": True})
    except ValidationError as exc:
        problems += [describe_recipe_error(e) for e in exc.errors(include_url=False)]
    reported = [loc for loc, _ in problems]
    declared = Declared.of_data(data, reported) if recipe is None else recipe.declared()
    checked = [*reference_problems(declared), *file_problems(declared, base_dir or Path("."))]
    for loc, msg in checked:
        # a field whose value was already refused is not judged a second time
        if not any(loc[: len(r)] == r or r[: len(loc)] == loc for r in reported):
            problems.append((loc, msg))
    if problems:
        located = sorted(  # in the file's order
            ((doc.line_of(loc), dotted_path(loc), msg) for loc, msg in problems),
            key=lambda p: p[0],
        )
        raise RecipeError([f"{source}:{line}: {path}: {msg}" for line, path, msg in located])
    assert recipe is not None
    recipe._base_dir = base_dir or Path(".")
    recipe._source_text = text
    return recipe


def load_recipe(path: str | os.PathLike[str]) -> BuildRecipe:
    """Read and validate a recipe file; relative paths inside resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([f"{p}: no such recipe file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([f"{p}: cannot read recipe: {exc}"]) from None
    return parse_recipe(text, source=str(p), base_dir=p.parent)


def resolve_secret(reference: str | None) -> str | None:
    """The value behind an ``${ENV}`` reference, read only when a model is called."""
    if reference is None:
        return None
    name = reference[2:-1]
    value = os.environ.get(name)
    if value is None:
        raise RecipeError([f"api_key: environment variable {name} is not set"])
    remember(name, value)
    return value
