"""Secrets out of every output: one function, :func:`redact`, for whatever is printed or logged.

A recipe keeps secrets out of its text with ``${VAR}`` references, but once resolved, the
values live in the loaded recipe (a ``base_url`` with a password in it) and would reach
the terminal through ``inspect``, an error message or a traceback. Every value the recipe
loader reads from the environment is remembered here (by :func:`remember`) and shown as its
reference again; a password written in a URL (``scheme://user:pass@host``) is masked
whatever its source.
"""

from __future__ import annotations

import re

__all__ = ["redact", "remember"]

# Shorter values are numbers and flags (`${BATCH:-8}`, `${N}` = 100): masking them would
# garble every count in the output, and a password inside a URL is masked by the URL rule
# whatever its length.
_MIN_LENGTH = 4
_known: dict[str, str] = {}  # a resolved value -> its reference, e.g. "s3cr3t" -> "${PASS}"

_URL_CREDENTIALS = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*):(?P<password>[^\s/@]+)@"
)
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def remember(name: str, value: str) -> None:
    """Note that environment variable ``name`` was resolved to ``value``, so that
    :func:`redact` shows ``${name}`` wherever the value would appear."""
    if len(value) >= _MIN_LENGTH:
        _known[value] = f"${{{name}}}"


def _mask(match: re.Match[str]) -> str:
    password = match.group("password")
    shown = password if _REFERENCE.fullmatch(password) else "***"
    return f"{match.group('head')}:{shown}@"


def redact(text: str) -> str:
    """``text`` with every remembered environment value shown as its ``${VAR}`` reference
    and the password of every ``scheme://user:password@`` URL masked as ``***``."""
    for value in sorted(_known, key=len, reverse=True):  # a value inside another comes last
        if value in text:
            text = text.replace(value, _known[value])
    return _URL_CREDENTIALS.sub(_mask, text)
