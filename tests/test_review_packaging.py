"""What the package ships and imports: every prefdelta module imports in prefdelta's own env,
and the Argilla server's engine is a script (package data), not one of those modules."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import prefdelta
from prefdelta.review import stack

ROOT = Path(__file__).resolve().parents[1]


def test_every_prefdelta_module_imports_in_the_main_env() -> None:
    failed = []
    names = [
        m.name
        for m in pkgutil.walk_packages(prefdelta.__path__, "prefdelta.", onerror=failed.append)
    ]
    for name in names:
        if name.endswith(".__main__"):  # running the CLI, not a module to import
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # report them all, not the first
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    assert failed == []
    assert "prefdelta.review.stack" in names
    assert not [n for n in names if "argilla_engine" in n or "server_scripts" in n]


def test_the_argilla_engine_ships_as_package_data_run_by_path() -> None:
    engine = stack.ENGINE_FILE
    assert engine.is_file()
    assert engine.parent.name == "server_scripts"
    assert not (engine.parent / "__init__.py").exists()  # never a package
    package_data = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^prefdelta = \[.*"review/server_scripts/\*\.py"', package_data, re.M)
