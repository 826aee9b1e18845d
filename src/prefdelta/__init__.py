"""prefdelta: reasoning preference datasets built, published, reviewed and trained by delta.

Layers, top down (each imports only those below it; pyproject.toml's import contract and
tests/test_architecture.py check it): ``cli``; ``train`` | ``review``; ``loading`` |
``push``; ``builders``; ``recipe`` | ``schema``; and the shared bottom modules
(``errors``, ``files``, ``locations``, ``local_models``, ``scratch``). ``recipe`` holds
the built-in rubrics and the judgment's schema too. ``plan`` (a build's cost, over
``builders``) serves the CLI; ``docs`` (the generated reference pages) reads the recipe
and the training configs from the top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["load_pairs"]

if TYPE_CHECKING:
    from prefdelta.loading import load_pairs


def __getattr__(name: str) -> Any:
    # Lazy: `import prefdelta` stays fast; datasets is imported on first use of load_pairs.
    if name == "load_pairs":
        from prefdelta.loading import load_pairs

        return load_pairs
    raise AttributeError(f"module 'prefdelta' has no attribute {name!r}")
