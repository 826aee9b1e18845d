"""The errors of publishing: one line each, that a user can act on."""

from __future__ import annotations

from prefdelta.errors import PrefdeltaError

__all__ = ["BuildFolderError", "PublishError"]


class PublishError(PrefdeltaError, RuntimeError):
    """A publish that cannot go ahead; ``str()`` is one line a user can act on."""


class BuildFolderError(PublishError):
    """The folder is not a finished, unmodified build."""
