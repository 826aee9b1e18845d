"""prefdelta: reasoning preference datasets built, published, reviewed and trained by delta."""

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
