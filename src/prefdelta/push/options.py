"""How a build is published: the recipe's ``publish`` section, with what a caller overrides.

The one place the defaults are resolved, for ``prefdelta build`` (the recipe alone),
``prefdelta publish`` (its flags over the recipe the build recorded) and
:func:`prefdelta.push.publish_build` (license and sort order from the build's recipe).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefdelta.recipe import PublishConfig

__all__ = ["PublishOptions", "publish_options", "publish_target"]


@dataclass(frozen=True)
class PublishOptions:
    """Resolved options of one publish; :meth:`as_kwargs` gives ``publish_build``'s keywords."""

    private: bool = True
    revision: str = "main"
    tag: bool = True
    test_size: float | None = None
    overwrite: bool = False
    license: str = "apache-2.0"
    sort_by: str = "delta"

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def publish_options(
    settings: PublishConfig | None,
    *,
    private: bool | None = None,
    revision: str | None = None,
    tag: bool | None = None,
    test_size: float | None = None,
    overwrite: bool | None = None,
    license: str | None = None,
    sort_by: str | None = None,
) -> PublishOptions:
    """The recipe's ``settings`` (None: it has no ``publish`` section, the defaults apply),
    each overridden by the keyword given for it (None: not given)."""
    defaults = PublishOptions()
    return PublishOptions(
        private=private if private is not None else (settings.private if settings else True),
        revision=revision or (settings.revision if settings else defaults.revision),
        tag=tag if tag is not None else (settings.tag if settings else True),
        test_size=test_size
        if test_size is not None
        else (settings.test_size if settings else None),
        overwrite=overwrite if overwrite is not None else bool(settings and settings.overwrite),
        license=license or (settings.license if settings else defaults.license),
        sort_by=sort_by or (settings.sort_by if settings else defaults.sort_by),
    )


def publish_target(settings: PublishConfig) -> str | Path:
    """Where the recipe's ``publish`` section publishes: its Hub repo id, else its folder."""
    return settings.repo_id or Path(settings.folder or "")
