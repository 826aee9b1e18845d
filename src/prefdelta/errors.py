"""The one base of every error a user is meant to read: the CLI catches this type alone,
prints its message (one actionable line) and exits 1; anything else is a bug and keeps
its traceback."""

from __future__ import annotations

__all__ = ["PrefdeltaError"]


class PrefdeltaError(Exception):
    """A problem with the user's input, files or services, said in one line."""
