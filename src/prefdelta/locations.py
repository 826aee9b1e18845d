"""One rule for "is this a Hub repo id or a local path", used wherever a user names a
dataset, a model or a publish target: a Path object, a name written as a path (``./x``,
``../x``, ``/x``, ``~/x``) or a name that exists on disk is local; anything else is a
Hub name. Publishing asks more of a Hub name (``org/name``, :func:`is_hub_id`), so that a
typo never becomes a local folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["REPO_ID_PATTERN", "is_hub_id", "is_local_path"]

REPO_ID_PATTERN = r"^[A-Za-z0-9][\w.-]*/[\w.-]+$"
_REPO_ID = re.compile(REPO_ID_PATTERN)


def is_local_path(ref: str | os.PathLike[str]) -> bool:
    """A local file or folder, by the rule above."""
    if isinstance(ref, os.PathLike):
        return True
    text = str(ref)
    return text.startswith((".", "/", "~")) or Path(text).expanduser().exists()


def is_hub_id(ref: str | os.PathLike[str]) -> bool:
    """Not a local path, and shaped ``org/name``."""
    return not is_local_path(ref) and bool(_REPO_ID.match(str(ref)))
