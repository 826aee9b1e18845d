"""Where a problem in a YAML config is, said in one line: ``file:line: field.path: message``.

:class:`LocatedYaml` reads a document with the line of every key (refusing alias bombs,
self-references, absurd nesting and duplicate keys), :func:`dotted_path` writes a field's
location as users read it, and :func:`describe_error` turns one pydantic error into "what was
expected, got what". Recipes (:mod:`prefdelta.recipe`) and sweep configs share them; every
problem is a :class:`RecipeError`.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any

import yaml
from pydantic import BaseModel

from prefdelta.errors import PrefdeltaError


class RecipeError(PrefdeltaError, ValueError):
    """A recipe that cannot be used; ``str()`` is one line per problem."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


class LocatedYaml:
    """YAML data plus the line of every key, so errors can point into the file."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines: dict[tuple[Any, ...], int] = {}
        loader = None
        try:
            loader = yaml.SafeLoader(text)
            node = loader.get_single_node()
            if node is None:
                raise RecipeError([f"{source}:1: the file is empty; expected a YAML mapping"])
            _check_size(node, source)
            self._walk(node, (), set())
            self.data = loader.construct_document(node)
        except yaml.reader.ReaderError as exc:
            line = text[: exc.position].count("\n") + 1
            char = exc.character if isinstance(exc.character, int) else ord(exc.character)
            raise RecipeError(
                [f"{source}:{line}: character U+{char:04X} is not allowed in YAML"]
            ) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            raise RecipeError([f"{source}:{line}: YAML syntax error: {exc.problem}"]) from None
        except yaml.YAMLError as exc:
            raise RecipeError([f"{source}:1: YAML error: {exc}"]) from None
        except RecursionError:
            raise RecipeError(
                [f"{source}:1: the YAML nests deeper than {MAX_YAML_DEPTH} levels"]
            ) from None
        finally:
            if loader is not None:
                loader.dispose()
        if not isinstance(self.data, dict):
            raise RecipeError([f"{source}:1: expected a YAML mapping at the top level"])

    def _walk(self, node: yaml.Node, path: tuple[Any, ...], seen_nodes: set[int]) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)  # a key's own line wins
        if id(node) in seen_nodes:  # an alias: its lines were taken where it was defined
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a list or mapping as a key: loading refuses it (unhashable key)
                key = key_node.value
                if key in seen:
                    raise RecipeError(
                        [
                            f"{self.source}:{key_node.start_mark.line + 1}: "
                            f"{dotted_path((*path, key))}: key given twice"
                        ]
                    )
                seen.add(key)
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                self._walk(value_node, (*path, key), seen_nodes)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, i), seen_nodes)

    def line_of(self, loc: tuple[Any, ...]) -> int:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1


MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 64


def _check_size(root: yaml.Node, source: str) -> None:
    """Refuse a document whose aliases expand to more values than any recipe holds (a
    "billion laughs" bomb would hang validation), that refers to itself, or that nests
    absurdly deep. Each node is sized once, so the check is linear in the file; it walks
    with its own stack, so a deep document cannot exhaust Python's."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, level, children_done = stack.pop()
        line = node.start_mark.line + 1
        if children_done:
            on_path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in _children(node))
            if size[id(node)] > MAX_YAML_VALUES:
                raise RecipeError(
                    [
                        f"{source}:{line}: the YAML expands to more than {MAX_YAML_VALUES} "
                        "values (aliases repeated inside aliases); a recipe is far smaller"
                    ]
                )
            continue
        if id(node) in size:
            continue
        if level > MAX_YAML_DEPTH:
            raise RecipeError(
                [f"{source}:{line}: the YAML nests deeper than {MAX_YAML_DEPTH} levels"]
            )
        on_path.add(id(node))
        stack.append((node, level, True))
        for child in _children(node):
            if id(child) in on_path:
                raise RecipeError([f"{source}:{line}: a YAML alias refers to itself"])
            if id(child) not in size:
                stack.append((child, level + 1, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def dotted_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
            continue
        plain = isinstance(part, str) and part.isprintable() and part.strip() == part != ""
        text = part if plain else repr(part)
        out += f".{text}" if out else text
    return out or "(top level)"


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model under ``root`` that owns the field at ``loc`` (for listing the allowed
    keys)."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (dict, list):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else tp
    return tp


def describe_error(
    err: Mapping[str, Any],
    model: type[BaseModel] | None = None,
    pattern_meaning: Mapping[str, str] | None = None,
) -> tuple[tuple[Any, ...], str]:
    """Turn one pydantic error into (location, 'what was expected, got what').

    ``model``: the validated model, whose fields an unknown key is offered; ``pattern_meaning``:
    what each regex of a ``pattern=`` field means in words.
    """
    loc = tuple(err["loc"])
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1]) if model is not None else None
        allowed = list(owner.model_fields) if owner else []
        key = str(loc[-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return loc, f"unknown key {key!r}{hint}; expected one of: {', '.join(allowed)}"
    if kind == "missing":
        return loc, "required field is missing"
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        if kind == "string_pattern_mismatch":
            return loc, (
                f"invalid name {given!r}: use lowercase letters, digits, '.', '_' and '-', "
                "starting with a letter or digit"
            )
    if kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        return (
            loc,
            f"{(pattern_meaning or {}).get(pattern, f'expected to match {pattern}')}, got {given!r}",
        )
    msg = err["msg"]
    if kind.startswith("value_error") or kind == "assertion_error":
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return loc, msg
    msg = msg.replace("Input should be", "expected").replace(
        "String should", "expected a string to"
    )
    if not isinstance(given, dict | list):
        shown = repr(given)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        msg += f" ({shown})" if ", got " in msg else f", got {shown}"
    return loc, msg
