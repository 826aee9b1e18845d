"""A forgiving JSON reader for judge answers: the objects a prose answer holds.

Judges write JSON that is almost right: single quotes, bare keys, trailing commas,
comments, quotes left unescaped inside strings. :func:`objects_in` yields every object or
array in a text that parses strictly or, failing that, leniently, with bounded work;
:mod:`prefdelta.builders.judge.parsing` decides what in them is a score.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["objects_in"]


_MAX_OBJECT_CHARS = 16_000  # a judgment of 20 dimensions with rationales is well under


def objects_in(text: str, max_tries: int = 32) -> Iterator[Any]:
    """Every top-level JSON-ish object or array that parses, left to right (bounded work:
    a degenerate, looping output must not stall a pipeline)."""
    i, tries = 0, 0
    while tries < max_tries:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            return
        start = min(starts)
        tries += 1
        value, end = _load_at(text, start)
        if end is None:
            i = start + 1
            continue
        if isinstance(value, dict | list) and value:
            yield value
        i = end


def _load_at(text: str, start: int) -> tuple[Any, int | None]:
    window = text[start : start + _MAX_OBJECT_CHARS]
    try:
        value, end = json.JSONDecoder().raw_decode(window)
        return value, start + end
    except (ValueError, RecursionError):
        pass
    try:
        value, end = _Lenient(window).parse(0)
        return value, start + end
    except _LenientError:
        return None, None


class _LenientError(ValueError):
    pass


class _Lenient:
    """A forgiving JSON reader: single quotes, bare keys and words, trailing or missing
    commas, ``//`` comments, and unescaped quotes inside strings (a quote closes a string
    only when what follows could follow a JSON string)."""

    _BARE_STOP = frozenset(",}]\n")

    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)

    def parse(self, i: int) -> tuple[Any, int]:
        return self._value(i, 0)

    def _ws(self, i: int) -> int:
        s, n = self.s, self.n
        while i < n:
            c = s[i]
            if c in " \t\r\n":
                i += 1
            elif s.startswith("//", i):
                j = s.find("\n", i)
                i = n if j < 0 else j + 1
            else:
                break
        return i

    def _value(self, i: int, depth: int) -> tuple[Any, int]:
        if depth > 48:
            raise _LenientError("nested too deep")
        i = self._ws(i)
        if i >= self.n:
            raise _LenientError("unexpected end")
        c = self.s[i]
        if c == "{":
            return self._object(i + 1, depth)
        if c == "[":
            return self._array(i + 1, depth)
        if c in "\"'":
            return self._string(i + 1, c)
        return self._bare(i, self._BARE_STOP)

    def _object(self, i: int, depth: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        while True:
            i = self._ws(i)
            while i < self.n and self.s[i] == ",":
                i = self._ws(i + 1)
            if i >= self.n:
                raise _LenientError("unterminated object")
            if self.s[i] == "}":
                return out, i + 1
            if self.s[i] in "\"'":
                key, i = self._string(i + 1, self.s[i])
            else:
                key, i = self._bare(i, frozenset(":}\n"))
                key = str(key)
            i = self._ws(i)
            if i >= self.n or self.s[i] not in ":=":
                raise _LenientError("expected ':'")
            value, i = self._value(i + 1, depth + 1)
            out.setdefault(str(key), value)

    def _array(self, i: int, depth: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        while True:
            i = self._ws(i)
            while i < self.n and self.s[i] == ",":
                i = self._ws(i + 1)
            if i >= self.n:
                raise _LenientError("unterminated array")
            if self.s[i] == "]":
                return out, i + 1
            value, i = self._value(i, depth + 1)
            out.append(value)

    def _string(self, i: int, quote: str) -> tuple[str, int]:
        s, n = self.s, self.n
        buf: list[str] = []
        while i < n:
            c = s[i]
            if c == "\\" and i + 1 < n:
                esc = s[i + 1]
                if esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", s[i + 2 : i + 6]):
                    buf.append(chr(int(s[i + 2 : i + 6], 16)))
                    i += 6
                    continue
                buf.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}.get(esc, esc))
                i += 2
                continue
            if c == quote:
                j = i + 1
                while j < n and s[j] in " \t":
                    j += 1
                if j >= n or s[j] in ",}]:\r\n":
                    return "".join(buf), i + 1
            buf.append(c)
            i += 1
        raise _LenientError("unterminated string")

    def _bare(self, i: int, stop: frozenset[str]) -> tuple[Any, int]:
        j = i
        while j < self.n and self.s[j] not in stop:
            j += 1
        if j >= self.n:
            raise _LenientError("unterminated value")
        word = self.s[i:j].strip()
        if not word:
            raise _LenientError("empty value")
        low = word.lower()
        if low in ("true", "false"):
            return low == "true", j
        if low in ("null", "none"):
            return None, j
        if re.fullmatch(r"[-+]?\d+", word):
            return int(word), j
        if re.fullmatch(r"[-+]?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?\d+[eE][-+]?\d+", word):
            return float(word), j
        return word, j


# --------------------------------------------------------------------------- prose
