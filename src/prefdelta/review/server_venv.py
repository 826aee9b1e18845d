"""Where the Argilla server's own venv is, and its interpreter.

argilla-server 2.8.0 cannot share prefdelta's env (it pins ``typer<0.10``, hence ``click<8.2``,
and needs ``huggingface_hub<1``), so it lives in its own venv, made by
``scripts/install-argilla-server.sh``; :mod:`prefdelta.review.stack` starts its processes
from the interpreter found here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prefdelta.errors import PrefdeltaError

VENV_ENV = "PREFDELTA_ARGILLA_VENV"
"""Environment variable naming the server venv; without it, see :func:`default_venv`."""
VENV_DIR = ".venv-argilla"
"""The server venv's folder name beside a prefdelta project (where the install script puts it)."""

INSTALL_HINT = "bash scripts/install-argilla-server.sh"


class ArgillaServerNotInstalled(PrefdeltaError, RuntimeError):
    """The server venv is missing: the message says which command makes it."""


def _is_prefdelta_project(folder: Path) -> bool:
    """Whether ``folder`` holds prefdelta's own pyproject.toml (a checkout of this project)."""
    try:
        text = (folder / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return re.search(r"""^name\s*=\s*["']prefdelta["']\s*$""", text, re.MULTILINE) is not None


def _checkout_root() -> Path | None:
    """The checkout this module runs from (``src/prefdelta/review/server_venv.py``), if it is one.

    An installed wheel has no project folder above it: then None.
    """
    root = Path(__file__).resolve().parents[3]
    return root if _is_prefdelta_project(root) else None


def default_venv(cwd: Path | str | None = None) -> Path:
    """Where the server venv is looked for, first match wins:

    1. ``$PREFDELTA_ARGILLA_VENV``;
    2. ``.venv-argilla`` in the working directory;
    3. ``.venv-argilla`` beside the prefdelta project the working directory is in (the nearest
       folder up with a pyproject.toml naming prefdelta), where
       ``scripts/install-argilla-server.sh`` puts it;
    4. ``.venv-argilla`` beside the checkout this module runs from (an editable install).

    Without a venv at 2-4, the first project found (3, else 4) is named, so the error says
    where the install script would put one; with no project either,
    :class:`ArgillaServerNotInstalled`.
    """
    if os.environ.get(VENV_ENV):
        return Path(os.environ[VENV_ENV]).expanduser()
    try:
        here: Path | None = Path(cwd).resolve() if cwd is not None else Path.cwd()
    except OSError:  # the working directory was deleted
        here = None
    project = None
    if here is not None:
        project = next((d for d in (here, *here.parents) if _is_prefdelta_project(d)), None)
    beside = [root / VENV_DIR for root in (project, _checkout_root()) if root is not None]
    candidates = ([here / VENV_DIR] if here is not None else []) + beside
    found = next((venv for venv in candidates if venv.is_dir()), None)
    if found is not None:
        return found
    if beside:
        return beside[0]
    raise ArgillaServerNotInstalled(
        f"no Argilla server venv found: set {VENV_ENV} to one, or run `{INSTALL_HINT}` in a"
        f" prefdelta checkout (it makes {VENV_DIR} there)"
    )


def server_python(venv: Path | str | None = None) -> Path:
    """The server venv's interpreter, or a one-line :class:`ArgillaServerNotInstalled`."""
    venv = Path(venv).expanduser() if venv else default_venv()
    python = venv / "bin" / "python"
    if not python.exists() or not osmem_binaries(venv):
        raise ArgillaServerNotInstalled(
            f"Argilla server venv not found at {venv}: run `{INSTALL_HINT}`"
            f" (or point {VENV_ENV} at an existing one)"
        )
    return python


def osmem_binaries(venv: Path) -> list[Path]:
    """The osmem search server's binary in the server venv (none: not installed)."""
    return sorted(venv.glob("lib/python*/site-packages/osmem_server/bin/osmem-server"))
